import { open, truncate, unlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { f16ArrayToF32, f32ArrayToF16 } from "../checkpoint/half-precision.ts";
import { readSafetensorsHeader, writeSafetensorsFile } from "../checkpoint/safetensors.ts";
import { LlamaEngine } from "../engine/llama-engine.ts";
import { TINY_VARIANTS, tinyConfigJson, tinyModel, writeTinyCheckpoint, type TinyVariant } from "../testing/tiny-checkpoints.ts";
import { loadCheckpoint } from "./checkpoint.ts";
import { parseModelConfig, type ModelConfig } from "./config.ts";
import { randomWeights } from "./random-weights.ts";
import { referenceForward } from "./reference.ts";
import type { WeightMap } from "./weights.ts";
import { scratchDirectories } from "../testing/scratch-directories.ts";

const directory = scratchDirectories("checkpoint-test");

function expectSameWeights(actual: WeightMap, expected: WeightMap): void {
  expect([...actual.keys()].sort()).toEqual([...expected.keys()].sort());
  for (const [name, tensor] of expected) {
    const loaded = actual.get(name)!;
    expect(loaded.shape, name).toEqual(tensor.shape);
    expect(loaded.data, name).toEqual(tensor.data);
  }
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}

const flatten = (rows: Float64Array[]) => Float64Array.from(rows.flatMap((r) => [...r]));

/** What distinguishes each variant, as the loaded config must show it. */
const DISTINGUISHING: Record<TinyVariant, Partial<ModelConfig>> = {
  "llama-gqa": { architecture: "LlamaForCausalLM", numHeads: 4, numKvHeads: 2, headDim: 16, ropeTheta: 10000, tieWordEmbeddings: false },
  "qwen2-bias": { architecture: "Qwen2ForCausalLM", qkvBias: true, oBias: false, ropeTheta: 1_000_000, numKvHeads: 2 },
  "smollm-tied": { architecture: "LlamaForCausalLM", tieWordEmbeddings: true, numKvHeads: 4, ropeTheta: 100000 },
  "mistral-head-dim": { architecture: "MistralForCausalLM", headDim: 24, numKvHeads: 1, qkvBias: false },
  "llama3-rope": {
    architecture: "LlamaForCausalLM",
    ropeTheta: 500000,
    ropeScaling: { type: "llama3", factor: 8, lowFrequencyFactor: 1, highFrequencyFactor: 4, originalMaxPositionEmbeddings: 64 },
  },
  "qwen3-qk-norm": { architecture: "Qwen3ForCausalLM", qkNorm: true, headDim: 24, qkvBias: false, oBias: false, tieWordEmbeddings: true },
  "mistral-sliding": { architecture: "MistralForCausalLM", attentionWindows: [5, 5] },
  "qwen2-window-layers": { architecture: "Qwen2ForCausalLM", attentionWindows: [null, 4], qkvBias: true },
};

describe.each(TINY_VARIANTS)("loadCheckpoint: %s", (variant) => {
  it("reads config, weights and tokenizer exactly as written", async () => {
    const dir = directory(variant);
    await writeTinyCheckpoint(dir, variant);
    const checkpoint = await loadCheckpoint(dir);
    const expected = tinyModel(variant);
    expect(checkpoint.directory).toBe(dir);
    expect(checkpoint.config).toEqual(expected.config);
    expect(checkpoint.config).toMatchObject({ vocabSize: 259, hiddenSize: 64, numLayers: 2, maxPositionEmbeddings: 512, ...DISTINGUISHING[variant] });
    expectSameWeights(checkpoint.weights, expected.weights);
    expect(checkpoint.tokenizer.vocabSize).toBe(259);
  });
});

describe("a loaded checkpoint runs", () => {
  it("the tied variant's engine matches the reference and ignores the stored lm_head", async () => {
    const dir = directory("engine");
    await writeTinyCheckpoint(dir, "smollm-tied");
    const { config, weights } = await loadCheckpoint(dir);
    // The stale lm_head is in the file: loading keeps it, running must not use it.
    expect(weights.has("lm_head.weight")).toBe(true);

    const ids = [72, 101, 108, 108, 111, 44, 32, 119, 111, 114];
    const tied = flatten(referenceForward(config, weights, ids));
    const untied = flatten(referenceForward({ ...config, tieWordEmbeddings: false }, weights, ids));
    // lm_head was stored as -embed, so using it would give different (negated) logits.
    expect(maxAbsDiff(tied, untied)).toBeGreaterThan(1);

    const engine = await LlamaEngine.create(config, weights);
    try {
      const cache = engine.createBatch(1);
      cache.addRow();
      const [row] = await engine.step(cache, [ids], "all");
      expect(row.positions).toBe(ids.length);
      expect(maxAbsDiff(row.data, tied)).toBeLessThanOrEqual(1e-4);
      expect(maxAbsDiff(row.data, untied)).toBeGreaterThan(1);
    } finally {
      await engine.dispose();
    }
  });
});

describe("checkpoint storage forms", () => {
  it("loads F16 weights as their F16-rounded values", async () => {
    const dir = directory("f16");
    await writeTinyCheckpoint(dir, "qwen2-bias");
    const { weights } = tinyModel("qwen2-bias");
    await writeSafetensorsFile(join(dir, "model.safetensors"), weights, undefined, { floatDtype: "F16" });
    const checkpoint = await loadCheckpoint(dir);

    const rounded: WeightMap = new Map();
    let changed = 0;
    for (const [name, tensor] of weights) {
      const data = f16ArrayToF32(f32ArrayToF16(tensor.data));
      changed += data.filter((v, i) => v !== tensor.data[i]).length;
      rounded.set(name, { shape: tensor.shape, data });
    }
    expect(changed).toBeGreaterThan(1000); // the rounding really happened, so the check below means something
    expectSameWeights(checkpoint.weights, rounded);
  });

  it("loads a sharded checkpoint through model.safetensors.index.json", async () => {
    const dir = directory("sharded");
    await writeTinyCheckpoint(dir, "llama-gqa");
    await unlink(join(dir, "model.safetensors"));
    const { weights } = tinyModel("llama-gqa");
    const names = [...weights.keys()].sort();
    const shards = [names.slice(0, names.length / 2), names.slice(names.length / 2)];
    const shardFiles = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"];
    const weightMap: Record<string, string> = {};
    for (let i = 0; i < 2; i++) {
      await writeSafetensorsFile(join(dir, shardFiles[i]), new Map(shards[i].map((n) => [n, weights.get(n)!])), { format: "pt" });
      for (const name of shards[i]) weightMap[name] = shardFiles[i];
    }
    await writeFile(join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }));

    const checkpoint = await loadCheckpoint(dir);
    expectSameWeights(checkpoint.weights, weights);
  });

  it("accepts a vocab_size larger than the tokenizer (padded embeddings)", async () => {
    const dir = directory("padded");
    await writeTinyCheckpoint(dir, "llama-gqa");
    const raw = { ...tinyConfigJson("llama-gqa"), vocab_size: 320 };
    await writeFile(join(dir, "config.json"), JSON.stringify(raw));
    await writeSafetensorsFile(join(dir, "model.safetensors"), randomWeights(parseModelConfig(raw), 3));
    const checkpoint = await loadCheckpoint(dir);
    expect(checkpoint.config.vocabSize).toBe(320);
    expect(checkpoint.tokenizer.vocabSize).toBe(259);
  });
});

const bitsOf = (values: Float32Array) => new Uint32Array(values.buffer, values.byteOffset, values.length);

/** Asserts two weight maps hold the same names, shapes and float32 bit patterns. */
function expectBitIdentical(actual: WeightMap, expected: WeightMap): void {
  expect([...actual.keys()].sort()).toEqual([...expected.keys()].sort());
  for (const [name, tensor] of expected) {
    const loaded = actual.get(name)!;
    expect(loaded.shape, name).toEqual(tensor.shape);
    expect(bitsOf(loaded.data), name).toEqual(bitsOf(tensor.data));
  }
}

/** Writes a variant's weights as two shards plus an index, replacing model.safetensors. */
async function shardCheckpoint(dir: string, weights: WeightMap, floatDtype: "F32" | "BF16" = "F32"): Promise<string[]> {
  await unlink(join(dir, "model.safetensors"));
  const names = [...weights.keys()].sort();
  const shards = [names.slice(0, names.length / 2), names.slice(names.length / 2)];
  const shardFiles = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"];
  const weightMap: Record<string, string> = {};
  for (let i = 0; i < 2; i++) {
    const tensors = new Map(shards[i].map((n) => [n, weights.get(n)!]));
    await writeSafetensorsFile(join(dir, shardFiles[i]), tensors, { format: "pt" }, { floatDtype });
    for (const name of shards[i]) weightMap[name] = shardFiles[i];
  }
  await writeFile(join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }));
  return shardFiles;
}

describe("lazy loading", () => {
  it.each(TINY_VARIANTS)("gives the eager loader's config, tokenizer and bit-identical weights: %s", async (variant) => {
    const dir = directory(`lazy-${variant}`);
    await writeTinyCheckpoint(dir, variant);
    const eager = await loadCheckpoint(dir);
    const lazy = await loadCheckpoint(dir, { lazy: true });
    expect(lazy.config).toEqual(eager.config);
    expect(lazy.tokenizer.vocabSize).toBe(eager.tokenizer.vocabSize);
    expectBitIdentical(lazy.weights, eager.weights);
    expectBitIdentical(lazy.weights, tinyModel(variant).weights);
  });

  it.each(["F16", "BF16"] as const)("reads %s weights bit-identically to the eager loader", async (floatDtype) => {
    const dir = directory(`lazy-${floatDtype}`);
    await writeTinyCheckpoint(dir, "qwen2-bias");
    const { weights } = tinyModel("qwen2-bias");
    await writeSafetensorsFile(join(dir, "model.safetensors"), weights, undefined, { floatDtype });
    const eager = await loadCheckpoint(dir);
    const lazy = await loadCheckpoint(dir, { lazy: true });
    expectBitIdentical(lazy.weights, eager.weights);
    // The halves really were narrower than the float32 originals, so equality above is not trivial.
    const q = "model.layers.0.self_attn.q_proj.weight";
    expect(lazy.weights.get(q)!.data).not.toEqual(weights.get(q)!.data);
    expect(Math.max(...lazy.weights.get(q)!.data.map((v, i) => Math.abs(v - weights.get(q)!.data[i])))).toBeLessThan(0.01);
  });

  it("reads a sharded BF16 checkpoint bit-identically to the eager loader", async () => {
    const dir = directory("lazy-sharded");
    await writeTinyCheckpoint(dir, "llama-gqa");
    await shardCheckpoint(dir, tinyModel("llama-gqa").weights, "BF16");
    const eager = await loadCheckpoint(dir);
    const lazy = await loadCheckpoint(dir, { lazy: true });
    expect(lazy.weights.size).toBe(tinyModel("llama-gqa").weights.size);
    expectBitIdentical(lazy.weights, eager.weights);
  });

  it("reads no tensor data up front: a shard damaged after loading fails only on access, naming file and tensor", async () => {
    const dir = directory("lazy-damaged");
    await writeTinyCheckpoint(dir, "llama-gqa");
    const { weights } = tinyModel("llama-gqa");
    const shardFiles = await shardCheckpoint(dir, weights);
    const checkpoint = await loadCheckpoint(dir, { lazy: true });

    // Cut the second shard's last tensor in half: the header stays, the data region is short.
    const shardPath = join(dir, shardFiles[1]);
    const header = await readSafetensorsHeader(shardPath);
    const last = header.entries.reduce((a, b) => (a.end > b.end ? a : b));
    await truncate(shardPath, header.dataStart + (last.begin + last.end) / 2);

    // The undamaged shard still reads.
    const intact = (await readSafetensorsHeader(join(dir, shardFiles[0]))).entries[0].name;
    expect(bitsOf(checkpoint.weights.get(intact)!.data)).toEqual(bitsOf(weights.get(intact)!.data));
    expect(() => checkpoint.weights.get(last.name)!.data).toThrow(`${shardPath}: tensor "${last.name}": file is now`);
    // Loading eagerly now fails at once, on the header's byte range.
    await expect(loadCheckpoint(dir)).rejects.toThrow(`${shardPath}: tensor "${last.name}": data_offsets end ${last.end} is beyond the data buffer`);
  });

  it("sees bytes rewritten after loading, so nothing was read or kept at load time", async () => {
    const dir = directory("lazy-rewritten");
    await writeTinyCheckpoint(dir, "llama-gqa");
    const checkpoint = await loadCheckpoint(dir, { lazy: true });
    const path = join(dir, "model.safetensors");
    const name = "model.norm.weight";
    const header = await readSafetensorsHeader(path);
    const entry = header.entries.find((e) => e.name === name)!;
    const replacement = new Float32Array(64).map((_, i) => i / 8);
    const handle = await open(path, "r+");
    await handle.write(new Uint8Array(replacement.buffer), 0, 256, header.dataStart + entry.begin);
    await handle.close();
    expect(checkpoint.weights.get(name)!.data).toEqual(replacement);
  });

  it("validates shapes against the config from the headers alone", async () => {
    const dir = directory("lazy-bad-shape");
    await writeTinyCheckpoint(dir, "llama-gqa");
    const { weights } = tinyModel("llama-gqa");
    const name = "model.layers.1.self_attn.k_proj.weight";
    weights.set(name, { shape: [64, 32], data: weights.get(name)!.data });
    await writeSafetensorsFile(join(dir, "model.safetensors"), weights);
    await expect(loadCheckpoint(dir, { lazy: true })).rejects.toThrow(`checkpoint tensor ${name} has shape [64, 32], expected [32, 64]`);
    weights.delete(name);
    await writeSafetensorsFile(join(dir, "model.safetensors"), weights);
    await expect(loadCheckpoint(dir, { lazy: true })).rejects.toThrow(`checkpoint is missing tensor ${name} (expected shape [32, 64])`);
  });

  it("checks headers and the index up front", async () => {
    const dir = directory("lazy-bad-header");
    await writeTinyCheckpoint(dir, "llama-gqa");
    const path = join(dir, "model.safetensors");
    await truncate(path, (await readSafetensorsHeader(path)).fileSize - 1);
    await expect(loadCheckpoint(dir, { lazy: true })).rejects.toThrow(/is beyond the data buffer/);

    const sharded = directory("lazy-bad-index");
    await writeTinyCheckpoint(sharded, "llama-gqa");
    const shardFiles = await shardCheckpoint(sharded, tinyModel("llama-gqa").weights);
    await unlink(join(sharded, shardFiles[1]));
    await expect(loadCheckpoint(sharded, { lazy: true })).rejects.toThrow(`${join(sharded, shardFiles[1])}: shard named by`);
  });
});

describe("loadCheckpoint errors", () => {
  it("a missing config.json names the path", async () => {
    const dir = directory("no-config");
    await writeTinyCheckpoint(dir, "llama-gqa");
    await unlink(join(dir, "config.json"));
    await expect(loadCheckpoint(dir)).rejects.toThrow(`cannot read ${join(dir, "config.json")}: ENOENT`);
  });

  it("config.json that is not JSON names the path", async () => {
    const dir = directory("bad-json");
    await writeTinyCheckpoint(dir, "llama-gqa");
    await writeFile(join(dir, "config.json"), '{"vocab_size": 259,');
    await expect(loadCheckpoint(dir)).rejects.toThrow(`${join(dir, "config.json")} is not valid JSON`);
  });

  it("a config.json the parser refuses names the path and the field", async () => {
    const dir = directory("bad-config");
    await writeTinyCheckpoint(dir, "llama-gqa");
    await writeFile(join(dir, "config.json"), JSON.stringify({ ...tinyConfigJson("llama-gqa"), hidden_act: "gelu" }));
    const error = await loadCheckpoint(dir).then(
      () => null,
      (e: Error) => e,
    );
    expect(error?.message).toContain(join(dir, "config.json"));
    expect(error?.message).toContain('hidden_act "gelu"');
  });

  it("a weight of the wrong shape names the tensor and both shapes", async () => {
    const dir = directory("bad-shape");
    await writeTinyCheckpoint(dir, "llama-gqa");
    const { weights } = tinyModel("llama-gqa");
    const name = "model.layers.1.self_attn.k_proj.weight";
    const k = weights.get(name)!;
    expect(k.shape).toEqual([32, 64]);
    weights.set(name, { shape: [64, 32], data: k.data }); // same element count, transposed shape
    await writeSafetensorsFile(join(dir, "model.safetensors"), weights);
    await expect(loadCheckpoint(dir)).rejects.toThrow(`checkpoint tensor ${name} has shape [64, 32], expected [32, 64]`);
  });

  it("a missing weight names it", async () => {
    const dir = directory("missing-weight");
    await writeTinyCheckpoint(dir, "qwen2-bias");
    const { weights } = tinyModel("qwen2-bias");
    weights.delete("model.layers.0.self_attn.v_proj.bias");
    await writeSafetensorsFile(join(dir, "model.safetensors"), weights);
    await expect(loadCheckpoint(dir)).rejects.toThrow("checkpoint is missing tensor model.layers.0.self_attn.v_proj.bias (expected shape [32])");
  });

  it("an untied config needs its lm_head", async () => {
    const dir = directory("no-head");
    await writeTinyCheckpoint(dir, "llama-gqa");
    const { weights } = tinyModel("llama-gqa");
    weights.delete("lm_head.weight");
    await writeSafetensorsFile(join(dir, "model.safetensors"), weights);
    await expect(loadCheckpoint(dir)).rejects.toThrow("checkpoint is missing tensor lm_head.weight (expected shape [259, 64])");
  });

  it("a tokenizer with more ids than vocab_size", async () => {
    const dir = directory("small-vocab");
    await writeTinyCheckpoint(dir, "llama-gqa");
    const raw = { ...tinyConfigJson("llama-gqa"), vocab_size: 200 };
    await writeFile(join(dir, "config.json"), JSON.stringify(raw));
    await writeSafetensorsFile(join(dir, "model.safetensors"), randomWeights(parseModelConfig(raw), 3));
    await expect(loadCheckpoint(dir)).rejects.toThrow(`${dir}: tokenizer has 259 ids but the model's vocab_size is 200`);
  });

  it("a directory without weights", async () => {
    const dir = directory("no-weights");
    await writeTinyCheckpoint(dir, "llama-gqa");
    await unlink(join(dir, "model.safetensors"));
    await expect(loadCheckpoint(dir)).rejects.toThrow(/neither model\.safetensors\.index\.json nor model\.safetensors/);
  });
});
