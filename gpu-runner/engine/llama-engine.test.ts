import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { referenceForward } from "../model/reference.ts";
import { maxAbsDiff, syntheticTokens } from "../testing/numeric.ts";
import { TINY_VARIANTS, tinyModel, type TinyVariant } from "../testing/tiny-checkpoints.ts";
import { LlamaEngine } from "./llama-engine.ts";

const TOLERANCE = 1e-4;

const tokens = syntheticTokens;

describe.each(TINY_VARIANTS)("ONNX graph vs reference forward: %s", (variant: TinyVariant) => {
  const { config, weights } = tinyModel(variant);
  let engine: LlamaEngine;
  beforeAll(async () => {
    engine = await LlamaEngine.create(config, weights);
  });
  afterAll(() => engine.dispose());

  it("matches every position's logits within 1e-4", async () => {
    const ids = tokens(13, 3);
    const cache = engine.createBatch(1);
    cache.addRow();
    const [row] = await engine.step(cache, [ids], "all");
    const reference = referenceForward(config, weights, ids);
    expect(row.positions).toBe(ids.length);
    const flat = Float64Array.from(reference.flatMap((r) => [...r]));
    expect(maxAbsDiff(row.data, flat)).toBeLessThanOrEqual(TOLERANCE);
    // The comparison is only meaningful if the logits are far from trivial.
    expect(Math.max(...flat.map(Math.abs))).toBeGreaterThan(0.5);
  });

  it("decodes with the KV cache exactly as a full recompute, across a capacity growth", async () => {
    const ids = tokens(12, 5);
    const cache = engine.createBatch(1, { initialCapacity: 4, growthTokens: 4 });
    cache.addRow();
    const prefill = await engine.step(cache, [ids.slice(0, 3)]);
    const steps = [prefill[0].data];
    for (let t = 3; t < ids.length; t++) steps.push((await engine.step(cache, [[ids[t]]]))[0].data);
    expect(cache.capacity).toBe(12); // grown by 4-token steps from 4 to what 12 tokens need
    const reference = referenceForward(config, weights, ids);
    steps.forEach((logits, i) => expect(maxAbsDiff(logits, reference[i + 2])).toBeLessThanOrEqual(TOLERANCE));
  });
});

describe("sliding windows", () => {
  it("leave positions inside the window as full attention would and change every position past it", async () => {
    const { config, weights } = tinyModel("mistral-sliding"); // window 5 on every layer
    const engine = await LlamaEngine.create(config, weights);
    const ids = tokens(14, 11);
    const cache = engine.createBatch(1);
    cache.addRow();
    const [row] = await engine.step(cache, [ids], "all");
    const windowed = referenceForward(config, weights, ids);
    const full = referenceForward({ ...config, attentionWindows: config.attentionWindows.map(() => null) }, weights, ids);
    for (let t = 0; t < ids.length; t++) {
      const logits = row.data.subarray(t * config.vocabSize, (t + 1) * config.vocabSize);
      expect(maxAbsDiff(logits, windowed[t])).toBeLessThanOrEqual(TOLERANCE);
      if (t < 5) expect(maxAbsDiff(logits, full[t])).toBeLessThanOrEqual(TOLERANCE);
      else expect(maxAbsDiff(logits, full[t])).toBeGreaterThan(1e-2);
    }
    await engine.dispose();
  });
});

describe("weights in an external data file", () => {
  it("give the same logits as inline weights", async () => {
    const { config, weights } = tinyModel("qwen2-bias");
    const inline = await LlamaEngine.create(config, weights);
    const external = await LlamaEngine.create(config, weights, { externalDataThresholdBytes: 0 });
    const ids = tokens(9, 4);
    const run = async (engine: LlamaEngine) => {
      const cache = engine.createBatch(1);
      cache.addRow();
      return (await engine.step(cache, [ids], "all"))[0].data;
    };
    const a = await run(inline);
    const b = await run(external);
    expect(maxAbsDiff(a, b)).toBe(0);
    await inline.dispose();
    await external.dispose();
  });
});

describe("batches", () => {
  const { config, weights } = tinyModel("llama-gqa");
  let engine: LlamaEngine;
  beforeAll(async () => {
    engine = await LlamaEngine.create(config, weights);
  });
  afterAll(() => engine.dispose());

  async function alone(ids: number[], decode: number[]): Promise<Float32Array[]> {
    const cache = engine.createBatch(1);
    cache.addRow();
    const out = [(await engine.step(cache, [ids]))[0].data];
    for (const id of decode) out.push((await engine.step(cache, [[id]]))[0].data);
    return out;
  }

  it("a padded batch of different lengths equals each row alone, through prefill and decode", async () => {
    const prompts = [tokens(3, 1), tokens(9, 2), tokens(5, 3)];
    const decodes = [tokens(4, 4), tokens(4, 5), tokens(4, 6)];
    const cache = engine.createBatch(4);
    prompts.forEach(() => cache.addRow());
    const batched: Float32Array[][] = prompts.map(() => []);
    (await engine.step(cache, prompts)).forEach((r, i) => batched[i].push(r.data));
    for (let s = 0; s < 4; s++) {
      (
        await engine.step(
          cache,
          decodes.map((d) => [d[s]]),
        )
      ).forEach((r, i) => batched[i].push(r.data));
    }
    for (let i = 0; i < prompts.length; i++) {
      const single = await alone(prompts[i], decodes[i]);
      single.forEach((logits, s) => expect(maxAbsDiff(batched[i][s], logits)).toBeLessThanOrEqual(TOLERANCE));
    }
  });

  it("a row joining mid-way (prefill beside decode) and a row leaving keep every row exact", async () => {
    const cache = engine.createBatch(3);
    cache.addRow();
    cache.addRow();
    const a = tokens(6, 7);
    const b = tokens(4, 8);
    const c = tokens(7, 9);
    await engine.step(cache, [a.slice(0, 4), b.slice(0, 2)]);
    cache.addRow(); // c joins while a and b decode
    const mixed = await engine.step(cache, [[a[4]], [b[2]], c]);
    expect(maxAbsDiff(mixed[2].data, (await alone(c, []))[0])).toBeLessThanOrEqual(TOLERANCE);
    expect(maxAbsDiff(mixed[0].data, (await alone(a.slice(0, 4), [a[4]]))[1])).toBeLessThanOrEqual(TOLERANCE);
    // Row 0 (a) finishes; c moves into its slot and keeps decoding correctly.
    expect(cache.removeRow(0)).toBe(2);
    const after = await engine.step(cache, [[c[0]], [b[3]]]);
    expect(maxAbsDiff(after[0].data, (await alone(c, [c[0]]))[1])).toBeLessThanOrEqual(TOLERANCE);
    expect(maxAbsDiff(after[1].data, (await alone(b.slice(0, 3), [b[3]]))[1])).toBeLessThanOrEqual(TOLERANCE);
  });

  it("refuses out-of-vocabulary ids and sequences beyond the context with clear errors", async () => {
    const cache = engine.createBatch(1);
    cache.addRow();
    await expect(engine.step(cache, [[1, 999]])).rejects.toThrow(/token id 999 outside vocabulary of 259/);
    await expect(engine.step(cache, [new Array(config.maxPositionEmbeddings + 1).fill(1)])).rejects.toThrow(/exceeds the model's context of 512/);
    const idle = await engine.step(cache, [[]]);
    expect(idle[0].positions).toBe(0);
    expect(cache.lengths).toEqual([0]);
  });
});
