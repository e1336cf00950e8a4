/**
 * Quantized weights in a graph (block-format.ts): a product with a quantized [N, K] weight is
 * onnxruntime's `MatMulNBits` (y = x · Wᵀ, dequantising block by block inside its kernel), and
 * where the float values themselves are needed (an embedding row, the input gradient of a frozen
 * weight, a float64 graph) they are rebuilt from the codes by standard ops, only as many rows as
 * are read:
 *
 *   codes uint8 [R, blocks, bytes] ─(4 bits: BitwiseAnd 15 ⊕ BitShift 4 → [R, blocks, bytes, 2])─Cast
 *     ─Sub(zero point)─Mul(scales [R, blocks, 1])─Reshape─ [R, blocks·blockSize] ─(Slice to K)─▶ W [R, K]
 */
import { MICROSOFT_DOMAIN, type DataType, type Dim, type GraphBuilder, type Value } from "../graph/builder.ts";
import { binary, cast, concat, gather, reshape, slice, transpose, unsqueeze, matMul } from "../graph/ops.ts";
import { blockBytes, blocksPerRow, zeroPoint, type QuantizedProducts, type WeightBits } from "./block-format.ts";

/** MatMulNBits's accuracy levels: 1 computes in float32, 4 in int8. */
const ACCURACY_LEVEL: Record<QuantizedProducts, number> = { float: 1, int8: 4 };

/** A quantized weight in a graph: its codes and scales, and the shape it stands for. */
export interface QuantizedValue {
  codes: Value; // uint8 [rows, blocks, bytes]
  scales: Value; // float32 [rows · blocks], as MatMulNBits reads them
  bits: WeightBits;
  blockSize: number;
  rows: number; // N (out)
  cols: number; // K (in)
}

/**
 * Shapes of a quantized weight's codes and scales. The scales are stored flat, as MatMulNBits
 * reads them: its int8 kernel packs codes and scales once, at load, and only from initializers
 * it gets as they are (a scale tensor computed in the graph would reach it as zeros).
 */
export function quantizedShapes(rows: number, cols: number, bits: WeightBits, blockSize: number): { codes: number[]; scales: number[] } {
  const blocks = blocksPerRow(cols, blockSize);
  return { codes: [rows, blocks, blockBytes(bits, blockSize)], scales: [rows * blocks] };
}

/** A quantized weight's scales as [rows, blocks], one row per row of codes. */
export function scalesByRow(g: GraphBuilder, name: string, codes: Value, flatScales: Value): Value {
  const [rows, blocks] = codes.shape as number[];
  return reshape(g, name, flatScales, [rows, blocks]);
}

/**
 * x [.., K] · Wᵀ → [.., N]. A float32 x runs through MatMulNBits on the codes as they lie, with
 * `products` its accuracy level; any other type (the float64 graphs of gradient checks)
 * multiplies by the dequantised weight.
 */
export function quantizedMatMul(g: GraphBuilder, name: string, x: Value, w: QuantizedValue, products: QuantizedProducts): Value {
  const outShape: Dim[] = [...x.shape.slice(0, -1), w.rows];
  if (x.dtype !== "float32") {
    const dense = dequantizeRows(g, `${name}/dequantize`, w.codes, scalesByRow(g, `${name}/scales/Reshape`, w.codes, w.scales), w, x.dtype);
    return matMul(g, `${name}/MatMul`, x, transpose(g, `${name}/Transpose`, dense, [1, 0]));
  }
  return g.addNode("MatMulNBits", [x, w.codes, w.scales], [{ dtype: "float32", shape: outShape }], {
    name,
    domain: MICROSOFT_DOMAIN,
    attributes: { K: w.cols, N: w.rows, bits: w.bits, block_size: w.blockSize, accuracy_level: ACCURACY_LEVEL[products] },
  })[0];
}

/** Rows of a quantized table picked by `indices` (an embedding lookup): [..indices, K]. */
export function gatherQuantizedRows(g: GraphBuilder, name: string, table: QuantizedValue, indices: Value, dtype: DataType): Value {
  const codes = gather(g, `${name}/codes/Gather`, table.codes, indices); // [.., blocks, bytes]
  const scales = gather(g, `${name}/scales/Gather`, scalesByRow(g, `${name}/scales/Reshape`, table.codes, table.scales), indices); // [.., blocks]
  return dequantizeRows(g, name, codes, scales, table, dtype);
}

/**
 * The float values of quantized rows: codes [.., blocks, bytes] and scales [.., blocks] →
 * [.., cols] of `dtype`, exactly (code − zero point) · scale as block-format.ts defines it.
 */
export function dequantizeRows(
  g: GraphBuilder,
  name: string,
  codes: Value,
  scales: Value,
  format: { bits: WeightBits; blockSize: number; cols: number },
  dtype: DataType,
): Value {
  const { bits, blockSize, cols } = format;
  const lead = codes.shape.slice(0, -2);
  const blocks = codes.shape[codes.shape.length - 2] as number;
  let unpacked = codes; // [.., blocks, blockSize] of uint8 codes
  if (bits === 4) {
    const low = g.addNode("BitwiseAnd", [codes, g.initializer(`${name}/low_mask`, "uint8", [], Uint8Array.of(15))], [{ dtype: "uint8", shape: codes.shape }], {
      name: `${name}/low/BitwiseAnd`,
    })[0];
    const high = g.addNode("BitShift", [codes, g.initializer(`${name}/shift`, "uint8", [], Uint8Array.of(4))], [{ dtype: "uint8", shape: codes.shape }], {
      name: `${name}/high/BitShift`,
      attributes: { direction: "RIGHT" },
    })[0];
    const pairs = concat(g, `${name}/Concat`, [unsqueeze(g, `${name}/low/Unsqueeze`, low, [-1]), unsqueeze(g, `${name}/high/Unsqueeze`, high, [-1])], -1);
    unpacked = reshape(g, `${name}/codes/Reshape`, pairs, [...lead.map(() => 0), blocks, blockSize], { outShape: [...lead, blocks, blockSize] });
  }
  const float = cast(g, `${name}/Cast`, unpacked, dtype);
  const zero = g.constFloat(zeroPoint(bits), dtype as "float32" | "float64");
  const scale = unsqueeze(g, `${name}/scales/Unsqueeze`, scales.dtype === dtype ? scales : cast(g, `${name}/scales/Cast`, scales, dtype), [-1]);
  const values = binary(g, "Mul", `${name}/Mul`, binary(g, "Sub", `${name}/Sub`, float, zero), scale); // [.., blocks, blockSize]
  const padded = blocks * blockSize;
  const rows = reshape(g, `${name}/Reshape`, values, [...lead.map(() => 0), padded], { outShape: [...lead, padded] });
  return padded === cols ? rows : slice(g, `${name}/Slice`, rows, -1, 0, cols, cols);
}
