import { describe, expect, it } from "vitest";
import { Rng } from "../random.ts";
import {
  jsMatrixProduct,
  multiply,
  orthonormalityError,
  orthonormalizeRows,
  orthonormalizeRowsWith,
  symmetricEigen,
  symmetricEigenTridiagonal,
  transpose,
  type SymmetricEigen,
} from "./linear-algebra.ts";
import { topEigenpairs } from "./top-eigenpairs.ts";

function randomMatrix(rng: Rng, rows: number, columns: number, scale = 1): Float64Array {
  const m = new Float64Array(rows * columns);
  for (let i = 0; i < m.length; i++) m[i] = scale * rng.normal();
  return m;
}

function randomSymmetric(rng: Rng, n: number): Float64Array {
  const a = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j <= i; j++) a[i * n + j] = a[j * n + i] = rng.normal();
  return a;
}

/** Q diag(values) Qᵀ with a random orthogonal Q: a symmetric matrix with known eigenpairs. */
function withSpectrum(rng: Rng, values: number[]): { a: Float64Array; vectors: Float64Array } {
  const n = values.length;
  const q = orthonormalizeRows(randomMatrix(rng, n, n), n, n); // rows: eigenvectors
  const scaled = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) scaled[i * n + j] = values[i] * q[i * n + j];
  return { a: multiply(transpose(q, n, n), n, n, scaled, n), vectors: q }; // Qᵀ-rows form: Σ λᵢ qᵢ qᵢᵀ
}

function gram(w: Float64Array, rows: number, columns: number): Float64Array {
  return multiply(transpose(w, rows, columns), columns, rows, w, columns);
}

function maxAbs(a: ArrayLike<number>): number {
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]));
  return worst;
}

/** max over pairs of |A v − λ v|, for eigenvectors stored as rows. */
function eigenResidual(a: Float64Array, n: number, eigen: SymmetricEigen, count = eigen.values.length): number {
  const av = multiply(eigen.vectors.subarray(0, count * n) as Float64Array, count, n, a, n); // rows vᵢᵀA = (A vᵢ)ᵀ
  let worst = 0;
  for (let i = 0; i < count; i++) for (let t = 0; t < n; t++) worst = Math.max(worst, Math.abs(av[i * n + t] - eigen.values[i] * eigen.vectors[i * n + t]));
  return worst;
}

/** Distance between two unit vectors up to sign. */
function signlessDistance(a: Float64Array, i: number, b: Float64Array, j: number, n: number): number {
  let plus = 0;
  let minus = 0;
  for (let t = 0; t < n; t++) {
    plus = Math.max(plus, Math.abs(a[i * n + t] - b[j * n + t]));
    minus = Math.max(minus, Math.abs(a[i * n + t] + b[j * n + t]));
  }
  return Math.min(plus, minus);
}

describe("multiply and transpose", () => {
  it("multiply a 2x3 by a 3x2 and transposes", () => {
    const a = Float64Array.of(1, 2, 3, 4, 5, 6);
    const b = Float64Array.of(7, 8, 9, 10, 11, 12);
    expect(Array.from(multiply(a, 2, 3, b, 2))).toEqual([58, 64, 139, 154]);
    expect(Array.from(transpose(a, 2, 3))).toEqual([1, 4, 2, 5, 3, 6]);
    expect(() => multiply(a, 2, 2, b, 2)).toThrow(/multiply: A: has 6 elements, expected 4/);
  });
});

describe.each([
  ["symmetricEigen (Jacobi)", symmetricEigen],
  ["symmetricEigenTridiagonal (Householder + QL)", symmetricEigenTridiagonal],
] as const)("%s", (_, eigen) => {
  it.each([1, 2, 7, 40, 97])("decomposes a random symmetric matrix of size %i: A v = λ v, orthonormal vectors, descending values", (n) => {
    const rng = new Rng(n);
    const a = randomSymmetric(rng, n);
    const result = eigen(a, n);
    const norm = Math.sqrt(a.reduce((sum, x) => sum + x * x, 0));
    expect(eigenResidual(a, n, result)).toBeLessThan(1e-13 * norm);
    expect(orthonormalityError(result.vectors, n, n)).toBeLessThan(1e-13);
    for (let i = 1; i < n; i++) expect(result.values[i]).toBeLessThanOrEqual(result.values[i - 1]);
    let trace = 0;
    for (let i = 0; i < n; i++) trace += a[i * n + i];
    expect(result.values.reduce((s, x) => s + x, 0)).toBeCloseTo(trace, 10);
  });

  it("recovers a known spectrum, repeated eigenvalues included", () => {
    const rng = new Rng(11);
    const values = [9, 5, 5, 5, 2, 1, 0, 0, -3, -4];
    const { a, vectors } = withSpectrum(rng, values);
    const n = values.length;
    const result = eigen(a, n);
    expect(maxAbs(Array.from(result.values, (v, i) => v - values[i]))).toBeLessThan(1e-12);
    expect(eigenResidual(a, n, result)).toBeLessThan(1e-12);
    // Simple eigenvalues: the vector itself is determined up to sign.
    for (const i of [0, 4, 5, 8, 9]) expect(signlessDistance(result.vectors, i, vectors, i, n)).toBeLessThan(1e-10);
  });

  it("handles the zero matrix and a diagonal one", () => {
    const zero = eigen(new Float64Array(9), 3);
    expect(Array.from(zero.values)).toEqual([0, 0, 0]);
    expect(orthonormalityError(zero.vectors, 3, 3)).toBe(0);
    const diagonal = eigen(Float64Array.of(1, 0, 0, 0, 3, 0, 0, 0, 2), 3);
    expect(Array.from(diagonal.values)).toEqual([3, 2, 1]);
    expect(
      maxAbs(
        Array.from(diagonal.vectors)
          .map(Math.abs)
          .map((v, i) => v - [0, 1, 0, 0, 0, 1, 1, 0, 0][i]),
      ),
    ).toBe(0);
  });

  it("refuses non-finite input", () => {
    expect(() => eigen(Float64Array.of(1, NaN, NaN, 1), 2)).toThrow(/entry \(0, 1\) is NaN/);
  });
});

describe("orthonormalizeRows", () => {
  it("makes rows orthonormal, keeps their span and order", () => {
    const rng = new Rng(3);
    const x = randomMatrix(rng, 6, 20);
    const q = orthonormalizeRows(Float64Array.from(x), 6, 20);
    expect(orthonormalityError(q, 6, 20)).toBeLessThan(1e-15);
    // Row 0 is row 0 normalised; every original row lies in the span of the result.
    const norm0 = Math.sqrt(x.subarray(0, 20).reduce((s, v) => s + v * v, 0));
    for (let t = 0; t < 20; t++) expect(q[t]).toBeCloseTo(x[t] / norm0, 14);
    const coefficients = multiply(x, 6, 20, transpose(q, 6, 20), 6);
    const rebuilt = multiply(coefficients, 6, 6, q, 20);
    expect(maxAbs(rebuilt.map((v, i) => v - x[i]))).toBeLessThan(1e-13);
  });

  it("throws on a dependent row unless given a refill", () => {
    const x = Float64Array.of(1, 2, 3, 2, 4, 6, 0, 1, 0);
    expect(() => orthonormalizeRows(Float64Array.from(x), 3, 3)).toThrow(/row 1 of 3 is linearly dependent/);
    const rng = new Rng(5);
    const q = orthonormalizeRows(Float64Array.from(x), 3, 3, () => rng.normal());
    expect(orthonormalityError(q, 3, 3)).toBeLessThan(1e-15);
  });

  it("Cholesky QR (products injected) orthonormalises well- and ill-conditioned blocks", async () => {
    const rng = new Rng(8);
    const x = randomMatrix(rng, 12, 50);
    const q = await orthonormalizeRowsWith(jsMatrixProduct, x, 12, 50);
    expect(orthonormalityError(q, 12, 50)).toBeLessThan(1e-14);
    // Rows nearly parallel (κ ~ 1e9): Cholesky QR would lose orthogonality; the fallback must not.
    const nearlyDependent = Float64Array.from(x);
    for (let i = 1; i < 12; i++) for (let t = 0; t < 50; t++) nearlyDependent[i * 50 + t] = x[t] + 1e-9 * x[i * 50 + t];
    const q2 = await orthonormalizeRowsWith(jsMatrixProduct, nearlyDependent, 12, 50);
    expect(orthonormalityError(q2, 12, 50)).toBeLessThan(1e-14);
  });
});

describe("topEigenpairs", () => {
  // WᵀW of a random W: a dense Marchenko–Pastur spectrum, the slow case for subspace iteration.
  const rng = new Rng(2024);
  const n = 200;
  const w = randomMatrix(rng, 300, n, 1 / Math.sqrt(n));
  const g = gram(w, 300, n);
  const dense = symmetricEigen(g, n);

  it("subspace iteration matches the dense decomposition on a dense spectrum", async () => {
    const count = 12;
    const result = await topEigenpairs(g, n, count, jsMatrixProduct, { method: "subspace" });
    expect(result.method).toBe("subspace");
    expect(result.maxResidual).toBeLessThanOrEqual(1e-10);
    expect(eigenResidual(g, n, result)).toBeLessThan(1e-10 * dense.values[0]);
    expect(orthonormalityError(result.vectors, count, n)).toBeLessThan(1e-13);
    for (let i = 0; i < count; i++) {
      expect(Math.abs(result.values[i] - dense.values[i])).toBeLessThan(1e-12 * dense.values[0]);
      const gap = Math.min(dense.values[i] - dense.values[i + 1], i > 0 ? dense.values[i - 1] - dense.values[i] : Infinity);
      expect(signlessDistance(result.vectors, i, dense.vectors, i, n)).toBeLessThan((1e-9 * dense.values[0]) / gap);
    }
  });

  it("chooses the dense method for small matrices and on request", async () => {
    const small = gram(randomMatrix(new Rng(1), 30, 20), 30, 20);
    expect((await topEigenpairs(small, 20, 5, jsMatrixProduct)).method).toBe("dense");
    const forced = await topEigenpairs(g, n, 4, jsMatrixProduct, { method: "dense" });
    expect(forced.method).toBe("dense");
    expect(maxAbs(Array.from(forced.values, (v, i) => v - dense.values[i]))).toBeLessThan(1e-12);
  });

  it("converges on a rank-deficient matrix (rank below count)", async () => {
    const rank = 5;
    const low = multiply(transpose(randomMatrix(new Rng(6), rank, n), rank, n), n, rank, randomMatrix(new Rng(7), rank, n), n);
    const symmetric = multiply(transpose(low, n, n), n, n, low, n); // LᵀL, rank 5
    const result = await topEigenpairs(symmetric, n, 12, jsMatrixProduct, { method: "subspace" });
    expect(result.method).toBe("subspace");
    expect(orthonormalityError(result.vectors, 12, n)).toBeLessThan(1e-12);
    expect(eigenResidual(symmetric, n, result)).toBeLessThan(1e-10 * result.values[0]);
    const reference = symmetricEigen(symmetric, n);
    for (let i = 0; i < rank; i++) expect(signlessDistance(result.vectors, i, reference.vectors, i, n)).toBeLessThan(1e-8);
    for (let i = rank; i < 12; i++) expect(Math.abs(result.values[i])).toBeLessThan(1e-10 * result.values[0]);
  });

  it("falls back to a dense decomposition when it does not converge, or throws when n is too large for that", async () => {
    const fallback = await topEigenpairs(g, n, 8, jsMatrixProduct, { method: "subspace", maxIterations: 1 });
    expect(fallback.method).toBe("dense-fallback");
    expect(maxAbs(Array.from(fallback.values, (v, i) => v - dense.values[i]))).toBeLessThan(1e-12);
    await expect(
      topEigenpairs(g, n, 8, jsMatrixProduct, { method: "subspace", maxIterations: 1, denseFallbackLimit: 100, label: "test matrix" }),
    ).rejects.toThrow(/test matrix: subspace iteration did not converge in 1 Rayleigh–Ritz steps .* too large for the dense fallback/);
  });

  it("locks converged pairs: later steps multiply fewer rows than the full block", async () => {
    const count = 12;
    const blockSize = count + 16;
    const result = await topEigenpairs(g, n, count, jsMatrixProduct, { method: "subspace" });
    expect(result.products).toBeGreaterThan(0);
    expect(result.productRows).toBeLessThan(result.products * blockSize);
    expect(result.productRows).toBeGreaterThan(result.products * count); // the unconverged rows were still being filtered
  });

  it("is deterministic: the same matrix gives the same pairs, bit for bit", async () => {
    const first = await topEigenpairs(g, n, 10, jsMatrixProduct, { method: "subspace" });
    const second = await topEigenpairs(g, n, 10, jsMatrixProduct, { method: "subspace" });
    expect(Array.from(second.values)).toEqual(Array.from(first.values));
    expect(Array.from(second.vectors)).toEqual(Array.from(first.vectors));
    const otherSeed = await topEigenpairs(g, n, 10, jsMatrixProduct, { method: "subspace", seed: 5 });
    expect(maxAbs(Array.from(otherSeed.values, (v, i) => v - first.values[i]))).toBeLessThan(1e-12 * first.values[0]);
  });

  it("handles a repeated eigenvalue that straddles the requested count", async () => {
    // λ = 5 (×3), then 4 (×5): the top 6 take three of the five 4s, any three of that eigenspace.
    const values = Array.from({ length: n }, (_, i) => (i < 3 ? 5 : i < 8 ? 4 : 3 * 0.98 ** i));
    const { a, vectors } = withSpectrum(new Rng(12), values);
    const result = await topEigenpairs(a, n, 6, jsMatrixProduct, { method: "subspace" });
    expect(result.method).toBe("subspace");
    expect(maxAbs(Array.from(result.values, (v, i) => v - values[i]))).toBeLessThan(1e-12);
    expect(eigenResidual(a, n, result)).toBeLessThan(1e-10 * 5);
    expect(orthonormalityError(result.vectors, 6, n)).toBeLessThan(1e-13);
    // The three λ = 5 vectors span exactly the λ = 5 eigenspace: their projection onto it has norm 1.
    for (let i = 0; i < 3; i++) {
      const along = multiply(result.vectors.subarray(i * n, (i + 1) * n) as Float64Array, 1, n, transpose(vectors.subarray(0, 3 * n) as Float64Array, 3, n), 3);
      expect(Math.abs(Math.hypot(...along) - 1)).toBeLessThan(1e-12);
    }
  });

  it("refuses a count outside [1, n]", async () => {
    await expect(topEigenpairs(g, n, 0, jsMatrixProduct)).rejects.toThrow(/count 0 must be an integer in \[1, 200\]/);
    await expect(topEigenpairs(g, n, 201, jsMatrixProduct)).rejects.toThrow(/count 201/);
  });
});
