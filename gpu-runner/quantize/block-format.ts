/**
 * Blockwise quantized weights in onnxruntime's `MatMulNBits` layout, with ggml's rounding.
 *
 * A matrix [rows, cols] (PyTorch's [out, in]) is cut along each row into blocks of `blockSize`
 * values (the last one zero-padded); each block keeps one scale and `blockSize` unsigned codes of
 * `bits` bits, and a value is `(code − 2^(bits−1)) · scale`: the zero point MatMulNBits assumes
 * when the graph gives none.
 *
 *   data    uint8 [rows, blocks, blockSize·bits/8]  4 bits: element j in byte j/2, low nibble first
 *   scales  float [rows · blocks]                   each rounded to float16, as ggml stores them
 *
 * The codes are ggml's (quantize_row_q4_0_ref, quantize_row_q8_0_ref), so a block of 32 is a
 * Q4_0 or Q8_0 block of llama.cpp with its nibbles in another order: the same float32 weights give
 * the same dequantised weights here and there.
 *   4 bits: d = m / −8 with m the block's value of largest magnitude; code = min(15, trunc(x/d + 8.5))
 *   8 bits: d = max|x| / 127; code = round(x/d) + 128 (round half away from zero)
 */
import { f16BitsToF32Bits, f32BitsToF16Bits } from "../checkpoint/half-precision.ts";

export type WeightBits = 4 | 8;

/** The precision a runner holds its base weights in. */
export type WeightPrecision = "f32" | "int8" | "int4";
export const WEIGHT_PRECISIONS: readonly WeightPrecision[] = ["f32", "int8", "int4"];

/** Block sizes MatMulNBits accepts (a power of two, at least 16). */
export const BLOCK_SIZES: readonly number[] = [16, 32, 64, 128, 256];
export const DEFAULT_BLOCK_SIZE = 32;

/**
 * How a model's weights are quantized: none, or the bits of each kind of tensor and one block size.
 * Every weight matrix is quantized, the token embedding and the LM head included (one tensor when
 * they are tied): at 4 bits the embedding is a fifth of a 0.5B model, and held at 8 bits it would
 * cost more memory (its codes, and the LM head's packed copy of them) than it gains in quality
 * (held-out loss of the shipped model: 1.0025× float32 with it at 4 bits, 1.0008× at 8 bits).
 * Norms, biases and the PiCa basis stay float32.
 */
export interface Quantization {
  precision: Exclude<WeightPrecision, "f32">;
  linearBits: WeightBits; // the decoder layers' linear modules
  embeddingBits: WeightBits; // the token embedding and the LM head
  blockSize: number;
}

/** The quantization of a precision (null for float32 weights). */
export function quantizationOf(precision: WeightPrecision, blockSize = DEFAULT_BLOCK_SIZE): Quantization | null {
  if (!BLOCK_SIZES.includes(blockSize)) throw new Error(`block size must be one of ${BLOCK_SIZES.join(", ")}, got ${blockSize}`);
  if (precision === "f32") return null;
  const bits = precision === "int4" ? 4 : 8;
  return { precision, linearBits: bits, embeddingBits: bits, blockSize };
}

/**
 * How a product with quantized weights multiplies (MatMulNBits's accuracy level): "float"
 * dequantises each block to float32, so it equals the product with the dequantised weights (but
 * onnxruntime's CPU kernel for 8 bits then dequantises the whole weight on every call); "int8"
 * also quantizes each block of the activations to 8 bits, as llama.cpp's Q4_0/Q8_0 dot products
 * do, and is the fast path for both widths.
 */
export type QuantizedProducts = "float" | "int8";
export const DEFAULT_QUANTIZED_PRODUCTS: QuantizedProducts = "int8";

/** Whether two quantizations (or float32, null) hold weights alike. */
export function sameQuantization(a: Quantization | null, b: Quantization | null): boolean {
  return (
    a === b ||
    (a !== null &&
      b !== null &&
      a.precision === b.precision &&
      a.linearBits === b.linearBits &&
      a.embeddingBits === b.embeddingBits &&
      a.blockSize === b.blockSize)
  );
}

/** A quantized [rows, cols] matrix. */
export interface QuantizedMatrix {
  bits: WeightBits;
  blockSize: number;
  rows: number;
  cols: number;
  data: Uint8Array; // [rows, blocks, blockBytes]
  scales: Float32Array; // [rows · blocks]
}

/** Blocks per row of a matrix with `cols` columns. */
export function blocksPerRow(cols: number, blockSize: number): number {
  return Math.ceil(cols / blockSize);
}

/** Bytes of one block's codes. */
export function blockBytes(bits: WeightBits, blockSize: number): number {
  return (blockSize * bits) / 8;
}

/** The zero point of the codes: MatMulNBits's default. */
export function zeroPoint(bits: WeightBits): number {
  return 1 << (bits - 1);
}

const f16 = new Float32Array(1);
const f16Bits = new Uint32Array(f16.buffer);
/** Rounds a float32 to the nearest float16 (ties to even), returned as a float32 value. */
function roundToHalf(value: number): number {
  f16[0] = value;
  f16Bits[0] = f16BitsToF32Bits(f32BitsToF16Bits(f16Bits[0]));
  return f16[0];
}

/** C's roundf: half away from zero. */
function roundHalfAway(x: number): number {
  return x < 0 ? -Math.floor(-x + 0.5) : Math.floor(x + 0.5);
}

/** Quantizes a row-major [rows, cols] float matrix (several stacked blocks of rows may be given, in order). */
export function quantizeMatrix(
  values: Float32Array | readonly Float32Array[],
  rows: number,
  cols: number,
  bits: WeightBits,
  blockSize: number,
): QuantizedMatrix {
  const parts = values instanceof Float32Array ? [values] : values;
  const blocks = blocksPerRow(cols, blockSize);
  const bytes = blockBytes(bits, blockSize);
  const data = new Uint8Array(rows * blocks * bytes);
  const scales = new Float32Array(rows * blocks);
  const block = new Float32Array(blockSize);
  let row = 0;
  for (const part of parts) {
    if (part.length % cols !== 0) throw new Error(`quantize: a block of ${part.length} values is not whole rows of ${cols}`);
    for (let r = 0; r < part.length / cols; r++, row++) {
      for (let b = 0; b < blocks; b++) {
        const start = b * blockSize;
        const end = Math.min(cols, start + blockSize);
        block.fill(0);
        block.set(part.subarray(r * cols + start, r * cols + end));
        const at = row * blocks + b;
        scales[at] = bits === 4 ? quantizeBlock4(block, data, at * bytes) : quantizeBlock8(block, data, at * bytes);
      }
    }
  }
  if (row !== rows) throw new Error(`quantize: ${row} rows given, ${rows} expected`);
  return { bits, blockSize, rows, cols, data, scales };
}

function quantizeBlock4(x: Float32Array, out: Uint8Array, offset: number): number {
  let amax = 0;
  let max = 0;
  for (const v of x) {
    if (amax < Math.abs(v)) {
      amax = Math.abs(v);
      max = v;
    }
  }
  const d = Math.fround(max / -8);
  const id = d === 0 ? 0 : Math.fround(1 / d);
  for (let j = 0; j < x.length; j++) {
    const code = Math.min(15, Math.trunc(Math.fround(Math.fround(x[j] * id) + 8.5)));
    out[offset + (j >> 1)] |= (j & 1) === 0 ? code : code << 4;
  }
  return roundToHalf(d);
}

function quantizeBlock8(x: Float32Array, out: Uint8Array, offset: number): number {
  let amax = 0;
  for (const v of x) amax = Math.max(amax, Math.abs(v));
  const d = Math.fround(amax / 127);
  const id = d === 0 ? 0 : Math.fround(1 / d);
  for (let j = 0; j < x.length; j++) out[offset + j] = roundHalfAway(Math.fround(x[j] * id)) + 128;
  return roundToHalf(d);
}

/** The code of element `col` of row `row`. */
export function codeAt(q: QuantizedMatrix, row: number, col: number): number {
  const blocks = blocksPerRow(q.cols, q.blockSize);
  const b = Math.floor(col / q.blockSize);
  const j = col % q.blockSize;
  const offset = (row * blocks + b) * blockBytes(q.bits, q.blockSize);
  if (q.bits === 8) return q.data[offset + j];
  const byte = q.data[offset + (j >> 1)];
  return (j & 1) === 0 ? byte & 15 : byte >> 4;
}

/** The float32 matrix [rows, cols] the quantized one stands for: (code − zero point) · scale. */
export function dequantizeMatrix(q: QuantizedMatrix): Float32Array {
  const out = new Float32Array(q.rows * q.cols);
  const blocks = blocksPerRow(q.cols, q.blockSize);
  const zero = zeroPoint(q.bits);
  for (let r = 0; r < q.rows; r++) {
    for (let c = 0; c < q.cols; c++) {
      out[r * q.cols + c] = Math.fround((codeAt(q, r, c) - zero) * q.scales[r * blocks + Math.floor(c / q.blockSize)]);
    }
  }
  return out;
}
