/**
 * GGUF v3 files of our Llama-family checkpoints, so that llama.cpp runs exactly the weights our
 * engine runs (bench/llamacpp-phase.ts).
 *
 * Hand-written because the one maintained writer (gguf-py) is Python; the format is a header of
 * typed key/values and tensor descriptions followed by aligned tensor data:
 *
 *   "GGUF" · version 3 · tensor count · key/value count
 *   key/values       general.*, {arch}.*, tokenizer.ggml.*
 *   tensor infos     name · dims (ggml order: ne[0], the innermost, first) · ggml type · offset
 *   padding          to general.alignment
 *   tensor data      each at its offset, each padded to the alignment
 *
 * Names and layouts follow llama.cpp's convert_hf_to_gguf.py: Qwen2 and Qwen3 rotate halves
 * (NEOX) like transformers, so their weights pass unchanged; Llama rotates adjacent pairs, so the
 * rows of q_proj and k_proj are interleaved per head to turn one rotation into the other.
 * Quantized tensors are our own block format (gpu-runner/quantize/block-format.ts) with the codes
 * reordered into ggml's blocks, so both engines hold the same dequantised weights.
 *
 * The bench feeds token ids, so the vocabulary is synthetic: a GPT-2 byte-level "BPE" with no
 * merges whose first 256 tokens are the bytes and the rest placeholders.
 */
import { open, type FileHandle } from "node:fs/promises";
import { endianness } from "node:os";
import { f16BitsToF32Bits, f32BitsToF16Bits } from "../gpu-runner/checkpoint/half-precision.ts";
import type { ModelConfig } from "../gpu-runner/model/config.ts";
import { inverseFrequencies } from "../gpu-runner/model/rope.ts";
import {
  hasBias,
  headNormName,
  lmHeadName,
  linearName,
  linearShape,
  validateWeights,
  weight,
  type LinearModule,
  type WeightMap,
} from "../gpu-runner/model/weights.ts";
import { quantizationOf, quantizeMatrix, type WeightBits, type WeightPrecision } from "../gpu-runner/quantize/block-format.ts";
import { byteToUnicodeTable } from "../gpu-runner/tokenizer/byte-level.ts";

const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian uint32
const GGUF_VERSION = 3;
const ALIGNMENT = 32; // general.alignment; also llama.cpp's default
const QUANT_BLOCK = 32; // values per Q4_0 / Q8_0 block

/** llama.cpp's architecture names for the families we write. */
export type GgufArchitecture = "llama" | "qwen2" | "qwen3";

/** ggml tensor types (ggml.h's enum ggml_type). */
const GgmlType = { F32: 0, Q4_0: 2, Q8_0: 8 } as const;
type GgmlType = (typeof GgmlType)[keyof typeof GgmlType];

/** llama.cpp's general.file_type (enum llama_ftype): the type most weights have. */
const FILE_TYPES: Record<WeightPrecision, number> = { f32: 0, int4: 2, int8: 7 };

/** GGUF key/value types (gguf.h's enum gguf_type). */
const ValueType = { UINT32: 4, INT32: 5, FLOAT32: 6, STRING: 8, ARRAY: 9 } as const;

type MetadataValue =
  | { kind: "uint32"; value: number }
  | { kind: "float32"; value: number }
  | { kind: "string"; value: string }
  | { kind: "strings"; value: readonly string[] }
  | { kind: "int32s"; value: Int32Array };

/** One tensor of the file: where it comes from, how it is stored, and how to encode it. */
interface TensorPlan {
  name: string; // llama.cpp's name, e.g. blk.0.attn_q.weight
  dimensions: number[]; // ggml order: [cols, rows] for a matrix
  type: GgmlType;
  bytes: number;
  offset: number; // from the start of the data section
  encode(): Uint8Array;
}

/** The llama.cpp architecture a config runs as; throws for what llama.cpp would run differently. */
export function ggufArchitecture(config: ModelConfig): GgufArchitecture {
  const windowed = config.attentionWindows.findIndex((window) => window !== null);
  if (windowed >= 0)
    throw new Error(`gguf: layer ${windowed} attends within a window of ${config.attentionWindows[windowed]}; llama.cpp would attend to everything`);
  switch (config.architecture) {
    case "LlamaForCausalLM":
    case "MistralForCausalLM": // convert_hf_to_gguf.py writes Mistral as llama
      return "llama";
    case "Qwen2ForCausalLM":
      if (config.oBias || config.mlpBias) throw new Error("gguf: qwen2 in llama.cpp has no o_proj or MLP biases");
      return "qwen2";
    case "Qwen3ForCausalLM":
      if (config.qkvBias || config.oBias || config.mlpBias) throw new Error("gguf: qwen3 in llama.cpp has no attention or MLP biases");
      return "qwen3";
  }
}

/** Writes `weights` as a GGUF v3 file llama.cpp loads, reading each tensor's data once. */
export async function writeGguf(path: string, config: ModelConfig, weights: WeightMap, precision: WeightPrecision): Promise<void> {
  if (endianness() !== "LE") throw new Error("gguf: writing needs a little-endian host");
  validateWeights(config, weights);
  const architecture = ggufArchitecture(config);
  const tensors = planTensors(config, weights, precision, architecture);
  let offset = 0;
  for (const tensor of tensors) {
    tensor.offset = offset;
    offset = alignUp(offset + tensor.bytes);
  }
  const header = encodeHeader(metadata(config, architecture, precision), tensors);
  const file = await open(path, "w");
  try {
    await writeAll(file, header);
    for (const tensor of tensors) {
      const bytes = tensor.encode();
      if (bytes.length !== tensor.bytes) throw new Error(`gguf: ${tensor.name} encoded to ${bytes.length} bytes, ${tensor.bytes} planned`);
      await writeAll(file, bytes);
      await writeAll(file, new Uint8Array(alignUp(tensor.bytes) - tensor.bytes));
    }
  } finally {
    await file.close();
  }
}

function planTensors(config: ModelConfig, weights: WeightMap, precision: WeightPrecision, architecture: GgufArchitecture): TensorPlan[] {
  const quantization = quantizationOf(precision);
  const linearType = quantization === null ? GgmlType.F32 : ggmlTypeOf(quantization.linearBits);
  const embeddingType = quantization === null ? GgmlType.F32 : ggmlTypeOf(quantization.embeddingBits);
  const plans: TensorPlan[] = [];
  const vector = (name: string, source: () => Float32Array, length: number) => plans.push(plan(name, [length], GgmlType.F32, source));
  const matrix = (name: string, source: () => Float32Array, rows: number, cols: number, type: GgmlType) => plans.push(plan(name, [cols, rows], type, source));
  const read = (name: string) => () => weight(weights, name).data;

  const { vocabSize, hiddenSize, numHeads, numKvHeads, headDim } = config;
  // Llama's rotation pairs dimension 2i with 2i+1, transformers' pairs i with i + head_dim/2.
  const rotaryRows = (module: LinearModule, source: () => Float32Array, cols: number) => {
    if (architecture !== "llama" || (module !== "q_proj" && module !== "k_proj")) return source;
    return () => interleaveRotaryHalves(source(), module === "q_proj" ? numHeads : numKvHeads, headDim, cols);
  };

  matrix("token_embd.weight", read("model.embed_tokens.weight"), vocabSize, hiddenSize, embeddingType);
  for (let layer = 0; layer < config.numLayers; layer++) {
    const block = `blk.${layer}`;
    vector(`${block}.attn_norm.weight`, read(`model.layers.${layer}.input_layernorm.weight`), hiddenSize);
    vector(`${block}.ffn_norm.weight`, read(`model.layers.${layer}.post_attention_layernorm.weight`), hiddenSize);
    if (config.qkNorm) {
      vector(`${block}.attn_q_norm.weight`, read(headNormName(layer, "q_norm")), headDim);
      vector(`${block}.attn_k_norm.weight`, read(headNormName(layer, "k_norm")), headDim);
    }
    for (const [module, tensor] of Object.entries(LLAMA_CPP_LINEAR_NAMES) as [LinearModule, string][]) {
      const [rows, cols] = linearShape(config, module);
      matrix(`${block}.${tensor}.weight`, rotaryRows(module, read(linearName(layer, module)), cols), rows, cols, linearType);
      if (hasBias(config, module)) vector(`${block}.${tensor}.bias`, rotaryRows(module, read(linearName(layer, module, "bias")), 1), rows);
    }
  }
  vector("output_norm.weight", read("model.norm.weight"), hiddenSize);
  // llama.cpp reuses token_embd when output.weight is absent, as transformers ties lm_head.
  if (!config.tieWordEmbeddings) matrix("output.weight", read(lmHeadName(config)), vocabSize, hiddenSize, embeddingType);
  if (config.ropeScaling !== null) {
    if (architecture !== "llama") throw new Error(`gguf: ${architecture} in llama.cpp has no ${config.ropeScaling.type} rope scaling`);
    vector("rope_freqs.weight", () => ropeFrequencyFactors(config), headDim / 2);
  }
  return plans;
}

/** llama.cpp's tensor names of a layer's linear modules. */
export const LLAMA_CPP_LINEAR_NAMES: Readonly<Record<LinearModule, string>> = {
  q_proj: "attn_q",
  k_proj: "attn_k",
  v_proj: "attn_v",
  o_proj: "attn_output",
  gate_proj: "ffn_gate",
  up_proj: "ffn_up",
  down_proj: "ffn_down",
};

function ggmlTypeOf(bits: WeightBits): GgmlType {
  return bits === 4 ? GgmlType.Q4_0 : GgmlType.Q8_0;
}

function plan(name: string, dimensions: number[], type: GgmlType, source: () => Float32Array): TensorPlan {
  const [cols, rows = 1] = dimensions;
  if (type !== GgmlType.F32 && cols % QUANT_BLOCK !== 0) throw new Error(`gguf: ${name} has ${cols} columns, not a multiple of the ${QUANT_BLOCK}-value block`);
  const blocks = (rows * cols) / QUANT_BLOCK;
  const bytes = type === GgmlType.F32 ? rows * cols * 4 : type === GgmlType.Q8_0 ? blocks * 34 : blocks * 18;
  const encode = () => {
    const values = source();
    if (values.length !== rows * cols) throw new Error(`gguf: ${name} has ${values.length} values, ${rows * cols} expected`);
    if (type === GgmlType.F32) return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
    return type === GgmlType.Q8_0 ? encodeQ8_0(values, rows, cols) : encodeQ4_0(values, rows, cols);
  };
  return { name, dimensions, type, bytes, offset: 0, encode };
}

/**
 * block_q8_0 {f16 d; int8 qs[32]}: our codes are unsigned with zero point 128, ggml's signed.
 */
function encodeQ8_0(values: Float32Array, rows: number, cols: number): Uint8Array {
  const q = quantizeMatrix(values, rows, cols, 8, QUANT_BLOCK);
  const out = new Uint8Array(q.scales.length * 34);
  for (let block = 0; block < q.scales.length; block++) {
    writeHalfScale(out, block * 34, q.scales[block]);
    for (let j = 0; j < QUANT_BLOCK; j++) out[block * 34 + 2 + j] = q.data[block * QUANT_BLOCK + j] ^ 0x80; // code − 128 as int8
  }
  return out;
}

/**
 * block_q4_0 {f16 d; uint8 qs[16]}: byte j holds element j (low nibble) and element j + 16 (high);
 * ours holds elements 2j (low) and 2j + 1 (high). Both use zero point 8.
 */
function encodeQ4_0(values: Float32Array, rows: number, cols: number): Uint8Array {
  const q = quantizeMatrix(values, rows, cols, 4, QUANT_BLOCK);
  const out = new Uint8Array(q.scales.length * 18);
  const code = (block: number, j: number) => {
    const byte = q.data[block * 16 + (j >> 1)];
    return (j & 1) === 0 ? byte & 15 : byte >> 4;
  };
  for (let block = 0; block < q.scales.length; block++) {
    writeHalfScale(out, block * 18, q.scales[block]);
    for (let j = 0; j < 16; j++) out[block * 18 + 2 + j] = code(block, j) | (code(block, j + 16) << 4);
  }
  return out;
}

const scaleView = new Float32Array(1);
const scaleBits = new Uint32Array(scaleView.buffer);
/** Writes a scale the block format already rounded to float16, as its f16 bits. */
function writeHalfScale(out: Uint8Array, offset: number, scale: number): void {
  scaleView[0] = scale;
  const half = f32BitsToF16Bits(scaleBits[0]);
  if (f16BitsToF32Bits(half) !== scaleBits[0]) throw new Error(`gguf: block scale ${scale} is not a float16 value`);
  out[offset] = half & 0xff;
  out[offset + 1] = half >> 8;
}

/**
 * convert_hf_to_gguf.py's LlamaModel.permute: within each head, row i of the first half goes to
 * 2i and row i of the second half to 2i + 1, so rotating adjacent pairs rotates transformers' pairs.
 */
function interleaveRotaryHalves(values: Float32Array, heads: number, headDim: number, cols: number): Float32Array {
  if (values.length !== heads * headDim * cols) throw new Error(`gguf: ${values.length} values are not ${heads} heads × ${headDim} rows × ${cols} columns`);
  const out = new Float32Array(values.length);
  const half = headDim / 2;
  for (let head = 0; head < heads; head++) {
    for (let i = 0; i < half; i++) {
      for (let part = 0; part < 2; part++) {
        const from = (head * headDim + part * half + i) * cols;
        out.set(values.subarray(from, from + cols), (head * headDim + 2 * i + part) * cols);
      }
    }
  }
  return out;
}

/** rope_freqs.weight: llama.cpp divides each base frequency by its factor (Llama 3's scaling). */
function ropeFrequencyFactors(config: ModelConfig): Float32Array {
  const base = inverseFrequencies({ ...config, ropeScaling: null });
  const scaled = inverseFrequencies(config);
  return Float32Array.from(base, (frequency, i) => frequency / scaled[i]);
}

function metadata(config: ModelConfig, architecture: GgufArchitecture, precision: WeightPrecision): [string, MetadataValue][] {
  const uint32 = (value: number): MetadataValue => ({ kind: "uint32", value });
  const float32 = (value: number): MetadataValue => ({ kind: "float32", value });
  const entries: [string, MetadataValue][] = [
    ["general.architecture", { kind: "string", value: architecture }],
    ["general.name", { kind: "string", value: `${config.architecture} ${config.numLayers}x${config.hiddenSize} ${precision}` }],
    ["general.alignment", uint32(ALIGNMENT)],
    ["general.file_type", uint32(FILE_TYPES[precision])],
    [`${architecture}.vocab_size`, uint32(config.vocabSize)],
    [`${architecture}.context_length`, uint32(config.maxPositionEmbeddings)],
    [`${architecture}.embedding_length`, uint32(config.hiddenSize)],
    [`${architecture}.block_count`, uint32(config.numLayers)],
    [`${architecture}.feed_forward_length`, uint32(config.intermediateSize)],
    [`${architecture}.attention.head_count`, uint32(config.numHeads)],
    [`${architecture}.attention.head_count_kv`, uint32(config.numKvHeads)],
    [`${architecture}.attention.key_length`, uint32(config.headDim)],
    [`${architecture}.attention.value_length`, uint32(config.headDim)],
    [`${architecture}.attention.layer_norm_rms_epsilon`, float32(config.rmsNormEps)],
    [`${architecture}.rope.dimension_count`, uint32(config.headDim)],
    [`${architecture}.rope.freq_base`, float32(config.ropeTheta)],
    ...tokenizerMetadata(config),
  ];
  return entries;
}

/** A byte-level vocabulary of `vocabSize` tokens: the 256 bytes, then placeholders `<t256>`, `<t257>`, … */
function tokenizerMetadata(config: ModelConfig): [string, MetadataValue][] {
  const bytes = byteToUnicodeTable();
  const tokens = Array.from({ length: config.vocabSize }, (_, id) => (id < bytes.length ? bytes[id] : `<t${id}>`));
  const NORMAL = 1;
  const CONTROL = 3;
  const types = new Int32Array(config.vocabSize).fill(NORMAL);
  const special: [string, MetadataValue][] = [];
  const bos = config.bosTokenId ?? undefined;
  const eos = config.eosTokenIds[0];
  // Named as llama.cpp expects, so that it counts eos among its end-of-generation tokens by itself.
  for (const [key, id, text] of [
    ["tokenizer.ggml.bos_token_id", bos, "<|begin_of_text|>"],
    ["tokenizer.ggml.eos_token_id", eos, "<|endoftext|>"],
  ] as const) {
    if (id === undefined || id < bytes.length || id >= config.vocabSize) continue;
    special.push([key, { kind: "uint32", value: id }]);
    types[id] = CONTROL;
    tokens[id] = text;
  }
  return [
    ["tokenizer.ggml.model", { kind: "string", value: "gpt2" }],
    ["tokenizer.ggml.pre", { kind: "string", value: "default" }],
    ["tokenizer.ggml.tokens", { kind: "strings", value: tokens }],
    ["tokenizer.ggml.token_type", { kind: "int32s", value: types }],
    ["tokenizer.ggml.merges", { kind: "strings", value: [] }],
    ...special,
  ];
}

/** Magic, counts, key/values and tensor infos, padded to the alignment where the data starts. */
function encodeHeader(entries: [string, MetadataValue][], tensors: TensorPlan[]): Uint8Array {
  const out = new ByteWriter();
  out.uint32(GGUF_MAGIC);
  out.uint32(GGUF_VERSION);
  out.uint64(tensors.length);
  out.uint64(entries.length);
  for (const [key, value] of entries) {
    out.string(key);
    switch (value.kind) {
      case "uint32":
        out.uint32(ValueType.UINT32);
        out.uint32(value.value);
        break;
      case "float32":
        out.uint32(ValueType.FLOAT32);
        out.float32(value.value);
        break;
      case "string":
        out.uint32(ValueType.STRING);
        out.string(value.value);
        break;
      case "strings":
        out.uint32(ValueType.ARRAY);
        out.uint32(ValueType.STRING);
        out.uint64(value.value.length);
        for (const text of value.value) out.string(text);
        break;
      case "int32s":
        out.uint32(ValueType.ARRAY);
        out.uint32(ValueType.INT32);
        out.uint64(value.value.length);
        for (const n of value.value) out.int32(n);
        break;
    }
  }
  for (const tensor of tensors) {
    out.string(tensor.name);
    out.uint32(tensor.dimensions.length);
    for (const d of tensor.dimensions) out.uint64(d);
    out.uint32(tensor.type);
    out.uint64(tensor.offset);
  }
  out.pad(ALIGNMENT);
  return out.bytes();
}

/** A growable little-endian buffer for the header. */
class ByteWriter {
  private buffer = new Uint8Array(1 << 16);
  private view = new DataView(this.buffer.buffer);
  private length = 0;
  private readonly encoder = new TextEncoder();

  uint32(value: number): void {
    this.reserve(4).setUint32(this.length, value, true);
    this.length += 4;
  }

  int32(value: number): void {
    this.reserve(4).setInt32(this.length, value, true);
    this.length += 4;
  }

  uint64(value: number): void {
    this.reserve(8).setBigUint64(this.length, BigInt(value), true);
    this.length += 8;
  }

  float32(value: number): void {
    this.reserve(4).setFloat32(this.length, value, true);
    this.length += 4;
  }

  string(text: string): void {
    const encoded = this.encoder.encode(text);
    this.uint64(encoded.length);
    this.reserve(encoded.length);
    this.buffer.set(encoded, this.length);
    this.length += encoded.length;
  }

  pad(alignment: number): void {
    const padding = (alignment - (this.length % alignment)) % alignment;
    this.reserve(padding);
    this.length += padding; // the buffer starts zeroed and is never written past length
  }

  bytes(): Uint8Array {
    return this.buffer.subarray(0, this.length);
  }

  private reserve(bytes: number): DataView {
    if (this.length + bytes > this.buffer.length) {
      const grown = new Uint8Array(Math.max(this.buffer.length * 2, this.length + bytes));
      grown.set(this.buffer.subarray(0, this.length));
      this.buffer = grown;
      this.view = new DataView(grown.buffer);
    }
    return this.view;
  }
}

function alignUp(offset: number): number {
  return Math.ceil(offset / ALIGNMENT) * ALIGNMENT;
}

/** Writes all of `bytes`, in pieces below Node's 2 GiB limit on one write. */
async function writeAll(file: FileHandle, bytes: Uint8Array): Promise<void> {
  const piece = 1 << 30;
  for (let start = 0; start < bytes.length; start += piece) {
    const chunk = bytes.subarray(start, Math.min(bytes.length, start + piece));
    let written = 0;
    while (written < chunk.length) written += (await file.write(chunk, written, chunk.length - written)).bytesWritten;
  }
}
