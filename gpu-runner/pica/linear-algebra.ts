/**
 * Float64 dense linear algebra for the PiCa basis: symmetric eigen-decompositions (cyclic Jacobi,
 * and Householder + QL) and row orthonormalisation; the iterative solver for the top eigenpairs
 * of a large Gram matrix is in top-eigenpairs.ts.
 *
 * Matrices are row-major Float64Arrays with explicit dimensions. Vectors are stored as ROWS
 * (a block of k vectors of length n is [k, n]) so every update walks contiguous memory.
 * Hand-written because no dependency of ours has an eigen-solver, and npm's (ml-matrix) has no
 * partial or iterative one, which models with in = 8192 need. The heavy products are injected
 * as a `MatrixProduct`, so callers can run them on onnxruntime, 20–30x faster than JS loops.
 */

/** C [rows, columns] = A [rows, inner] · B [inner, columns], all row-major float64. */
export type MatrixProduct = (a: Float64Array, rows: number, inner: number, b: Float64Array, columns: number) => Promise<Float64Array>;

/** Eigenvalues in descending order and the matching unit eigenvectors, one per row. */
export interface SymmetricEigen {
  values: Float64Array; // [count]
  vectors: Float64Array; // [count, n]: row i is the eigenvector of values[i]
}

/** A plain JS implementation of `MatrixProduct` (i-k-j loops). */
export const jsMatrixProduct: MatrixProduct = async (a, rows, inner, b, columns) => multiply(a, rows, inner, b, columns);

/** C [m, n] = A [m, k] · B [k, n]. */
export function multiply(a: Float64Array, m: number, k: number, b: Float64Array, n: number): Float64Array {
  checkLength("multiply: A", a, m * k);
  checkLength("multiply: B", b, k * n);
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    const rowC = i * n;
    for (let p = 0; p < k; p++) {
      const aip = a[i * k + p];
      if (aip === 0) continue;
      const rowB = p * n;
      for (let j = 0; j < n; j++) c[rowC + j] += aip * b[rowB + j];
    }
  }
  return c;
}

/** Aᵀ [columns, rows] of A [rows, columns]. */
export function transpose(a: Float64Array, rows: number, columns: number): Float64Array {
  checkLength("transpose", a, rows * columns);
  const t = new Float64Array(rows * columns);
  for (let i = 0; i < rows; i++) {
    const row = i * columns;
    for (let j = 0; j < columns; j++) t[j * rows + i] = a[row + j];
  }
  return t;
}

/** Dot product of row i of A and row j of B, both with `length` columns. */
export function rowDot(a: Float64Array, i: number, b: Float64Array, j: number, length: number): number {
  let sum = 0;
  const ai = i * length;
  const bj = j * length;
  for (let t = 0; t < length; t++) sum += a[ai + t] * b[bj + t];
  return sum;
}

/**
 * Eigen-decomposition of a symmetric matrix [n, n] by cyclic Jacobi: slow (O(n³) per sweep) but
 * accurate to a few ulps of ‖A‖ and simple; meant for n up to a few hundred.
 */
export function symmetricEigen(matrix: Float64Array, n: number, maxSweeps = 100): SymmetricEigen {
  checkLength("symmetricEigen", matrix, n * n);
  const a = new Float64Array(n * n);
  let frobenius = 0;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      const value = 0.5 * (matrix[i * n + j] + matrix[j * n + i]); // symmetrise away rounding noise
      if (!Number.isFinite(value)) throw new Error(`symmetricEigen: entry (${i}, ${j}) is ${matrix[i * n + j]}`);
      a[i * n + j] = value;
      frobenius += value * value;
    }
  }
  frobenius = Math.sqrt(frobenius);
  const vectors = new Float64Array(n * n); // row i: the i-th column of the accumulated rotations
  for (let i = 0; i < n; i++) vectors[i * n + i] = 1;

  // Stop when the off-diagonal mass is below rounding level of ‖A‖: eigenvalues are then exact
  // to ~1e-15 ‖A‖, eigenvectors to that over the gap.
  const offTarget = (1e-15 * frobenius) ** 2;
  const skip = 1e-18 * frobenius; // rotations this small change nothing representable
  let converged = n <= 1 || frobenius === 0;
  for (let sweep = 0; sweep < maxSweeps && !converged; sweep++) {
    for (let p = 0; p < n - 1; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = a[p * n + q];
        if (Math.abs(apq) <= skip) {
          a[p * n + q] = a[q * n + p] = 0;
          continue;
        }
        rotate(a, vectors, n, p, q);
      }
    }
    let off = 0;
    for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) off += 2 * a[i * n + j] * a[i * n + j];
    converged = off <= offTarget;
  }
  if (!converged) throw new Error(`symmetricEigen: Jacobi did not converge in ${maxSweeps} sweeps (n = ${n})`);

  const order = Array.from({ length: n }, (_, i) => i).sort((x, y) => a[y * n + y] - a[x * n + x] || x - y);
  const values = new Float64Array(n);
  const sorted = new Float64Array(n * n);
  order.forEach((from, to) => {
    values[to] = a[from * n + from];
    sorted.set(vectors.subarray(from * n, from * n + n), to * n);
  });
  return { values, vectors: sorted };
}

/**
 * One Jacobi rotation zeroing a[p][q] (Numerical Recipes' formulas): A ← Jᵀ A J, applied to rows p
 * and q and mirrored into the columns, and to rows p and q of the accumulated eigenvectors.
 */
function rotate(a: Float64Array, vectors: Float64Array, n: number, p: number, q: number): void {
  const rowP = p * n;
  const rowQ = q * n;
  const apq = a[rowP + q];
  const app = a[rowP + p];
  const aqq = a[rowQ + q];
  const theta = (aqq - app) / (2 * apq);
  const t = (theta >= 0 ? 1 : -1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
  const c = 1 / Math.sqrt(t * t + 1);
  const s = t * c;
  for (let j = 0; j < n; j++) {
    if (j === p || j === q) continue;
    const apj = a[rowP + j];
    const aqj = a[rowQ + j];
    const newP = c * apj - s * aqj;
    const newQ = s * apj + c * aqj;
    a[rowP + j] = newP;
    a[rowQ + j] = newQ;
    a[j * n + p] = newP;
    a[j * n + q] = newQ;
  }
  a[rowP + p] = app - t * apq;
  a[rowQ + q] = aqq + t * apq;
  a[rowP + q] = a[rowQ + p] = 0;
  for (let j = 0; j < n; j++) {
    const vp = vectors[rowP + j];
    const vq = vectors[rowQ + j];
    vectors[rowP + j] = c * vp - s * vq;
    vectors[rowQ + j] = s * vp + c * vq;
  }
}

/**
 * Eigen-decomposition of a symmetric matrix [n, n] by Householder tridiagonalisation and the
 * implicit QL algorithm (JAMA's tred2/tql2): about 9n³ flops whatever the input, where Jacobi
 * needs several n³-sized sweeps; used for the Rayleigh–Ritz step and for larger dense problems.
 */
export function symmetricEigenTridiagonal(matrix: Float64Array, n: number): SymmetricEigen {
  checkLength("symmetricEigenTridiagonal", matrix, n * n);
  const v = new Float64Array(n * n); // [n, n] row-major; becomes the accumulated transformation
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      const value = 0.5 * (matrix[i * n + j] + matrix[j * n + i]);
      if (!Number.isFinite(value)) throw new Error(`symmetricEigenTridiagonal: entry (${i}, ${j}) is ${matrix[i * n + j]}`);
      v[i * n + j] = value;
    }
  }
  const d = new Float64Array(n); // diagonal, then eigenvalues
  const e = new Float64Array(n); // sub-diagonal
  if (n === 1) return { values: Float64Array.of(v[0]), vectors: Float64Array.of(1) };
  householderTridiagonalize(v, d, e, n);
  const z = transpose(v, n, n); // rows of z are the columns of v, so the QL rotations walk contiguous rows
  implicitQl(z, d, e, n);
  const order = Array.from({ length: n }, (_, i) => i).sort((x, y) => d[y] - d[x] || x - y);
  const values = new Float64Array(n);
  const vectors = new Float64Array(n * n);
  order.forEach((from, to) => {
    values[to] = d[from];
    vectors.set(z.subarray(from * n, from * n + n), to * n);
  });
  return { values, vectors };
}

/** JAMA's tred2: v (symmetric, row-major) becomes Q with A = Q T Qᵀ; d, e get T's diagonal and sub-diagonal (e[0] = 0). */
function householderTridiagonalize(v: Float64Array, d: Float64Array, e: Float64Array, n: number): void {
  for (let j = 0; j < n; j++) d[j] = v[(n - 1) * n + j];
  for (let i = n - 1; i > 0; i--) {
    let scale = 0;
    let h = 0;
    for (let k = 0; k < i; k++) scale += Math.abs(d[k]);
    if (scale === 0) {
      e[i] = d[i - 1];
      for (let j = 0; j < i; j++) {
        d[j] = v[(i - 1) * n + j];
        v[i * n + j] = 0;
        v[j * n + i] = 0;
      }
    } else {
      for (let k = 0; k < i; k++) {
        d[k] /= scale;
        h += d[k] * d[k];
      }
      let f = d[i - 1];
      let g = Math.sqrt(h);
      if (f > 0) g = -g;
      e[i] = scale * g;
      h -= f * g;
      d[i - 1] = f - g;
      for (let j = 0; j < i; j++) e[j] = 0;
      for (let j = 0; j < i; j++) {
        f = d[j];
        v[j * n + i] = f;
        g = e[j] + v[j * n + j] * f;
        for (let k = j + 1; k <= i - 1; k++) {
          g += v[k * n + j] * d[k];
          e[k] += v[k * n + j] * f;
        }
        e[j] = g;
      }
      f = 0;
      for (let j = 0; j < i; j++) {
        e[j] /= h;
        f += e[j] * d[j];
      }
      const hh = f / (h + h);
      for (let j = 0; j < i; j++) e[j] -= hh * d[j];
      for (let j = 0; j < i; j++) {
        f = d[j];
        g = e[j];
        for (let k = j; k <= i - 1; k++) v[k * n + j] -= f * e[k] + g * d[k];
        d[j] = v[(i - 1) * n + j];
        v[i * n + j] = 0;
      }
    }
    d[i] = h;
  }
  // Accumulate the transformations.
  for (let i = 0; i < n - 1; i++) {
    v[(n - 1) * n + i] = v[i * n + i];
    v[i * n + i] = 1;
    const h = d[i + 1];
    if (h !== 0) {
      for (let k = 0; k <= i; k++) d[k] = v[k * n + i + 1] / h;
      for (let j = 0; j <= i; j++) {
        let g = 0;
        for (let k = 0; k <= i; k++) g += v[k * n + i + 1] * v[k * n + j];
        for (let k = 0; k <= i; k++) v[k * n + j] -= g * d[k];
      }
    }
    for (let k = 0; k <= i; k++) v[k * n + i + 1] = 0;
  }
  for (let j = 0; j < n; j++) {
    d[j] = v[(n - 1) * n + j];
    v[(n - 1) * n + j] = 0;
  }
  v[(n - 1) * n + n - 1] = 1;
  e[0] = 0;
}

/** JAMA's tql2 on rows: diagonalises T (d, e) with implicit shifts, rotating the rows of z alike. */
function implicitQl(z: Float64Array, d: Float64Array, e: Float64Array, n: number): void {
  for (let i = 1; i < n; i++) e[i - 1] = e[i];
  e[n - 1] = 0;
  let f = 0;
  let tst1 = 0;
  const eps = 2 ** -52;
  for (let l = 0; l < n; l++) {
    tst1 = Math.max(tst1, Math.abs(d[l]) + Math.abs(e[l]));
    let m = l;
    while (m < n && Math.abs(e[m]) > eps * tst1) m++;
    if (m > l) {
      let iterations = 0;
      do {
        if (++iterations > 60) throw new Error(`symmetricEigenTridiagonal: QL did not converge for eigenvalue ${l} of ${n}`);
        let g = d[l];
        let p = (d[l + 1] - g) / (2 * e[l]);
        let r = hypot(p, 1);
        if (p < 0) r = -r;
        d[l] = e[l] / (p + r);
        d[l + 1] = e[l] * (p + r);
        const dl1 = d[l + 1];
        let h = g - d[l];
        for (let i = l + 2; i < n; i++) d[i] -= h;
        f += h;
        p = d[m];
        let c = 1;
        let c2 = c;
        let c3 = c;
        const el1 = e[l + 1];
        let s = 0;
        let s2 = 0;
        for (let i = m - 1; i >= l; i--) {
          c3 = c2;
          c2 = c;
          s2 = s;
          g = c * e[i];
          h = c * p;
          r = hypot(p, e[i]);
          e[i + 1] = s * r;
          s = e[i] / r;
          c = p / r;
          p = c * d[i] - s * g;
          d[i + 1] = h + s * (c * g + s * d[i]);
          const rowI = i * n;
          const rowNext = (i + 1) * n;
          for (let k = 0; k < n; k++) {
            const next = z[rowNext + k];
            const current = z[rowI + k];
            z[rowNext + k] = s * current + c * next;
            z[rowI + k] = c * current - s * next;
          }
        }
        p = (-s * s2 * c3 * el1 * e[l]) / dl1;
        e[l] = s * p;
        d[l] = c * p;
      } while (Math.abs(e[l]) > eps * tst1);
    }
    d[l] += f;
    e[l] = 0;
  }
}

/** √(a² + b²) without overflow, and the same on every machine (Math.hypot's accuracy is not specified). */
function hypot(a: number, b: number): number {
  const x = Math.abs(a);
  const y = Math.abs(b);
  const big = Math.max(x, y);
  if (big === 0) return 0;
  const small = Math.min(x, y) / big;
  return big * Math.sqrt(1 + small * small);
}

/**
 * Orthonormalises the rows of X [rows, columns] in place, in order, by modified Gram–Schmidt
 * applied twice ("twice is enough": orthogonal to working precision). A row dependent on the rows
 * before it is an error, unless `refill` is given: then it is redrawn from `refill()` and retried.
 */
export function orthonormalizeRows(x: Float64Array, rows: number, columns: number, refill?: () => number): Float64Array {
  checkLength("orthonormalizeRows", x, rows * columns);
  if (rows > columns) throw new Error(`orthonormalizeRows: ${rows} rows cannot be orthonormal in ${columns} dimensions`);
  for (let i = 0; i < rows; i++) {
    const row = i * columns;
    for (let attempt = 0; ; attempt++) {
      const original = Math.sqrt(rowDot(x, i, x, i, columns));
      for (let pass = 0; pass < 2; pass++) {
        for (let j = 0; j < i; j++) {
          const d = rowDot(x, i, x, j, columns);
          const other = j * columns;
          for (let t = 0; t < columns; t++) x[row + t] -= d * x[other + t];
        }
      }
      const norm = Math.sqrt(rowDot(x, i, x, i, columns));
      if (norm > 1e-10 * original && norm > 0) {
        for (let t = 0; t < columns; t++) x[row + t] /= norm;
        break;
      }
      if (refill === undefined || attempt >= 3) {
        throw new Error(`orthonormalizeRows: row ${i} of ${rows} is linearly dependent on the rows before it (‖x‖ ${original} → ${norm})`);
      }
      for (let t = 0; t < columns; t++) x[row + t] = refill();
    }
  }
  return x;
}

/** Largest |(X Xᵀ − I)ᵢⱼ| of X [rows, columns]: how far its rows are from orthonormal. */
export function orthonormalityError(x: Float64Array | Float32Array, rows: number, columns: number): number {
  let worst = 0;
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j <= i; j++) {
      let sum = 0;
      for (let t = 0; t < columns; t++) sum += x[i * columns + t] * x[j * columns + t];
      worst = Math.max(worst, Math.abs(sum - (i === j ? 1 : 0)));
    }
  }
  return worst;
}

/** Lower-triangular L with A = L Lᵀ for symmetric A [n, n], or null when A is not (numerically) positive definite. */
export function cholesky(a: Float64Array, n: number): Float64Array | null {
  checkLength("cholesky", a, n * n);
  const l = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    let diagonal = a[j * n + j];
    for (let t = 0; t < j; t++) diagonal -= l[j * n + t] * l[j * n + t];
    if (!(diagonal > 0)) return null;
    const ljj = Math.sqrt(diagonal);
    l[j * n + j] = ljj;
    for (let i = j + 1; i < n; i++) {
      let sum = a[i * n + j];
      for (let t = 0; t < j; t++) sum -= l[i * n + t] * l[j * n + t];
      l[i * n + j] = sum / ljj;
    }
  }
  return l;
}

/** Inverse of a lower-triangular L [n, n] with a non-zero diagonal (also lower-triangular). */
export function invertLowerTriangular(l: Float64Array, n: number): Float64Array {
  checkLength("invertLowerTriangular", l, n * n);
  const inverse = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    inverse[j * n + j] = 1 / l[j * n + j];
    for (let i = j + 1; i < n; i++) {
      let sum = 0;
      for (let t = j; t < i; t++) sum += l[i * n + t] * inverse[t * n + j];
      inverse[i * n + j] = -sum / l[i * n + i];
    }
  }
  return inverse;
}

/**
 * Orthonormalises the rows of X [rows, columns] (spanning the same space) by Cholesky QR applied
 * twice, with the products on `product`; falls back to Gram–Schmidt when X is too ill-conditioned.
 */
export async function orthonormalizeRowsWith(
  product: MatrixProduct,
  x: Float64Array,
  rows: number,
  columns: number,
  refill?: () => number,
): Promise<Float64Array> {
  let q: Float64Array = Float64Array.from(x);
  for (let i = 0; i < rows; i++) {
    const norm = Math.sqrt(rowDot(q, i, q, i, columns));
    if (!(norm > 0) || !Number.isFinite(norm)) return orthonormalizeRows(Float64Array.from(x), rows, columns, refill);
    for (let t = 0; t < columns; t++) q[i * columns + t] /= norm;
  }
  for (let pass = 0; pass < 2; pass++) {
    const gram = await product(q, rows, columns, transpose(q, rows, columns), rows); // X Xᵀ = L Lᵀ
    const l = cholesky(gram, rows);
    // Cholesky QR is exact in theory but loses orthogonality like κ(X)²·ε; Gram–Schmidt is safe.
    if (l === null || !wellConditioned(l, rows, pass === 0 ? 1e-6 : 0.5)) return orthonormalizeRows(Float64Array.from(x), rows, columns, refill);
    q = await product(invertLowerTriangular(l, rows), rows, rows, q, columns); // L⁻¹ X
  }
  return q;
}

function wellConditioned(l: Float64Array, n: number, ratio: number): boolean {
  let smallest = Infinity;
  let largest = 0;
  for (let i = 0; i < n; i++) {
    smallest = Math.min(smallest, l[i * n + i]);
    largest = Math.max(largest, l[i * n + i]);
  }
  return smallest >= ratio * largest && Number.isFinite(largest);
}

/** Throws, naming `what`, unless `data` has exactly `expected` elements. */
export function checkLength(what: string, data: ArrayLike<number>, expected: number): void {
  if (data.length !== expected) throw new Error(`${what}: has ${data.length} elements, expected ${expected}`);
}
