/**
 * Every rank up to the model's ceiling is served, and each run pays only for the ranks among its
 * rows: rows of rank 4 and 64 and base rows share a batch and each equals its merged-weights
 * reference; the rows' layout follows the largest adapter among them, shrinking when it leaves;
 * a run of base rows only carries rank 0.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LINEAR_MODULES, rankCeiling } from "../../src/protocol/adapter-rank.ts";
import { parseModelConfig } from "../model/config.ts";
import { rankBucket } from "../model/adapter-layout.ts";
import { randomWeights } from "../model/random-weights.ts";
import { referenceForward } from "../model/reference.ts";
import { linearShapes } from "../model/weights.ts";
import { computeBasis } from "../pica/basis.ts";
import { mergeIntoWeights } from "../pica/merge-weights.ts";
import type { Basis, PicaAdapter } from "../pica/types.ts";
import { maxAbsDiff, syntheticTokens } from "../testing/numeric.ts";
import { expectRowsEqualAlone } from "../testing/batch-rows.ts";
import { randomAdapter } from "../testing/random-adapters.ts";
import { LlamaEngine } from "./llama-engine.ts";

const TOLERANCE = 1e-4;

// k/v weights are [64, 128]: the ceiling is 64.
const config = parseModelConfig({
  architectures: ["LlamaForCausalLM"],
  model_type: "llama",
  vocab_size: 259,
  hidden_size: 128,
  intermediate_size: 192,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-5,
  max_position_embeddings: 256,
  rope_theta: 10000,
  hidden_act: "silu",
});
const weights = randomWeights(config, 17);

describe("adapters of any rank up to the ceiling", () => {
  let basis: Basis;
  let engine: LlamaEngine;
  let adapters: Record<string, PicaAdapter>;

  beforeAll(async () => {
    const ceiling = rankCeiling({ linearShapes: linearShapes(config), basisRows: 256 }, LINEAR_MODULES);
    expect(ceiling).toEqual({ rank: 64, reason: "min(out, in) of k_proj, whose weight is [64, 128]" });
    basis = await computeBasis(config, weights, { rMax: ceiling.rank });
    engine = await LlamaEngine.create(config, weights, { adapters: { basis } });
    adapters = {
      rank4: randomAdapter(config, basis, { rank: 4, seed: 1, scale: 0.5 }),
      rank64: randomAdapter(config, basis, { rank: 64, seed: 2, scale: 0.5 }),
      rank64Layered: randomAdapter(config, basis, { rank: 64, seed: 3, scale: 0.5, sharing: "per_layer", targetModules: ["k_proj", "down_proj"] }),
      rank17: randomAdapter(config, basis, { rank: 17, seed: 4, scale: 0.5, targetModules: ["q_proj", "v_proj", "up_proj"] }),
    };
    for (const [id, adapter] of Object.entries(adapters)) engine.registerAdapter(id, adapter);
  });
  afterAll(() => engine.dispose());

  function expected(adapterId: string | null, ids: number[]): Float64Array {
    const merged = adapterId === null ? weights : mergeIntoWeights(config, weights, basis, adapters[adapterId]);
    return referenceForward(config, merged, ids).at(-1)!;
  }

  it("serves up to the basis's rows, in power-of-two buckets", () => {
    expect(engine.maxRank).toBe(64);
    expect([1, 3, 4, 5, 17, 33, 64].map((rank) => rankBucket(rank, 64))).toEqual([1, 4, 4, 8, 32, 64, 64]);
    expect(rankBucket(0, 64)).toBe(0);
    expect(rankBucket(40, 48)).toBe(48);
    expect(() => rankBucket(65, 64)).toThrow(/rank 65 is above the largest rank served, 64/);
  });

  it("a batch of rank 4, rank 64 and base rows: every row equals its merged weights, prefill and decode", async () => {
    const rows = [
      { adapter: "rank4", prompt: syntheticTokens(5, 1), decode: syntheticTokens(3, 11) },
      { adapter: null, prompt: syntheticTokens(4, 2), decode: syntheticTokens(3, 12) },
      { adapter: "rank64", prompt: syntheticTokens(6, 3), decode: syntheticTokens(3, 13) },
      { adapter: "rank17", prompt: syntheticTokens(3, 4), decode: syntheticTokens(3, 14) },
      { adapter: "rank64Layered", prompt: syntheticTokens(7, 5), decode: syntheticTokens(3, 15) },
    ];
    await expectRowsEqualAlone(engine, rows, expected, TOLERANCE, (batch) => expect(batch.adapterRows!.rank).toBe(64));
  });

  it("the rank-64 adapters change the logits beyond what rank 4 can (so the comparison can fail)", () => {
    const ids = syntheticTokens(6, 9);
    const base = expected(null, ids);
    expect(maxAbsDiff(base, expected("rank64", ids))).toBeGreaterThan(0.05);
    // Rows 32..63 of P matter: the same M cut to rank 32 answers differently.
    const truncated = { ...adapters.rank64, rank: 32, m: new Map([...adapters.rank64.m].map(([key, m]) => [key, cutRank(m, 64, 32)])) };
    const cut = referenceForward(config, mergeIntoWeights(config, weights, basis, truncated), ids).at(-1)!;
    expect(maxAbsDiff(cut, expected("rank64", ids))).toBeGreaterThan(0.01);
  });

  it("lays the rows out again when the largest adapter joins or leaves, staying exact", async () => {
    const batch = engine.createBatch(3);
    const plan = [
      { adapter: "rank4", ids: syntheticTokens(4, 21) },
      { adapter: null, ids: syntheticTokens(3, 22) },
    ];
    for (const p of plan) batch.addRow(p.adapter);
    expect(batch.adapterRows!.rank).toBe(4);
    await engine.step(
      batch,
      plan.map((p) => p.ids),
    );
    batch.addRow("rank64");
    expect(batch.adapterRows!.rank).toBe(64);
    const big = syntheticTokens(5, 23);
    const joined = await engine.step(batch, [[], [], big]);
    expect(maxAbsDiff(joined[2].data, expected("rank64", big))).toBeLessThanOrEqual(TOLERANCE);
    batch.removeRow(2);
    expect(batch.adapterRows!.rank).toBe(4);
    const next = [syntheticTokens(1, 31), syntheticTokens(1, 32)];
    const out = await engine.step(batch, next);
    expect(maxAbsDiff(out[0].data, expected("rank4", [...plan[0].ids, ...next[0]]))).toBeLessThanOrEqual(TOLERANCE);
    expect(maxAbsDiff(out[1].data, expected(null, [...plan[1].ids, ...next[1]]))).toBeLessThanOrEqual(TOLERANCE);
    batch.removeRow(0);
    expect(batch.adapterRows!.rank).toBe(0);
  });

  it("a run of base rows carries rank 0; a prompt run beside larger rows carries only its own rank", async () => {
    const batch = engine.createBatch(3);
    batch.addRow(null);
    batch.addRow("rank64");
    batch.addRow("rank4");
    const rows = batch.adapterRows!;
    expect(rows.rankOf(0, 1)).toBe(0);
    expect(rows.rankOf(2, 1)).toBe(4);
    expect(rows.rankOf(0, 3)).toBe(64);
    expect(rows.inputShape(0, 1, rows.rankOf(2, 1))).toEqual([1, 4, config.numHeads * config.headDim]);
    const prompts = [syntheticTokens(4, 41), syntheticTokens(1, 42), syntheticTokens(6, 43)];
    // Rows 0 and 2 read prompts in runs of their own (rank 0 and rank 4); row 1 decodes at rank 64.
    await engine.step(batch, [prompts[0], [], []]);
    await engine.step(batch, [[], prompts[1], prompts[2]]);
    const out = await engine.step(batch, [[7], [8], [9]]);
    expect(maxAbsDiff(out[0].data, expected(null, [...prompts[0], 7]))).toBeLessThanOrEqual(TOLERANCE);
    expect(maxAbsDiff(out[1].data, expected("rank64", [...prompts[1], 8]))).toBeLessThanOrEqual(TOLERANCE);
    expect(maxAbsDiff(out[2].data, expected("rank4", [...prompts[2], 9]))).toBeLessThanOrEqual(TOLERANCE);
  });

  it("an engine capped below the basis refuses larger adapters, naming both ranks", async () => {
    const capped = await LlamaEngine.create(config, weights, { adapters: { basis, rank: 16 } });
    try {
      expect(capped.maxRank).toBe(16);
      expect(() => capped.registerAdapter("rank17", adapters.rank17)).toThrow(/rank 17, above the largest rank this engine serves, 16/);
      capped.registerAdapter("rank4", adapters.rank4);
    } finally {
      await capped.dispose();
    }
  });
});

/** The first `rank` columns of M [out, from]. */
function cutRank(m: { shape: number[]; data: Float32Array }, from: number, rank: number) {
  const out = m.shape[0];
  const data = new Float32Array(out * rank);
  for (let o = 0; o < out; o++) data.set(m.data.subarray(o * from, o * from + rank), o * rank);
  return { shape: [out, rank], data };
}
