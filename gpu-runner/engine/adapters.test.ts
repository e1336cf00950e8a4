import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { referenceForward } from "../model/reference.ts";
import { computeBasis } from "../pica/basis.ts";
import { mergeAdapters } from "../pica/merge.ts";
import { mergeIntoWeights } from "../pica/merge-weights.ts";
import type { Basis, PicaAdapter } from "../pica/types.ts";
import { sessionCreationCount } from "../runtime/onnx-session.ts";
import { expectRowsEqualAlone, type BatchRow } from "../testing/batch-rows.ts";
import { randomAdapter } from "../testing/random-adapters.ts";
import { maxAbsDiff, syntheticTokens } from "../testing/numeric.ts";
import { tinyModel } from "../testing/tiny-checkpoints.ts";
import { generateText } from "../generate/generate.ts";
import { argmax } from "../generate/sampler.ts";
import { makeByteLevelTokenizerFiles } from "../tokenizer/byte-level.ts";
import { TextTokenizer } from "../tokenizer/tokenizer.ts";
import { AdapterNotLoadedError } from "./adapter-registry.ts";
import { LlamaEngine } from "./llama-engine.ts";

const TOLERANCE = 1e-5;

const tokens = syntheticTokens;

describe.each(["llama-gqa", "qwen2-bias"] as const)("mixed-adapter batches on %s", (variant) => {
  const { config, weights } = tinyModel(variant);
  let basis: Basis;
  let engine: LlamaEngine;
  let adapters: Record<string, PicaAdapter>;

  beforeAll(async () => {
    basis = await computeBasis(config, weights, { rMax: 16 });
    engine = await LlamaEngine.create(config, weights, { adapters: { basis, rank: 8 } });
    adapters = {
      shared8: randomAdapter(config, basis, { rank: 8, seed: 1 }),
      layered4: randomAdapter(config, basis, { rank: 4, seed: 2, sharing: "per_layer" }),
      attentionOnly2: randomAdapter(config, basis, { rank: 2, seed: 3, targetModules: ["q_proj", "v_proj"] }),
      mlpOnly8: randomAdapter(config, basis, { rank: 8, seed: 4, targetModules: ["gate_proj", "up_proj", "down_proj"] }),
    };
    for (const [id, adapter] of Object.entries(adapters)) engine.registerAdapter(id, adapter);
  });
  afterAll(() => engine.dispose());

  /** Logits of the last position of `ids` with the adapter merged into W (or the base model). */
  function expected(adapterId: string | null, ids: number[]): Float64Array {
    const merged = adapterId === null ? weights : mergeIntoWeights(config, weights, basis, adapters[adapterId]);
    return referenceForward(config, merged, ids).at(-1)!;
  }

  it("every row equals its request alone on merged weights (W + M P), through prefill and decode", async () => {
    const rows: BatchRow[] = [
      { adapter: "shared8", prompt: tokens(5, 1), decode: tokens(3, 11) },
      { adapter: "layered4", prompt: tokens(9, 2), decode: tokens(3, 12) },
      { adapter: null, prompt: tokens(3, 3), decode: tokens(3, 13) },
      { adapter: "attentionOnly2", prompt: tokens(7, 4), decode: tokens(3, 14) },
      { adapter: "mlpOnly8", prompt: tokens(4, 5), decode: tokens(3, 15) },
      { adapter: "shared8", prompt: tokens(6, 6), decode: tokens(3, 16) },
    ];
    await expectRowsEqualAlone(engine, rows, expected, TOLERANCE);
  });

  it("adapters change the logits (so the comparison above can fail)", async () => {
    const ids = tokens(6, 9);
    const base = expected(null, ids);
    for (const id of Object.keys(adapters)) expect(maxAbsDiff(base, expected(id, ids))).toBeGreaterThan(0.05);
  });

  it("rows keep their adapters when rows leave and per-layer rows come and go", async () => {
    const batch = engine.createBatch(4);
    const plan = [
      { adapter: "layered4" as string | null, ids: tokens(4, 21) },
      { adapter: "shared8" as string | null, ids: tokens(5, 22) },
      { adapter: null as string | null, ids: tokens(3, 23) },
    ];
    for (const p of plan) batch.addRow(p.adapter);
    await engine.step(
      batch,
      plan.map((p) => p.ids),
    );
    batch.removeRow(0); // the per-layer row leaves; the base row moves into slot 0
    expect(batch.rowAdapterIds).toEqual([null, "shared8"]);
    const next = [tokens(1, 31), tokens(1, 32)];
    const out = await engine.step(batch, next);
    expect(maxAbsDiff(out[0].data, expected(null, [...plan[2].ids, ...next[0]]))).toBeLessThanOrEqual(TOLERANCE);
    expect(maxAbsDiff(out[1].data, expected("shared8", [...plan[1].ids, ...next[1]]))).toBeLessThanOrEqual(TOLERANCE);
  });

  it("a merged adapter (Σ wᵢ Mᵢ) serves exactly as its merged weights", async () => {
    const combined = mergeAdapters([
      { adapter: adapters.shared8, weight: 0.5 },
      { adapter: adapters.attentionOnly2, weight: -1.25 },
    ]);
    engine.registerAdapter("combined", combined);
    const ids = tokens(7, 41);
    const batch = engine.createBatch(1);
    batch.addRow("combined");
    const [out] = await engine.step(batch, [ids]);
    const merged = referenceForward(config, mergeIntoWeights(config, weights, basis, combined), ids).at(-1)!;
    expect(maxAbsDiff(out.data, merged)).toBeLessThanOrEqual(TOLERANCE);
  });

  it("generation with an adapter follows the merged model's greedy choices", async () => {
    const files = makeByteLevelTokenizerFiles();
    const tokenizer = TextTokenizer.fromJson(files.tokenizerJson, files.tokenizerConfig);
    const prompt = tokenizer.encode("PiCa");
    const { ids } = await generateText(engine, tokenizer, "PiCa", { maxNewTokens: 6, temperature: 0, eosTokenIds: [], adapterId: "layered4" });
    const merged = mergeIntoWeights(config, weights, basis, adapters.layered4);
    const reference = referenceForward(config, merged, [...prompt, ...ids]);
    ids.forEach((id, i) => expect(id).toBe(argmax(Float32Array.from(reference[prompt.length - 1 + i]))));
    const base = await generateText(engine, tokenizer, "PiCa", { maxNewTokens: 6, temperature: 0, eosTokenIds: [] });
    expect(base.ids).not.toEqual(ids);
  });

  it("registering, switching and evicting adapters never creates a session", async () => {
    const before = sessionCreationCount();
    for (let i = 0; i < 40; i++) engine.registerAdapter(`bulk-${i}`, randomAdapter(config, basis, { rank: 1 + (i % 8), seed: 100 + i }));
    const batch = engine.createBatch(8);
    for (let i = 0; i < 8; i++) batch.addRow(`bulk-${i * 5}`);
    await engine.step(
      batch,
      Array.from({ length: 8 }, (_, i) => tokens(3, i)),
    );
    for (let i = 0; i < 40; i++) expect(engine.evictAdapter(`bulk-${i}`)).toBe(true);
    expect(sessionCreationCount()).toBe(before);
  });

  it("refuses adapters that do not fit, naming why", () => {
    const other = randomAdapter(config, { ...basis, id: "f".repeat(64) }, { rank: 4, seed: 5 });
    expect(() => engine.registerAdapter("other", other)).toThrow(/basis id f{64} differs from the runner's basis id/);
    const tooWide = randomAdapter(config, basis, { rank: 12, seed: 6 });
    expect(() => engine.registerAdapter("wide", tooWide)).toThrow(/rank 12, above the largest rank this engine serves, 8/);
    expect(() => engine.createBatch(1).addRow("never-registered")).toThrow(/adapter never-registered is not loaded/);
    expect(() => engine.createBatch(1).addRow("never-registered")).toThrow(AdapterNotLoadedError);
  });
});
