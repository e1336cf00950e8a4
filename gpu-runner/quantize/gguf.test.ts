/**
 * bench/gguf.ts against llama.cpp itself (node-llama-cpp's prebuilt CPU binaries): a tiny model's
 * GGUF must hold exactly the weights our engine holds, and llama.cpp must compute our reference
 * forward's log-probabilities from it.
 *
 * node-llama-cpp exposes no raw logits, only the softmax of them, so log-probabilities are
 * compared. llama.cpp's CPU matmul rounds each activation row to Q8_0 before multiplying it with
 * a Q4_0 or Q8_0 weight (ggml's vec_dot_type), an error the reference does not make; so the
 * quantized files are checked in two steps: their bytes, decoded as ggml decodes them, equal our
 * dequantised weights bit for bit, and llama.cpp's log-probabilities agree within that rounding.
 */
import { readFile } from "node:fs/promises";
import { getLlama, LlamaLogLevel, readGgufFileInfo, type Llama, type Token } from "node-llama-cpp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LLAMA_CPP_LINEAR_NAMES, writeGguf } from "../../bench/gguf.ts";
import { f16BitsToF32Bits } from "../checkpoint/half-precision.ts";
import { parseModelConfig, type ModelConfig } from "../model/config.ts";
import { randomWeights } from "../model/random-weights.ts";
import { referenceForward } from "../model/reference.ts";
import type { WeightMap } from "../model/weights.ts";
import { scratchDirectories } from "../testing/scratch-directories.ts";
import { tinyConfigJson, tinyModel, type TinyVariant } from "../testing/tiny-checkpoints.ts";
import { quantizationOf, type WeightPrecision } from "./block-format.ts";
import { dequantizedWeights } from "./dequantized-weights.ts";

const path = scratchDirectories("gguf-test");
const TOKENS = [256, 72, 101, 108, 0, 255, 33, 258, 200, 17] as Token[];
const F32_TOLERANCE = 1e-4;
// Q8_0 rounding of activations inside llama.cpp's quantized matmul moves these small models'
// log-probabilities by up to ~0.05; a float32 model in place of the int4 one moves them by ~0.5.
const QUANTIZED_TOLERANCE = 0.1;

/** A tiny model whose every matrix has whole 32-value blocks per row (intermediate 112 → 128). */
function blockAlignedModel(variant: TinyVariant): { config: ModelConfig; weights: WeightMap } {
  const config = parseModelConfig({ ...tinyConfigJson(variant), intermediate_size: 128 });
  return { config, weights: randomWeights(config, 11) };
}

/** The weights our engine runs at a precision: each quantized tensor quantized and dequantised as the runner does. */
function dequantisedWeights(config: ModelConfig, weights: WeightMap, precision: WeightPrecision): WeightMap {
  const quantization = quantizationOf(precision);
  return quantization === null ? weights : dequantizedWeights(config, weights, quantization);
}

/** log_softmax of each row. */
function logSoftmax(rows: Float64Array[]): Float64Array[] {
  return rows.map((logits) => {
    const max = Math.max(...logits);
    let sum = 0;
    for (const v of logits) sum += Math.exp(v - max);
    const log = max + Math.log(sum);
    return logits.map((v) => v - log);
  });
}

function maxAbsDiff(a: Float64Array[], b: Float64Array[]): number {
  expect(a.length).toBe(b.length);
  let max = 0;
  a.forEach((row, t) => {
    expect(row.length).toBe(b[t].length);
    for (let i = 0; i < row.length; i++) max = Math.max(max, Math.abs(row[i] - b[t][i]));
  });
  return max;
}

describe("writeGguf", () => {
  let llama: Llama;
  beforeAll(async () => {
    // Prebuilt binaries only: never compile or download llama.cpp.
    llama = await getLlama({ gpu: false, build: "never", skipDownload: true, progressLogs: false, logLevel: LlamaLogLevel.error });
  });
  afterAll(async () => {
    await llama?.dispose();
  });

  /** llama.cpp's log-probabilities of the next token after each prefix of TOKENS. */
  async function llamaCppLogProbabilities(file: string, vocabSize: number): Promise<Float64Array[]> {
    const model = await llama.loadModel({ modelPath: file });
    try {
      const context = await model.createContext({
        contextSize: 64,
        batchSize: TOKENS.length,
        threads: 1,
        flashAttention: false,
        experimentalKvCacheKeyType: "F32",
        experimentalKvCacheValueType: "F32",
      });
      const results = await context.getSequence().controlledEvaluate(TOKENS.map((token) => [token, { generateNext: { probabilities: true } }]));
      return results.map((result, t) => {
        const probabilities = result?.next?.probabilities;
        if (probabilities === undefined) throw new Error(`llama.cpp gave no probabilities after token ${t}`);
        expect(probabilities.size).toBe(vocabSize);
        return Float64Array.from({ length: vocabSize }, (_, token) => Math.log(probabilities.get(token as Token)!));
      });
    } finally {
      await model.dispose();
    }
  }

  describe("f32: llama.cpp's log-probabilities are the reference forward's", () => {
    const variants: [TinyVariant, string][] = [
      ["qwen2-bias", "qwen2: q/k/v biases, untied head"],
      ["llama-gqa", "llama: q/k rows interleaved, grouped-query attention"],
      ["llama3-rope", "llama: Llama 3 rope scaling as rope_freqs"],
      ["smollm-tied", "llama: tied embeddings, a stale lm_head ignored"],
      ["mistral-head-dim", "mistral as llama: head_dim ≠ hidden / heads"],
      ["qwen3-qk-norm", "qwen3: per-head q/k norms"],
    ];
    for (const [variant, what] of variants) {
      it(`${variant} (${what})`, async () => {
        const { config, weights } = tinyModel(variant);
        const file = path(`${variant}.gguf`);
        await writeGguf(file, config, weights, "f32");
        const actual = await llamaCppLogProbabilities(file, config.vocabSize);
        expect(maxAbsDiff(actual, logSoftmax(referenceForward(config, weights, TOKENS)))).toBeLessThan(F32_TOLERANCE);
      });
    }

    it("llama with attention_bias and mlp_bias (biases on every linear module)", async () => {
      const config = parseModelConfig({ ...tinyConfigJson("llama-gqa"), attention_bias: true, mlp_bias: true });
      const weights = randomWeights(config, 5);
      const file = path("llama-biases.gguf");
      await writeGguf(file, config, weights, "f32");
      const actual = await llamaCppLogProbabilities(file, config.vocabSize);
      expect(maxAbsDiff(actual, logSoftmax(referenceForward(config, weights, TOKENS)))).toBeLessThan(F32_TOLERANCE);
    });
  });

  describe.each(["int8", "int4"] as const)("%s", (precision) => {
    it.each(["qwen2-bias", "llama-gqa", "smollm-tied", "llama3-rope"] as const)(
      "%s: the file decodes, ggml's way, to exactly our dequantised weights",
      async (variant) => {
        const { config, weights } = blockAlignedModel(variant);
        const file = path(`${variant}-${precision}.gguf`);
        await writeGguf(file, config, weights, precision);
        const expected = expectedGgufTensors(config, dequantisedWeights(config, weights, precision));
        const decoded = await decodeGguf(file);
        expect([...decoded.keys()].sort()).toEqual([...expected.keys()].sort());
        const matrixType = precision === "int4" ? "Q4_0" : "Q8_0"; // every weight matrix, the embedding and LM head included
        for (const [name, { type, values }] of decoded) {
          const isMatrix =
            name === "token_embd.weight" || name === "output.weight" || (name.startsWith("blk.") && name.endsWith(".weight") && !name.includes("norm"));
          expect(type, name).toBe(isMatrix ? matrixType : "F32");
          const want = expected.get(name)!;
          if (want === null) continue;
          expect(values.length, name).toBe(want.length);
          const mismatch = values.findIndex((v, i) => v !== want[i]);
          expect(mismatch, `${name}: first differing element`).toBe(-1);
        }
      },
    );

    it.each(["qwen2-bias", "llama-gqa"] as const)(
      "%s: llama.cpp's log-probabilities are the reference forward's on the dequantised weights",
      async (variant) => {
        const { config, weights } = blockAlignedModel(variant);
        const file = path(`${variant}-${precision}-run.gguf`);
        await writeGguf(file, config, weights, precision);
        const actual = await llamaCppLogProbabilities(file, config.vocabSize);
        const expected = logSoftmax(referenceForward(config, dequantisedWeights(config, weights, precision), TOKENS));
        expect(maxAbsDiff(actual, expected)).toBeLessThan(QUANTIZED_TOLERANCE);
        if (precision === "int4") {
          // The tolerance still tells the int4 weights from the float32 ones they came from.
          expect(maxAbsDiff(actual, logSoftmax(referenceForward(config, weights, TOKENS)))).toBeGreaterThan(2 * QUANTIZED_TOLERANCE);
        }
      },
    );
  });

  it("refuses a matrix whose rows are not whole 32-value blocks", async () => {
    const { config, weights } = tinyModel("llama-gqa"); // intermediate 112
    await expect(writeGguf(path("unaligned.gguf"), config, weights, "int4")).rejects.toThrow(/blk\.0\.ffn_down\.weight has 112 columns/);
  });

  it("refuses sliding-window attention, which llama.cpp's llama and qwen2 graphs do not do", async () => {
    const { config, weights } = tinyModel("qwen2-window-layers");
    await expect(writeGguf(path("window.gguf"), config, weights, "f32")).rejects.toThrow(/layer 1 attends within a window of 4/);
  });
});

/**
 * Each GGUF tensor's float32 values as llama.cpp must see them: the Hugging Face tensor under
 * llama.cpp's name, with llama's q/k rows interleaved per head (GGUF row 2i + s is row s·d/2 + i).
 * rope_freqs has no Hugging Face tensor (null): the llama3-rope run in llama.cpp checks it.
 */
function expectedGgufTensors(config: ModelConfig, weights: WeightMap): Map<string, Float32Array | null> {
  const names: [string, string][] = [
    ["token_embd.weight", "model.embed_tokens.weight"],
    ["output_norm.weight", "model.norm.weight"],
  ];
  if (!config.tieWordEmbeddings) names.push(["output.weight", "lm_head.weight"]);
  const modules = LLAMA_CPP_LINEAR_NAMES;
  for (let layer = 0; layer < config.numLayers; layer++) {
    names.push([`blk.${layer}.attn_norm.weight`, `model.layers.${layer}.input_layernorm.weight`]);
    names.push([`blk.${layer}.ffn_norm.weight`, `model.layers.${layer}.post_attention_layernorm.weight`]);
    for (const [module, tensor] of Object.entries(modules)) {
      const block = ["q_proj", "k_proj", "v_proj", "o_proj"].includes(module) ? "self_attn" : "mlp";
      for (const part of ["weight", "bias"]) {
        const source = `model.layers.${layer}.${block}.${module}.${part}`;
        if (weights.has(source)) names.push([`blk.${layer}.${tensor}.${part}`, source]);
      }
    }
  }
  const interleaved = config.architecture === "LlamaForCausalLM";
  const expected = new Map<string, Float32Array | null>();
  for (const [name, source] of names) {
    const { shape, data } = weights.get(source)!;
    const heads = name.includes("attn_q.") ? config.numHeads : name.includes("attn_k.") ? config.numKvHeads : 0;
    if (!interleaved || heads === 0) {
      expected.set(name, data);
      continue;
    }
    const cols = shape.length === 2 ? shape[1] : 1;
    const rows = data.length / cols;
    const out = new Float32Array(data.length);
    for (let row = 0; row < rows; row++) {
      const head = Math.floor(row / config.headDim);
      const within = row % config.headDim;
      const from = head * config.headDim + (within & 1) * (config.headDim / 2) + (within >> 1);
      out.set(data.subarray(from * cols, (from + 1) * cols), row * cols);
    }
    expected.set(name, out);
  }
  if (config.ropeScaling !== null) expected.set("rope_freqs.weight", null);
  return expected;
}

/** Every tensor of a GGUF file, decoded as ggml's dequantize_row_q4_0 / _q8_0 do. */
async function decodeGguf(file: string): Promise<Map<string, { type: string; values: Float32Array }>> {
  const info = await readGgufFileInfo(file);
  const bytes = await readFile(file);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const half = (at: number) => new Float32Array(new Uint32Array([f16BitsToF32Bits(view.getUint16(at, true))]).buffer)[0];
  const out = new Map<string, { type: string; values: Float32Array }>();
  for (const tensor of info.tensorInfo ?? []) {
    const count = tensor.dimensions.reduce<number>((n, d) => n * Number(d), 1);
    const start = Number(tensor.fileOffset);
    const values = new Float32Array(count);
    let type: string;
    if (tensor.ggmlType === 0) {
      type = "F32";
      for (let i = 0; i < count; i++) values[i] = view.getFloat32(start + 4 * i, true);
    } else if (tensor.ggmlType === 8) {
      type = "Q8_0";
      for (let block = 0; block < count / 32; block++) {
        const at = start + block * 34;
        const d = half(at);
        for (let j = 0; j < 32; j++) values[block * 32 + j] = Math.fround(view.getInt8(at + 2 + j) * d);
      }
    } else if (tensor.ggmlType === 2) {
      type = "Q4_0";
      for (let block = 0; block < count / 32; block++) {
        const at = start + block * 18;
        const d = half(at);
        for (let j = 0; j < 16; j++) {
          const byte = bytes[at + 2 + j];
          values[block * 32 + j] = Math.fround(((byte & 15) - 8) * d);
          values[block * 32 + j + 16] = Math.fround(((byte >> 4) - 8) * d);
        }
      }
    } else {
      throw new Error(`${tensor.name}: unexpected ggml type ${tensor.ggmlType}`);
    }
    out.set(tensor.name, { type, values });
  }
  return out;
}
