/**
 * The top right singular vectors of one weight W [out, in], in float64, as the rows of P: the
 * Gram matrix (the smaller of W Wᵀ and WᵀW) on onnxruntime, its top eigenpairs by the filtered
 * subspace iteration, exact orthonormalisation, rounding to float32 and canonical signs.
 */
import { GraphBuilder } from "../graph/builder.ts";
import { cast, gemm, matMul, transpose as transposeNode } from "../graph/ops.ts";
import { OnnxSession } from "../runtime/onnx-session.ts";
import type { FloatTensor } from "../tensor.ts";
import { orthonormalizeRowsWith, transpose, type MatrixProduct } from "./linear-algebra.ts";
import { topEigenpairs } from "./top-eigenpairs.ts";

/** The products the basis needs: float64 MatMul, and products with a float32 weight widened to float64. */
export interface WeightProducts {
  product: MatrixProduct;
  /** W Wᵀ [out, out] ("rows") or WᵀW [in, in] ("columns") of W [out, in], in float64. */
  gram(weight: Float32Array, out: number, inputs: number, side: "rows" | "columns"): Promise<Float64Array>;
  /** U [count, out] · W [out, in], in float64. */
  leftTimes(left: Float64Array, count: number, weight: Float32Array, out: number, inputs: number): Promise<Float64Array>;
}

/** The top `rank` right singular vectors of W and the matching singular values. */
export interface RightSingularVectors {
  rows: Float32Array; // [rank, in]: orthonormal rows, signs canonical
  singularValues: Float64Array; // [rank], descending
}

// Below this ratio λ_r/λ₁ of W Wᵀ, recovering v = Wᵀu/σ would amplify u's error; use WᵀW instead.
const SMALL_GRAM_MIN_EIGENVALUE_RATIO = 1e-8;
const ORTHONORMALITY_TOLERANCE = 1e-5;

/**
 * A float64 matrix product on onnxruntime's CPU provider: one MatMul graph with symbolic dims,
 * one session for every shape. Measured on 2 cores: 50–130 GFLOP/s against 0.5–0.85 for JS
 * loops.
 */
export async function createOnnxMatrixProduct(): Promise<{ product: MatrixProduct; dispose: () => Promise<void> }> {
  const g = new GraphBuilder("pica-basis-float64-matmul");
  const a = g.input("a", "float64", ["rows", "inner"]);
  const b = g.input("b", "float64", ["inner", "columns"]);
  g.output(matMul(g, "/basis/MatMul", a, b), "c");
  const session = await createSession(g);
  const product: MatrixProduct = async (left, rows, inner, right, columns) => {
    const out = await session.run({
      a: { dtype: "float64", shape: [rows, inner], data: left },
      b: { dtype: "float64", shape: [inner, columns], data: right },
    });
    return out.c.data as Float64Array;
  };
  return { product, dispose: () => session.dispose() };
}

/**
 * All of `WeightProducts` on onnxruntime. The weight goes in as float32 and is widened (and
 * transposed, for WᵀW) inside the graph: widening and transposing a [8192, 2048] weight in JS
 * took longer than the Gram product itself.
 */
export async function createOnnxWeightProducts(): Promise<WeightProducts & { dispose: () => Promise<void> }> {
  const { product, dispose: disposeProduct } = await createOnnxMatrixProduct();
  const gramSessions = {
    rows: await createSession(gramGraph("rows")),
    columns: await createSession(gramGraph("columns")),
  };
  const leftSession = await createSession(leftTimesGraph());
  return {
    product,
    async gram(weight, out, inputs, side) {
      const result = await gramSessions[side].run({ weight: { dtype: "float32", shape: [out, inputs], data: weight } });
      return result.gram.data as Float64Array;
    },
    async leftTimes(u, count, weight, out, inputs) {
      const result = await leftSession.run({
        u: { dtype: "float64", shape: [count, out], data: u },
        weight: { dtype: "float32", shape: [out, inputs], data: weight },
      });
      return result.c.data as Float64Array;
    },
    async dispose() {
      await Promise.all([disposeProduct(), gramSessions.rows.dispose(), gramSessions.columns.dispose(), leftSession.dispose()]);
    },
  };
}

/**
 *   side "rows":    weight [out, in] ─────────────── Cast(float64) ── Gemm(transB) ── gram [out, out]   W Wᵀ
 *   side "columns": weight [out, in] ── Transpose ── Cast(float64) ── Gemm(transB) ── gram [in, in]     WᵀW
 *
 * WᵀW as (Wᵀ)(Wᵀ)ᵀ: MLAS's float64 Gemm ran 15–20% faster with transB than with transA on these
 * shapes, more than the float32 transpose costs, and gives the same bits.
 */
function gramGraph(side: "rows" | "columns"): GraphBuilder {
  const g = new GraphBuilder(`pica-basis-gram-of-${side}`);
  const weight = g.input("weight", "float32", ["out", "in"]);
  const rows = side === "rows" ? weight : transposeNode(g, "/basis/gram/Transpose", weight, [1, 0]);
  const wide = cast(g, "/basis/gram/Cast", rows, "float64");
  g.output(gemm(g, "/basis/gram/Gemm", wide, wide, null, { transB: true }), "gram");
  return g;
}

/**
 *   u [count, out] ────────────────────────────┐
 *   weight [out, in] ── Cast(float64) ──── MatMul ── c [count, in]
 */
function leftTimesGraph(): GraphBuilder {
  const g = new GraphBuilder("pica-basis-left-times-weight");
  const u = g.input("u", "float64", ["count", "out"]);
  const weight = g.input("weight", "float32", ["out", "in"]);
  g.output(matMul(g, "/basis/left/MatMul", u, cast(g, "/basis/left/Cast", weight, "float64")), "c");
  return g;
}

function createSession(g: GraphBuilder): Promise<OnnxSession> {
  // No spinning: between products the JS thread works (Rayleigh–Ritz, filters) and needs the cores.
  return OnnxSession.create(g.serialize(), { inputs: g.inputs, outputs: g.outputs }, { allowSpinning: false });
}

/** `WeightProducts` from a plain float64 product: the weight widened and transposed in JS. */
export function weightProductsOf(product: MatrixProduct): WeightProducts {
  const widen = (weight: Float32Array) => Float64Array.from(weight);
  return {
    product,
    gram: (weight, out, inputs, side) => {
      const w = widen(weight);
      return side === "rows" ? product(w, out, inputs, transpose(w, out, inputs), out) : product(transpose(w, out, inputs), inputs, out, w, inputs);
    },
    leftTimes: (u, count, weight, out, inputs) => product(u, count, out, widen(weight), inputs),
  };
}

/**
 * Top-`rank` right singular vectors of W [out, in] as canonical float32 rows. Works on the smaller
 * Gram matrix in float64: WᵀW [in, in] directly, or W Wᵀ [out, out] when out < in, then vᵢ = Wᵀuᵢ/σᵢ
 * (same vectors, a smaller eigenproblem; skipped when σ_rank is too small for that to be exact).
 */
export async function topRightSingularVectors(
  weight: FloatTensor,
  rank: number,
  products: MatrixProduct | WeightProducts,
  options: { label?: string; method?: "auto" | "dense" | "subspace" } = {},
): Promise<RightSingularVectors> {
  const label = options.label ?? "weight";
  if (weight.shape.length !== 2) throw new Error(`${label}: expected a 2-D weight [out, in], got shape [${weight.shape.join(", ")}]`);
  const [out, inputs] = weight.shape;
  if (!Number.isInteger(rank) || rank < 1 || rank > Math.min(out, inputs)) {
    throw new Error(`${label}: rank ${rank} must be an integer in [1, min(out, in) = ${Math.min(out, inputs)}] for weight [${out}, ${inputs}]`);
  }
  const w = weight.data; // [out, in]; read once: a lazily loaded weight reads its file on each access
  for (let i = 0; i < w.length; i++) {
    if (!Number.isFinite(w[i])) throw new Error(`${label}: element ${i} (row ${Math.floor(i / inputs)}, column ${i % inputs}) is ${w[i]}`);
  }
  const via = typeof products === "function" ? weightProductsOf(products) : products;
  const eigenOptions = { label, method: options.method ?? "auto" } as const;

  let rows: Float64Array | null = null; // [rank, in]
  let eigenvalues: Float64Array | null = null;
  if (out < inputs) {
    const gram = await via.gram(w, out, inputs, "rows"); // W Wᵀ [out, out]
    const left = await topEigenpairs(gram, out, rank, via.product, { ...eigenOptions, label: `${label} (W Wᵀ)` });
    if (left.values[rank - 1] > SMALL_GRAM_MIN_EIGENVALUE_RATIO * left.values[0]) {
      rows = await via.leftTimes(left.vectors, rank, w, out, inputs); // row i: uᵢᵀ W = σᵢ vᵢᵀ
      for (let i = 0; i < rank; i++) {
        const inverseSigma = 1 / Math.sqrt(left.values[i]);
        for (let t = 0; t < inputs; t++) rows[i * inputs + t] *= inverseSigma;
      }
      eigenvalues = left.values;
    }
  }
  if (rows === null || eigenvalues === null) {
    const gram = await via.gram(w, out, inputs, "columns"); // WᵀW [in, in]
    const right = await topEigenpairs(gram, inputs, rank, via.product, { ...eigenOptions, label: `${label} (WᵀW)` });
    rows = right.vectors;
    eigenvalues = right.values;
  }
  rows = await orthonormalizeRowsWith(via.product, rows, rank, inputs); // exact orthonormality before rounding to float32
  const singular = Float32Array.from(rows);
  canonicalizeSigns(singular, rank, inputs);
  const stored = Float64Array.from(singular);
  const error = maxDeviationFromIdentity(await via.product(stored, rank, inputs, transpose(stored, rank, inputs), rank), rank);
  if (!(error <= ORTHONORMALITY_TOLERANCE)) throw new Error(`${label}: P's rows are not orthonormal after rounding to float32 (max |P Pᵀ − I| = ${error})`);
  return { rows: singular, singularValues: eigenvalues.map((value) => Math.sqrt(Math.max(value, 0))) };
}

/**
 * The next `count` right singular vectors of W after `kept` [keptRows, in] (orthonormal rows, such
 * as a stored P): the top right singular vectors of W restricted to the complement of the kept
 * rows, W (I − keptᵀ kept), as float32 rows orthogonal to `kept`, signs canonical. A basis grows
 * this way without changing a bit of the rows adapters already use.
 */
export async function nextRightSingularVectors(
  weight: FloatTensor,
  kept: Float32Array,
  keptRows: number,
  count: number,
  products: MatrixProduct | WeightProducts,
  options: { label?: string } = {},
): Promise<RightSingularVectors> {
  const label = options.label ?? "weight";
  const [out, inputs] = weight.shape;
  if (kept.length !== keptRows * inputs) throw new Error(`${label}: the kept rows hold ${kept.length} values, expected [${keptRows}, ${inputs}]`);
  if (!Number.isInteger(count) || count < 1 || keptRows + count > Math.min(out, inputs)) {
    throw new Error(`${label}: ${keptRows} kept rows and ${count} more exceed min(out, in) = ${Math.min(out, inputs)} of weight [${out}, ${inputs}]`);
  }
  const via = typeof products === "function" ? weightProductsOf(products) : products;
  const p = Float64Array.from(kept); // [kept, in]
  const pT = transpose(p, keptRows, inputs);
  // W − (W Pᵀ) P, in float64, rounded once to float32 for the solver.
  const w = Float64Array.from(weight.data);
  const projected = await via.product(await via.product(w, out, inputs, pT, keptRows), out, keptRows, p, inputs);
  const deflated = new Float32Array(out * inputs);
  for (let i = 0; i < deflated.length; i++) deflated[i] = w[i] - projected[i];
  const next = await topRightSingularVectors({ shape: [out, inputs], data: deflated }, count, via, { label: `${label} (beyond row ${keptRows})` });
  // What the rounding left along the kept rows is removed before the rows are made unit again.
  let rows: Float64Array = Float64Array.from(next.rows);
  const back = await via.product(await via.product(rows, count, inputs, pT, keptRows), count, keptRows, p, inputs);
  for (let i = 0; i < rows.length; i++) rows[i] -= back[i];
  rows = await orthonormalizeRowsWith(via.product, rows, count, inputs);
  const singular = Float32Array.from(rows);
  canonicalizeSigns(singular, count, inputs);
  const all = new Float64Array((keptRows + count) * inputs);
  all.set(kept);
  all.set(singular, keptRows * inputs);
  const error = maxDeviationFromIdentity(
    await via.product(all, keptRows + count, inputs, transpose(all, keptRows + count, inputs), keptRows + count),
    keptRows + count,
  );
  if (!(error <= ORTHONORMALITY_TOLERANCE)) throw new Error(`${label}: the extended rows are not orthonormal to the kept ones (max |P Pᵀ − I| = ${error})`);
  return { rows: singular, singularValues: next.singularValues };
}

function maxDeviationFromIdentity(square: Float64Array, n: number): number {
  let worst = 0;
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) worst = Math.max(worst, Math.abs(square[i * n + j] - (i === j ? 1 : 0)));
  return worst;
}

/** Flips each row of P [rows, columns] so its largest-magnitude entry (lowest index on ties) is positive. */
export function canonicalizeSigns(p: Float32Array, rows: number, columns: number): void {
  for (let i = 0; i < rows; i++) {
    const row = p.subarray(i * columns, (i + 1) * columns);
    if (row[largestMagnitudeIndex(row)] < 0) for (let t = 0; t < columns; t++) row[t] = -row[t];
  }
}

/** Index of the largest |value| in a row, the lowest index on ties. */
export function largestMagnitudeIndex(row: Float32Array): number {
  let best = 0;
  for (let t = 1; t < row.length; t++) if (Math.abs(row[t]) > Math.abs(row[best])) best = t;
  return best;
}
