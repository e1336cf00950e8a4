import { describe, expect, it } from "vitest";
import { readFile, readdir, stat } from "node:fs/promises";
import { createRequire } from "node:module";
import { join } from "node:path";
import { readCheckpointTensorsLazily } from "../checkpoint/lazy-tensors.ts";
import { readSafetensorsHeader } from "../checkpoint/safetensors.ts";
import { loadCheckpoint } from "../model/checkpoint.ts";
import { parseModelConfig } from "../model/config.ts";
import { expectedWeights } from "../model/weights.ts";
import {
  checkpointParameterCount,
  checkpointWeightBytes,
  LLAMA_3_2_1B_INSTRUCT_CONFIG,
  QWEN2_5_0_5B_INSTRUCT_CONFIG,
  REAL_SIZE_MODELS,
  writeRealSizeCheckpoint,
  type RealSizeModelName,
} from "./realsize-checkpoints.ts";
import { scratchDirectories } from "./scratch-directories.ts";

const scratch = scratchDirectories("realsize-test");

// Miniatures: the real vocabulary (so the real tokenizer fits) and the real structure (GQA,
// biases, tying, rope), with narrow, shallow layers so a test writes megabytes, not gigabytes.
const MINIATURES: Record<RealSizeModelName, Record<string, unknown>> = {
  "qwen2.5-0.5b-instruct": { hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2 },
  "llama-3.2-1b-instruct": { hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 8 },
};
const MAX_SHARD_BYTES = 16 * 1024;

async function writeMiniature(model: RealSizeModelName, seed = 5) {
  const directory = scratch(model);
  const written = await writeRealSizeCheckpoint(directory, model, { seed, configOverrides: MINIATURES[model], maxShardBytes: MAX_SHARD_BYTES });
  return written;
}

/** Mean and standard deviation of some values. */
function moments(values: Float32Array): { mean: number; std: number } {
  let sum = 0;
  let sumOfSquares = 0;
  for (let i = 0; i < values.length; i++) {
    sum += values[i];
    sumOfSquares += values[i] * values[i];
  }
  const mean = sum / values.length;
  return { mean, std: Math.sqrt(sumOfSquares / values.length - mean * mean) };
}

/** Fraction of values within `radius` of `center`. */
function fractionWithin(values: Float32Array, center: number, radius: number): number {
  let inside = 0;
  for (let i = 0; i < values.length; i++) if (Math.abs(values[i] - center) < radius) inside++;
  return inside / values.length;
}

describe("real-size configs", () => {
  it("parse to the real models' shapes and parameter counts", () => {
    const qwen = parseModelConfig(QWEN2_5_0_5B_INSTRUCT_CONFIG);
    expect(qwen).toMatchObject({
      architecture: "Qwen2ForCausalLM",
      vocabSize: 151936,
      hiddenSize: 896,
      intermediateSize: 4864,
      numLayers: 24,
      numHeads: 14,
      numKvHeads: 2,
      headDim: 64,
      qkvBias: true,
      oBias: false,
      tieWordEmbeddings: true,
      ropeTheta: 1_000_000,
      rmsNormEps: 1e-6,
      maxPositionEmbeddings: 32768,
      bosTokenId: 151643,
      eosTokenIds: [151645],
    });
    expect(qwen.attentionWindows).toEqual(new Array(24).fill(null)); // use_sliding_window is false
    expect(checkpointParameterCount(qwen)).toBe(494_032_768);
    expect(checkpointWeightBytes(qwen)).toBe(988_065_536);

    const llama = parseModelConfig(LLAMA_3_2_1B_INSTRUCT_CONFIG);
    expect(llama).toMatchObject({
      architecture: "LlamaForCausalLM",
      vocabSize: 128256,
      hiddenSize: 2048,
      intermediateSize: 8192,
      numLayers: 16,
      numHeads: 32,
      numKvHeads: 8,
      headDim: 64,
      qkvBias: false,
      tieWordEmbeddings: true,
      ropeTheta: 500_000,
      ropeScaling: { type: "llama3", factor: 32, lowFrequencyFactor: 1, highFrequencyFactor: 4, originalMaxPositionEmbeddings: 8192 },
      rmsNormEps: 1e-5,
      maxPositionEmbeddings: 131072,
      bosTokenId: 128000,
      eosTokenIds: [128001, 128008, 128009],
    });
    expect(checkpointParameterCount(llama)).toBe(1_235_814_400);
    expect(checkpointWeightBytes(llama)).toBe(2_471_628_800);
  });
});

describe.each(Object.keys(MINIATURES) as RealSizeModelName[])("writeRealSizeCheckpoint: %s miniature", (model) => {
  it("writes a complete sharded BF16 checkpoint that loads lazily with the config's shapes", async () => {
    const written = await writeMiniature(model);
    const { directory } = written;
    const expected = expectedWeights(written.config);

    const configJson = JSON.parse(await readFile(join(directory, "config.json"), "utf8"));
    expect(configJson).toEqual({ ...REAL_SIZE_MODELS[model].config, ...MINIATURES[model] });
    const generation = JSON.parse(await readFile(join(directory, "generation_config.json"), "utf8"));
    expect(generation.eos_token_id).toEqual(model === "qwen2.5-0.5b-instruct" ? [151645, 151643] : [128001, 128008, 128009]);
    const packageFile = (file: string) => createRequire(import.meta.url).resolve(`${REAL_SIZE_MODELS[model].tokenizerPackage}/models/${file}`);
    for (const file of ["tokenizer.json", "tokenizer_config.json"]) {
      expect((await readFile(join(directory, file))).equals(await readFile(packageFile(file))), file).toBe(true);
    }

    // Sharding: the embedding exceeds the limit and sits alone; the rest fills shards up to it.
    const index = JSON.parse(await readFile(join(directory, "model.safetensors.index.json"), "utf8"));
    expect(Object.keys(index.weight_map).sort()).toEqual([...expected.keys()].sort());
    expect(index.metadata.total_size).toBe(written.weightBytes);
    expect(written.weightFiles.length).toBeGreaterThanOrEqual(3);
    expect(written.weightFiles[0]).toBe(`model-00001-of-${String(written.weightFiles.length).padStart(5, "0")}.safetensors`);
    expect((await readdir(directory)).sort()).toEqual(
      ["config.json", "generation_config.json", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json", ...written.weightFiles].sort(),
    );
    let dataBytes = 0;
    for (const file of written.weightFiles) {
      const header = await readSafetensorsHeader(join(directory, file));
      const shardBytes = header.entries.reduce((total, e) => total + e.end - e.begin, 0);
      expect(
        header.entries.every((e) => e.dtype === "BF16"),
        file,
      ).toBe(true);
      expect(header.metadata).toEqual({ format: "pt" });
      expect(header.fileSize).toBe((await stat(join(directory, file))).size);
      if (header.entries.length > 1) expect(shardBytes, file).toBeLessThanOrEqual(MAX_SHARD_BYTES);
      for (const e of header.entries) expect(index.weight_map[e.name]).toBe(file);
      dataBytes += shardBytes;
    }
    expect(dataBytes).toBe(written.weightBytes);

    const checkpoint = await loadCheckpoint(directory, { lazy: true });
    expect(checkpoint.config).toEqual(written.config);
    expect(checkpoint.config.vocabSize).toBe(REAL_SIZE_MODELS[model].config.vocab_size);
    expect(checkpoint.weights.size).toBe(expected.size);
    for (const [name, shape] of expected) expect(checkpoint.weights.get(name)!.shape, name).toEqual(shape);
    expect(checkpoint.tokenizer.vocabSize).toBeLessThanOrEqual(checkpoint.config.vocabSize);
  });

  it("draws values of the intended magnitudes, roughly normal", async () => {
    const { config, directory } = await writeMiniature(model);
    const weights = await readCheckpointTensorsLazily(directory);
    const data = (name: string) => weights.get(name)!.data;

    const embed = data("model.embed_tokens.weight");
    const embedMoments = moments(embed);
    expect(Math.abs(embedMoments.mean)).toBeLessThan(0.01 * embedMoments.std);
    expect(embedMoments.std / (1 / Math.sqrt(config.hiddenSize))).toBeCloseTo(1, 1);
    const withinOneStd = fractionWithin(embed, embedMoments.mean, embedMoments.std);
    expect(withinOneStd).toBeGreaterThan(0.67);
    expect(withinOneStd).toBeLessThan(0.7);

    for (const [name, fanIn] of [
      ["model.layers.0.self_attn.q_proj.weight", config.hiddenSize],
      ["model.layers.1.mlp.down_proj.weight", config.intermediateSize],
    ] as const) {
      expect(moments(data(name)).std / (1 / Math.sqrt(fanIn)), name).toBeGreaterThan(0.9);
      expect(moments(data(name)).std / (1 / Math.sqrt(fanIn)), name).toBeLessThan(1.1);
    }
    const norm = moments(data("model.layers.1.input_layernorm.weight"));
    expect(norm.mean).toBeGreaterThan(0.95);
    expect(norm.mean).toBeLessThan(1.05);
    expect(norm.std).toBeGreaterThan(0.07);
    expect(norm.std).toBeLessThan(0.13);
    if (config.qkvBias) {
      const bias = moments(data("model.layers.0.self_attn.k_proj.bias"));
      expect(bias.std).toBeGreaterThan(0.05);
      expect(bias.std).toBeLessThan(0.15);
    }
    // Every value came from BF16: the low 16 bits of its float32 pattern are zero.
    const bits = new Uint32Array(embed.buffer);
    let lowBits = 0;
    for (let i = 0; i < bits.length; i++) lowBits |= bits[i] & 0xffff;
    expect(lowBits).toBe(0);
  });
});

describe("writeRealSizeCheckpoint determinism", () => {
  it("writes the same bytes for a seed and different bytes for another", async () => {
    const [a, b, c] = await Promise.all([
      writeMiniature("llama-3.2-1b-instruct", 11),
      writeMiniature("llama-3.2-1b-instruct", 11),
      writeMiniature("llama-3.2-1b-instruct", 12),
    ]);
    expect(b.weightFiles).toEqual(a.weightFiles);
    for (const file of a.weightFiles) {
      const bytesA = await readFile(join(a.directory, file));
      expect(bytesA.equals(await readFile(join(b.directory, file))), file).toBe(true);
      expect(bytesA.equals(await readFile(join(c.directory, file))), file).toBe(false);
    }
    // Tensors draw from streams of their own: one tensor's values are not another's.
    const weights = await readCheckpointTensorsLazily(a.directory);
    const q0 = weights.get("model.layers.0.self_attn.q_proj.weight")!.data;
    const q1 = weights.get("model.layers.1.self_attn.q_proj.weight")!.data;
    expect(q0).not.toEqual(q1);
  });

  it("writes a single model.safetensors without an index when one file holds every weight", async () => {
    const directory = scratch("single");
    const written = await writeRealSizeCheckpoint(directory, "llama-3.2-1b-instruct", { configOverrides: MINIATURES["llama-3.2-1b-instruct"] });
    expect(written.weightFiles).toEqual(["model.safetensors"]);
    expect(await readdir(directory)).not.toContain("model.safetensors.index.json");
    const weights = await readCheckpointTensorsLazily(directory);
    expect([...weights.keys()].sort()).toEqual([...expectedWeights(written.config).keys()].sort());
  });
});
