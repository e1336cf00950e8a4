/**
 * The top eigenpairs of a large symmetric positive semi-definite matrix (a weight's Gram matrix):
 * a Chebyshev-filtered block subspace iteration with Rayleigh–Ritz (Zhou & Saad 2007), with
 * locking of converged pairs and a filter degree sized to the residual still to be removed.
 *
 * Why this method: on 2 CPU cores onnxruntime's float64 MatMul runs at 50–130 GFLOP/s, JS loops
 * at about 1, so the solver must spend its work in block products with the matrix and keep the
 * JS part to O(k² n) per step. A polynomial filter does many products per Rayleigh–Ritz step, and
 * Chebyshev polynomials are the best polynomials for separating [cut, top] from [0, cut]: for
 * 32 pairs of a random (flat, Marchenko–Pastur) spectrum of size 2048, 6 Rayleigh–Ritz steps
 * and 65–80 block products (0.4–0.7 s); real weights, whose spectra fall off faster, need fewer.
 * A dense decomposition costs ~9n³ JS flops, over a minute at n = 2048. Block Krylov with
 * Rayleigh–Ritz over the whole Krylov space would need a dense eigen-solve of size
 * (products × block), which is that cost again.
 */
import { Rng } from "../random.ts";
import {
  checkLength,
  orthonormalizeRowsWith,
  symmetricEigen,
  symmetricEigenTridiagonal,
  transpose,
  type MatrixProduct,
  type SymmetricEigen,
} from "./linear-algebra.ts";

/** How `topEigenpairs` found its answer, for logs and tests. */
export interface TopEigenpairs extends SymmetricEigen {
  method: "dense" | "subspace" | "dense-fallback";
  iterations: number; // Rayleigh–Ritz steps of the subspace iteration (0 when dense)
  products: number; // block products with the matrix (0 when dense)
  productRows: number; // rows of all those blocks together: the work, in units of 2n² flops
  maxResidual: number; // max over returned pairs of ‖A v − λ v‖ / λ₁ (checked for the subspace method)
}

/** How `topEigenpairs` works: the method, when it has converged, and how hard it tries. */
export interface TopEigenpairsOptions {
  method?: "auto" | "dense" | "subspace"; // auto: dense when the block would cover most of the matrix
  tolerance?: number; // converged when every ‖A v − λ v‖ ≤ tolerance · λ₁ (default 1e-10)
  oversampling?: number; // extra block vectors beyond `count` (default max(16, count))
  maxIterations?: number; // Rayleigh–Ritz steps before giving up (default 60)
  denseFallbackLimit?: number; // largest n for which non-convergence falls back to a dense decomposition (default 1024)
  seed?: number; // seed of the random start block (default fixed, so results are reproducible)
  label?: string; // names the matrix in error messages
}

const DEFAULT_TOLERANCE = 1e-10;
const DEFAULT_MAX_ITERATIONS = 60;
const DEFAULT_DENSE_FALLBACK_LIMIT = 1024;
const DEFAULT_SEED = 0x9e3779b9;
// Amplification of the top of the spectrum over the filter's cut per filter application. It bounds
// the condition number of the filtered block so Cholesky QR stays accurate (it needs κ ≲ 1e8).
const FILTER_AMPLIFICATION = 1e6;
const MAX_FILTER_DEGREE = 40;
// The filter aims this far below the tolerance: the damping it predicts for the slowest wanted
// pair is a bound on the error from below the cut, not a promise about the residual, and a
// missed target costs a whole extra step.
const FILTER_MARGIN = 30;

/**
 * The `count` largest eigenpairs of a symmetric positive semi-definite A [n, n]. Dense Jacobi
 * when n is small; otherwise the filtered subspace iteration with its products on `product`. It
 * stops when every returned pair has ‖A v − λ v‖ ≤ tolerance·λ₁; when it cannot get there it
 * falls back to a dense decomposition (n ≤ denseFallbackLimit) or throws, never returning
 * unconverged vectors.
 */
export async function topEigenpairs(
  a: Float64Array,
  n: number,
  count: number,
  product: MatrixProduct,
  options: TopEigenpairsOptions = {},
): Promise<TopEigenpairs> {
  checkLength("topEigenpairs", a, n * n);
  const label = options.label ?? `a ${n}x${n} matrix`;
  if (!Number.isInteger(count) || count < 1 || count > n) throw new Error(`topEigenpairs: ${label}: count ${count} must be an integer in [1, ${n}]`);
  const tolerance = options.tolerance ?? DEFAULT_TOLERANCE;
  const blockSize = Math.min(n, count + (options.oversampling ?? Math.max(16, count)));
  const method = options.method ?? "auto";
  if (method === "dense" || (method === "auto" && (n <= 128 || blockSize * 4 > n * 3))) {
    return { ...denseTop(a, n, count), method: "dense", iterations: 0, products: 0, productRows: 0, maxResidual: 0 };
  }
  if (blockSize >= n) throw new Error(`topEigenpairs: ${label}: the subspace method needs count + oversampling < n (${blockSize} ≥ ${n})`);

  const result = await subspaceIteration(a, n, count, blockSize, product, {
    tolerance,
    maxIterations: options.maxIterations ?? DEFAULT_MAX_ITERATIONS,
    seed: options.seed ?? DEFAULT_SEED,
  });
  const work = { iterations: result.iterations, products: result.products, productRows: result.productRows };
  if (result.converged) return { values: result.values, vectors: result.vectors, ...work, maxResidual: result.maxResidual, method: "subspace" };
  const limit = options.denseFallbackLimit ?? DEFAULT_DENSE_FALLBACK_LIMIT;
  if (n <= limit) return { ...denseTop(a, n, count), method: "dense-fallback", ...work, maxResidual: 0 };
  throw new Error(
    `topEigenpairs: ${label}: subspace iteration did not converge in ${result.iterations} Rayleigh–Ritz steps ` +
      `(worst relative residual ${result.maxResidual.toExponential(2)} > ${tolerance}) and n = ${n} is too large for the dense fallback (≤ ${limit})`,
  );
}

function denseTop(a: Float64Array, n: number, count: number): SymmetricEigen {
  // Jacobi is the more accurate of the two, but its sweeps cost ~10x Householder + QL's 9n³ by n = 128.
  const { values, vectors } = n <= 64 ? symmetricEigen(a, n) : symmetricEigenTridiagonal(a, n);
  return { values: values.slice(0, count), vectors: vectors.slice(0, count * n) };
}

interface SubspaceResult extends SymmetricEigen {
  converged: boolean;
  iterations: number;
  products: number;
  productRows: number;
  maxResidual: number;
}

/**
 * The iteration keeps two sets of rows: `locked` pairs, converged and fixed, and the `active`
 * block, orthogonal to them, which is filtered, orthonormalised and rotated onto Ritz vectors
 * each step. A pair is locked once it and every active pair above it have converged, so the
 * locked rows are always a prefix of the answer and stop costing products.
 */
async function subspaceIteration(
  a: Float64Array,
  n: number,
  count: number,
  blockSize: number,
  product: MatrixProduct,
  settings: { tolerance: number; maxIterations: number; seed: number },
): Promise<SubspaceResult> {
  let products = 0;
  let productRows = 0;
  const timesA = async (block: Float64Array, rows: number): Promise<Float64Array> => {
    products++;
    productRows += rows;
    return product(block, rows, n, a, n); // rows of Xᵀ A = (A X)ᵀ, as A is symmetric
  };
  const rng = new Rng(settings.seed);
  const refill = () => rng.normal(); // a block row that collapsed is replaced by a fresh random one
  const lockedVectors = new Float64Array(count * n); // [count, n], the first `locked` rows used
  const lockedValues = new Float64Array(count);
  let locked = 0;
  let lockedResidual = 0; // worst relative residual among the locked pairs

  let m = blockSize; // active rows
  let x: Float64Array = new Float64Array(m * n); // [m, n]: the active block, one vector per row
  for (let i = 0; i < x.length; i++) x[i] = rng.normal();
  x = await orthonormalizeRowsWith(product, x, m, n, refill);
  let ax = await timesA(x, m); // [m, n]: rows of (A X)ᵀ

  let iterations = 0;
  for (;;) {
    // Rayleigh–Ritz: H = Xᵀ A X [m, m] = S Θ Sᵀ; rotate X and A X onto the Ritz vectors.
    const ritz = symmetricEigenTridiagonal(await product(x, m, n, transpose(ax, m, n), m), m);
    x = await product(ritz.vectors, m, m, x, n);
    ax = await product(ritz.vectors, m, m, ax, n);
    const values = ritz.values;
    iterations++;

    const largest = Math.max(locked > 0 ? lockedValues[0] : 0, values[0], 0);
    const residuals = residualNorms(x, ax, values, m, n);
    const relative = (i: number) => (largest > 0 ? residuals[i] / largest : residuals[i] === 0 ? 0 : Infinity);
    const wanted = count - locked;
    let converged = 0;
    while (converged < wanted && relative(converged) <= settings.tolerance) converged++;
    let worst = lockedResidual;
    for (let i = 0; i < wanted; i++) worst = Math.max(worst, relative(i));
    if (converged === wanted || iterations >= settings.maxIterations) {
      lockedVectors.set(x.subarray(0, wanted * n), locked * n);
      lockedValues.set(values.subarray(0, wanted), locked);
      const answer = sortedPairs(lockedValues, lockedVectors, count, n);
      return { ...answer, converged: converged === wanted, iterations, products, productRows, maxResidual: worst };
    }
    if (converged > 0) {
      lockedVectors.set(x.subarray(0, converged * n), locked * n);
      lockedValues.set(values.subarray(0, converged), locked);
      for (let i = 0; i < converged; i++) lockedResidual = Math.max(lockedResidual, relative(i));
      locked += converged;
    }
    const active = {
      x: x.subarray(converged * n),
      ax: ax.subarray(converged * n),
      values: values.subarray(converged),
      residuals: residuals.subarray(converged),
    };
    m -= converged;

    // Damp the spectrum below the smallest Ritz value (the cut) and amplify what lies above it,
    // up to the top of the whole spectrum: locked directions left in the block by rounding are
    // amplified like any other and must stay bounded, to be projected out below.
    const top = Math.max(locked > 0 ? lockedValues[0] : 0, active.values[0] + active.residuals[0]);
    const cut = Math.max(active.values[m - 1], 1e-3 * largest);
    const slowest = count - locked - 1; // the lowest wanted pair, the last to converge
    const needed = (relative(converged + slowest) / settings.tolerance) * FILTER_MARGIN;
    x =
      top > cut * (1 + 1e-12)
        ? await chebyshevFilter(active, timesA, { cut, top, target: active.values[slowest], needed }, m, n)
        : Float64Array.from(active.ax);
    for (let pass = 0; pass < (locked > 0 ? 2 : 1); pass++) {
      if (locked > 0) x = await projectOut(product, x, m, lockedVectors.subarray(0, locked * n), locked, n);
      x = await orthonormalizeRowsWith(product, x, m, n, refill);
    }
    ax = await timesA(x, m);
  }
}

/** The pairs sorted by descending value (lower index first on ties): locking keeps them nearly so. */
function sortedPairs(values: Float64Array, vectors: Float64Array, count: number, n: number): SymmetricEigen {
  const order = Array.from({ length: count }, (_, i) => i).sort((p, q) => values[q] - values[p] || p - q);
  const sortedValues = new Float64Array(count);
  const sortedVectors = new Float64Array(count * n);
  order.forEach((from, to) => {
    sortedValues[to] = values[from];
    sortedVectors.set(vectors.subarray(from * n, (from + 1) * n), to * n);
  });
  return { values: sortedValues, vectors: sortedVectors };
}

/** X − (X Lᵀ) L for orthonormal rows L [locked, n]: X's rows made orthogonal to L's. */
async function projectOut(product: MatrixProduct, x: Float64Array, rows: number, l: Float64Array, locked: number, n: number): Promise<Float64Array> {
  const coefficients = await product(x, rows, n, transpose(l, locked, n), locked); // [rows, locked]
  const along = await product(coefficients, rows, locked, l, n); // [rows, n]
  const result = new Float64Array(rows * n);
  for (let i = 0; i < result.length; i++) result[i] = x[i] - along[i];
  return result;
}

/** ‖A vᵢ − θᵢ vᵢ‖ for each row i of the block. */
function residualNorms(x: Float64Array, ax: Float64Array, values: Float64Array, k: number, n: number): Float64Array {
  const norms = new Float64Array(k);
  for (let i = 0; i < k; i++) {
    let sum = 0;
    for (let t = 0; t < n; t++) {
      const r = ax[i * n + t] - values[i] * x[i * n + t];
      sum += r * r;
    }
    norms[i] = Math.sqrt(sum);
  }
  return norms;
}

/**
 * p(A) X with p(t) = T_m(L(t)) / T_m(L(top)), T_m the Chebyshev polynomial and L mapping
 * [0, cut] onto [−1, 1]: |p| ≤ 1/T_m(L(top)) below the cut, growing fast above it. The
 * three-term recurrence is scaled at every step (Zhou & Saad's scaled filter) so nothing
 * overflows.
 *
 *   Y₀ = X,  Y₁ = L(A) X / x₀,  Yⱼ₊₁ = 2σⱼ₊₁ L(A) Yⱼ − σⱼ₊₁σⱼ Yⱼ₋₁,  σⱼ₊₁ = 1 / (2x₀ − σⱼ)
 *
 * The degree is the smallest that damps what lies below the cut by `needed` relative to the
 * slowest wanted Ritz value `target` (T_m(L(target)) ≥ needed), and at most the one that makes
 * T_m(L(top)) ≈ FILTER_AMPLIFICATION: the early steps, far from converged, take the cap; the
 * last one takes only what the residual still needs.
 */
async function chebyshevFilter(
  block: { x: Float64Array; ax: Float64Array },
  timesA: (block: Float64Array, rows: number) => Promise<Float64Array>,
  filter: { cut: number; top: number; target: number; needed: number },
  k: number,
  n: number,
): Promise<Float64Array> {
  const { x, ax } = block;
  const center = filter.cut / 2;
  const halfWidth = filter.cut / 2;
  const x0 = (filter.top - center) / halfWidth; // > 1
  const capped = Math.ceil(Math.acosh(FILTER_AMPLIFICATION) / Math.acosh(x0));
  const xTarget = (filter.target - center) / halfWidth;
  const sufficient = xTarget > 1 ? Math.ceil(Math.acosh(Math.max(filter.needed, 2)) / Math.acosh(xTarget)) : Infinity;
  const degree = Math.max(1, Math.min(MAX_FILTER_DEGREE, capped, sufficient));
  let sigma = 1 / x0;
  // Three rotating buffers: a fresh k·n array per step costs page faults and collections.
  let previous = Float64Array.from(x);
  let current = new Float64Array(k * n);
  let spare = new Float64Array(k * n);
  for (let i = 0; i < current.length; i++) current[i] = ((ax[i] - center * x[i]) * sigma) / halfWidth;
  for (let step = 2; step <= degree; step++) {
    const aCurrent = await timesA(current, k);
    const nextSigma = 1 / (2 * x0 - sigma);
    const scaleA = (2 * nextSigma) / halfWidth;
    const scalePrevious = sigma * nextSigma;
    for (let i = 0; i < spare.length; i++) spare[i] = scaleA * (aCurrent[i] - center * current[i]) - scalePrevious * previous[i];
    [previous, current, spare] = [current, spare, previous];
    sigma = nextSigma;
  }
  return current;
}
