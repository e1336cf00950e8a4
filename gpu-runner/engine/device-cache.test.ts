/**
 * The KV cache on the device (WebGPU): the same answers as the reference forward and as the host
 * cache, through prefill, decode, capacity growth, rows joining and leaving, prompts read in
 * chunks, sliding windows and mixed adapters. Runs where a WebGPU adapter exists (a GPU, or Mesa's
 * lavapipe); elsewhere the suite is skipped and says why.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { referenceForward } from "../model/reference.ts";
import { computeBasis } from "../pica/basis.ts";
import { mergeIntoWeights } from "../pica/merge-weights.ts";
import { quantizationOf } from "../quantize/block-format.ts";
import { dequantizedWeights } from "../quantize/dequantized-weights.ts";
import { maxAbsDiff, syntheticTokens } from "../testing/numeric.ts";
import { randomAdapter } from "../testing/random-adapters.ts";
import { tinyModel, type TinyVariant } from "../testing/tiny-checkpoints.ts";
import { webgpuUnavailable } from "../testing/webgpu.ts";
import { LlamaEngine } from "./llama-engine.ts";

const TOLERANCE = 1e-4;
const unavailable = await webgpuUnavailable();

describe.skipIf(unavailable !== null)(`KV cache on the device${unavailable === null ? "" : ` (skipped: ${unavailable})`}`, () => {
  describe.each(["llama-gqa", "qwen3-qk-norm", "mistral-sliding"] as TinyVariant[])("%s", (variant) => {
    const { config, weights } = tinyModel(variant);
    let engine: LlamaEngine;
    beforeAll(async () => {
      engine = await LlamaEngine.create(config, weights, { executionProvider: "webgpu" });
    });
    afterAll(() => engine.dispose());

    it("keeps the cache on the device and matches the reference at every position", async () => {
      expect(engine.placement).toBe("device");
      const ids = syntheticTokens(13, 3);
      const batch = engine.createBatch(2);
      batch.addRow();
      const [row] = await engine.step(batch, [ids], "all");
      const reference = referenceForward(config, weights, ids);
      for (let t = 0; t < ids.length; t++) {
        expect(maxAbsDiff(row.data.subarray(t * config.vocabSize, (t + 1) * config.vocabSize), reference[t])).toBeLessThanOrEqual(TOLERANCE);
      }
    });

    it("decodes across a capacity growth exactly as a full recompute", async () => {
      const ids = syntheticTokens(12, 5);
      const batch = engine.createBatch(3, { initialCapacity: 4, growthTokens: 4 });
      batch.addRow();
      const steps = [(await engine.step(batch, [ids.slice(0, 3)]))[0].data];
      for (let t = 3; t < ids.length; t++) steps.push((await engine.step(batch, [[ids[t]]]))[0].data);
      expect(batch.capacity).toBe(12);
      const reference = referenceForward(config, weights, ids);
      steps.forEach((logits, i) => expect(maxAbsDiff(logits, reference[i + 2])).toBeLessThanOrEqual(TOLERANCE));
    });
  });

  describe("int4 weights", () => {
    const { config, weights } = tinyModel("llama-gqa");
    const quantization = quantizationOf("int4", 16)!;

    it("run MatMulNBits and the embedding's dequantised rows on the device: the reference forward's logits on the dequantised weights, with adapters", async () => {
      const basis = await computeBasis(config, weights, { rMax: 8 });
      const adapter = randomAdapter(config, basis, { rank: 4, seed: 3 });
      const engine = await LlamaEngine.create(config, weights, { executionProvider: "webgpu", quantization, adapters: { basis, rank: 4 } });
      try {
        engine.registerAdapter("a", adapter);
        const dequantised = dequantizedWeights(config, weights, quantization);
        const ids = syntheticTokens(9, 4);
        for (const id of [null, "a"]) {
          const batch = engine.createBatch(1);
          batch.addRow(id);
          const [row] = await engine.step(batch, [ids], "all");
          const reference = referenceForward(config, id === null ? dequantised : mergeIntoWeights(config, dequantised, basis, adapter), ids);
          for (let t = 0; t < ids.length; t++) {
            expect(maxAbsDiff(row.data.subarray(t * config.vocabSize, (t + 1) * config.vocabSize), reference[t]), `${id} at ${t}`).toBeLessThanOrEqual(
              TOLERANCE,
            );
          }
        }
      } finally {
        await engine.dispose();
      }
    });
  });

  describe("batches", () => {
    const { config, weights } = tinyModel("llama-gqa");
    let engine: LlamaEngine;
    let host: LlamaEngine;
    beforeAll(async () => {
      const basis = await computeBasis(config, weights, { rMax: 8 });
      engine = await LlamaEngine.create(config, weights, { executionProvider: "webgpu", adapters: { basis, rank: 4 } });
      host = await LlamaEngine.create(config, weights, { adapters: { basis, rank: 4 } });
      for (const e of [engine, host]) {
        await e.registerAdapter("a", randomAdapter(config, basis, { rank: 4, seed: 1 }));
        await e.registerAdapter("b", randomAdapter(config, basis, { rank: 2, seed: 2, sharing: "per_layer" }));
      }
    });
    afterAll(async () => {
      await engine.dispose();
      await host.dispose();
    });

    /** Drives both engines through the same script and compares every row's logits after every step. */
    async function same(
      script: (e: LlamaEngine, batch: ReturnType<LlamaEngine["createBatch"]>, step: (tokens: number[][]) => Promise<void>) => Promise<void>,
    ): Promise<number> {
      const outputs: Float32Array[][][] = [[], []];
      for (const [i, e] of [engine, host].entries()) {
        const batch = e.createBatch(4, { initialCapacity: 8, growthTokens: 8 });
        await script(e, batch, async (tokens) => void outputs[i].push((await e.step(batch, tokens)).map((r) => r.data)));
      }
      let worst = 0;
      outputs[0].forEach((rows, s) => rows.forEach((logits, r) => (worst = Math.max(worst, logits.length === 0 ? 0 : maxAbsDiff(logits, outputs[1][s][r])))));
      expect(outputs[0].flat().filter((l) => l.length > 0).length).toBeGreaterThan(10);
      return worst;
    }

    it("rows of different lengths and adapters, joining, leaving and reading a prompt in chunks, equal the host cache", async () => {
      const worst = await same(async (_e, batch, step) => {
        batch.addRow("a");
        batch.addRow(null);
        await step([syntheticTokens(5, 1), syntheticTokens(9, 2)]);
        await step([[7], [8]]);
        batch.addRow("b"); // joins while the others decode, its prompt read in two chunks
        await step([[9], [10], syntheticTokens(6, 3)]);
        await step([[11], [12], syntheticTokens(4, 4)]);
        await step([[13], [14], [15]]);
        batch.removeRow(0); // the last row moves into slot 0
        await step([[16], [17]]);
        batch.addRow("a");
        await step([[18], [19], syntheticTokens(7, 5)]);
        for (let s = 0; s < 4; s++) await step([[20 + s], [30 + s], [40 + s]]);
        await step([[50], [], [51]]); // a row waiting a step
        await step([[52], [53], [54]]);
      });
      expect(worst).toBeLessThanOrEqual(TOLERANCE);
    });

    it("runs of base rows only (rank 0) and rows laid out again as larger adapters join and leave equal the host cache", async () => {
      const worst = await same(async (_e, batch, step) => {
        batch.addRow(null);
        await step([syntheticTokens(6, 6)]); // no adapter among the rows: rank 0
        batch.addRow("b");
        await step([[5], syntheticTokens(4, 7)]); // rank 2
        batch.addRow("a"); // rank 4: every row laid out again
        await step([[6], [7], syntheticTokens(5, 8)]);
        await step([[8], [9], [10]]);
        batch.removeRow(2); // back to rank 2
        await step([[11], [12]]);
        batch.removeRow(1); // base rows only again
        await step([[13]]);
      });
      expect(worst).toBeLessThanOrEqual(TOLERANCE);
    });
  });
});
