import { describe, expect, it } from "vitest";
import { LlamaEngine } from "../gpu-runner/engine/llama-engine.ts";
import { loadCheckpoint } from "../gpu-runner/model/checkpoint.ts";
import { SHIPPED_MODEL_DIRECTORY as SHIPPED } from "../gpu-runner/model/shipped-model.ts";
import { linearShapes } from "../gpu-runner/model/weights.ts";
import { loadOrComputeBasis, truncateBasis } from "../gpu-runner/pica/basis.ts";
import { basisRowsFor, LINEAR_MODULES } from "../src/protocol/adapter-rank.ts";
import { generateCorpus } from "../gpu-runner/pretrain/corpus.ts";

describe("the shipped base model", () => {
  it("models its corpus: text from an unseen seed costs under 0.45 nats per byte over its context", async () => {
    const { config, weights, tokenizer } = await loadCheckpoint(SHIPPED);
    expect(config).toMatchObject({ numLayers: 6, hiddenSize: 256, vocabSize: 259, tieWordEmbeddings: true });
    const engine = await LlamaEngine.create(config, weights);
    const corpus = tokenizer.encode(generateCorpus(4242, 40_000), { addSpecialTokens: false });
    const windows = Array.from({ length: 8 }, (_, i) => corpus.slice(i * 4000, i * 4000 + config.maxPositionEmbeddings));
    const batch = engine.createBatch(windows.length, { initialCapacity: config.maxPositionEmbeddings });
    for (const _ of windows) batch.addRow();
    const logits = await engine.step(batch, windows, "all");
    let nats = 0;
    let count = 0;
    windows.forEach((ids, w) => {
      for (let t = 0; t + 1 < ids.length; t++) {
        const row = logits[w].data.subarray(t * config.vocabSize, (t + 1) * config.vocabSize);
        let max = -Infinity;
        for (const v of row) max = Math.max(max, v);
        let sum = 0;
        for (const v of row) sum += Math.exp(v - max);
        nats += max + Math.log(sum) - row[ids[t + 1]];
        count++;
      }
    });
    await engine.dispose();
    expect(nats / count).toBeLessThan(0.45);
    expect(nats / count).toBeGreaterThan(0.05);
  });

  it("ships its PiCa basis, which matches the weights and is loaded rather than recomputed", async () => {
    const { config, weights, directory } = await loadCheckpoint(SHIPPED);
    const { basis, computed } = await loadOrComputeBasis(directory, config, weights, { rMax: 32 });
    expect(computed).toBe(false);
    expect(basis.rMax).toBe(32);
    expect(basis.id).toMatch(/^[0-9a-f]{64}$/);
  });

  it("ships the basis a runner serves by default, with every rank the model allows, extending the 32-row one", async () => {
    const { config, weights, directory } = await loadCheckpoint(SHIPPED);
    const rows = basisRowsFor(linearShapes(config), LINEAR_MODULES);
    expect(rows).toBe(128); // k and v are [128, 256]
    const small = await loadOrComputeBasis(directory, config, weights, { rMax: 32 });
    const { basis, computed } = await loadOrComputeBasis(directory, config, weights, { rMax: rows });
    expect(computed).toBe(false);
    expect(basis.prefixes).toEqual([{ rMax: 32, id: small.basis.id }]); // adapters of the 32-row basis are served by it
    expect(truncateBasis(basis, 32).id).toBe(small.basis.id);
  });
});
