import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseSafetensors, serializeSafetensors } from "../checkpoint/safetensors.ts";
import { linearName, linearShape, type LinearModule } from "../model/weights.ts";
import { Rng } from "../random.ts";
import type { FloatTensor } from "../tensor.ts";
import { tinyModel } from "../testing/tiny-checkpoints.ts";
import {
  basisFileName,
  basisId,
  canonicalizeSigns,
  computeBasis,
  createOnnxMatrixProduct,
  loadOrComputeBasis,
  parseBasis,
  serializeBasis,
  topRightSingularVectors,
} from "./basis.ts";
import { modelFingerprint } from "./fingerprint.ts";
import { jsMatrixProduct, orthonormalityError, orthonormalizeRows, type MatrixProduct } from "./linear-algebra.ts";
import { createOnnxWeightProducts, weightProductsOf, type WeightProducts } from "./singular-vectors.ts";
import { DEFAULT_TARGET_MODULES, projectionKey, type Basis } from "./types.ts";

/** An independent dense SVD: one-sided (Hestenes) Jacobi on W's columns; right singular vectors as rows. */
function jacobiSvd(w: Float32Array | Float64Array, rows: number, columns: number): { values: number[]; vectors: Float64Array } {
  const b = new Float64Array(rows * columns); // row j = column j of W (rotated as we go)
  for (let i = 0; i < rows; i++) for (let j = 0; j < columns; j++) b[j * rows + i] = w[i * columns + j];
  const v = new Float64Array(columns * columns); // row j = column j of V
  for (let j = 0; j < columns; j++) v[j * columns + j] = 1;
  const dot = (x: Float64Array, i: number, j: number, length: number) => {
    let sum = 0;
    for (let t = 0; t < length; t++) sum += x[i * length + t] * x[j * length + t];
    return sum;
  };
  const turn = (x: Float64Array, p: number, q: number, length: number, c: number, s: number) => {
    for (let t = 0; t < length; t++) {
      const xp = x[p * length + t];
      const xq = x[q * length + t];
      x[p * length + t] = c * xp - s * xq;
      x[q * length + t] = s * xp + c * xq;
    }
  };
  for (let sweep = 0; sweep < 60; sweep++) {
    let rotated = false;
    for (let p = 0; p < columns - 1; p++) {
      for (let q = p + 1; q < columns; q++) {
        const alpha = dot(b, p, p, rows);
        const beta = dot(b, q, q, rows);
        const gamma = dot(b, p, q, rows);
        if (Math.abs(gamma) <= 1e-15 * Math.sqrt(alpha * beta)) continue;
        rotated = true;
        const zeta = (beta - alpha) / (2 * gamma);
        const t = Math.sign(zeta || 1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const c = 1 / Math.sqrt(1 + t * t);
        turn(b, p, q, rows, c, c * t);
        turn(v, p, q, columns, c, c * t);
      }
    }
    if (!rotated) break;
  }
  const norms = Array.from({ length: columns }, (_, j) => Math.sqrt(dot(b, j, j, rows)));
  const order = norms.map((_, j) => j).sort((x, y) => norms[y] - norms[x]);
  const vectors = new Float64Array(columns * columns);
  order.forEach((from, to) => vectors.set(v.subarray(from * columns, (from + 1) * columns), to * columns));
  return { values: order.map((j) => norms[j]), vectors };
}

/** W [out, in] = Σᵢ σᵢ uᵢ vᵢᵀ with random orthonormal u, v; `flip` negates chosen vᵢ (and so W). */
function constructed(out: number, inputs: number, sigma: number[], seed: number, flip: number[] = []) {
  const rng = new Rng(seed);
  const m = sigma.length;
  const u = orthonormalizeRows(
    Float64Array.from({ length: m * out }, () => rng.normal()),
    m,
    out,
  );
  const v = orthonormalizeRows(
    Float64Array.from({ length: m * inputs }, () => rng.normal()),
    m,
    inputs,
  );
  const w = new Float32Array(out * inputs);
  for (let i = 0; i < m; i++) {
    const s = flip.includes(i) ? -sigma[i] : sigma[i];
    for (let a = 0; a < out; a++) for (let b = 0; b < inputs; b++) w[a * inputs + b] += s * u[i * out + a] * v[i * inputs + b];
  }
  return { weight: { shape: [out, inputs], data: w } as FloatTensor, v };
}

function canonicalRows(v: Float64Array, rank: number, columns: number): Float32Array {
  const rows = Float32Array.from(v.subarray(0, rank * columns));
  canonicalizeSigns(rows, rank, columns);
  return rows;
}

function maxDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}

/** max |P_aᵀP_a − P_bᵀP_b|: zero exactly when the rows span the same subspace. */
function projectorDifference(a: ArrayLike<number>, b: ArrayLike<number>, rank: number, n: number): number {
  let worst = 0;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let difference = 0;
      for (let r = 0; r < rank; r++) difference += a[r * n + i] * a[r * n + j] - b[r * n + i] * b[r * n + j];
      worst = Math.max(worst, Math.abs(difference));
    }
  }
  return worst;
}

function expectCanonicalSigns(p: Float32Array, rows: number, columns: number): void {
  for (let i = 0; i < rows; i++) {
    const row = Array.from(p.subarray(i * columns, (i + 1) * columns));
    const largest = Math.max(...row.map(Math.abs));
    expect(row[row.findIndex((x) => Math.abs(x) === largest)]).toBeGreaterThan(0);
  }
}

const distinctSigma = (count: number) => Array.from({ length: count }, (_, i) => 10 * 0.9 ** i);

let product: MatrixProduct;
let disposeProduct: () => Promise<void>;
let weightProducts: WeightProducts & { dispose: () => Promise<void> };
beforeAll(async () => {
  ({ product, dispose: disposeProduct } = await createOnnxMatrixProduct());
  weightProducts = await createOnnxWeightProducts();
});
afterAll(() => Promise.all([disposeProduct(), weightProducts.dispose()]));

describe("canonicalizeSigns", () => {
  it("makes each row's largest-magnitude entry positive, the lowest index winning ties", () => {
    const p = Float32Array.of(0.1, -0.9, 0.2, /**/ -0.5, 0.5, 0.1, /**/ 0.5, -0.5, 0, /**/ 0.3, 0.2, -0.1);
    canonicalizeSigns(p, 4, 3);
    expect(Array.from(p)).toEqual(Array.from(Float32Array.of(-0.1, 0.9, -0.2, 0.5, -0.5, -0.1, 0.5, -0.5, 0, 0.3, 0.2, -0.1)));
  });
});

describe("topRightSingularVectors", () => {
  it.each([
    [40, 24],
    [24, 40],
  ])("on a constructed %i x %i W equals the true top-r right singular vectors (signs canonical)", async (out, inputs) => {
    const { weight, v } = constructed(out, inputs, distinctSigma(Math.min(out, inputs)), out);
    const { rows, singularValues } = await topRightSingularVectors(weight, 8, product);
    expect(maxDifference(rows, canonicalRows(v, 8, inputs))).toBeLessThan(1e-6);
    expect(maxDifference(singularValues, distinctSigma(8))).toBeLessThan(1e-5);
    expect(orthonormalityError(rows, 8, inputs)).toBeLessThan(1e-5);
    expectCanonicalSigns(rows, 8, inputs);
  });

  it.each([
    [300, 200],
    [200, 300],
  ])(
    "subspace iteration on a constructed %i x %i W equals the true vectors, on onnxruntime (MatMul, and Gram graphs from float32) and in JS",
    async (out, inputs) => {
      // Distinct, with gaps wide enough that rounding W to float32 moves its vectors by < 1e-7.
      const sigma = Array.from({ length: 200 }, (_, i) => 3 * 0.97 ** i);
      const { weight, v } = constructed(out, inputs, sigma, 9);
      const expected = canonicalRows(v, 16, inputs);
      for (const via of [product, jsMatrixProduct, weightProducts]) {
        const { rows } = await topRightSingularVectors(weight, 16, via, { method: "subspace" });
        expect(maxDifference(rows, expected)).toBeLessThan(1e-6);
      }
    },
  );

  it("agrees with an independent dense SVD on random matrices (dense spectrum)", async () => {
    const rng = new Rng(77);
    for (const [out, inputs, rank, method] of [
      [60, 50, 10, "auto"],
      [50, 60, 10, "auto"],
      [260, 180, 16, "subspace"],
      [180, 260, 16, "subspace"],
    ] as const) {
      const weight: FloatTensor = { shape: [out, inputs], data: Float32Array.from({ length: out * inputs }, () => rng.normal()) };
      const { rows, singularValues } = await topRightSingularVectors(weight, rank, product, { method });
      const svd = jacobiSvd(weight.data, out, inputs);
      expect(projectorDifference(rows, svd.vectors, rank, inputs)).toBeLessThan(1e-6);
      expect(maxDifference(singularValues, svd.values.slice(0, rank))).toBeLessThan(1e-9 * svd.values[0]);
      expect(orthonormalityError(rows, rank, inputs)).toBeLessThan(1e-5);
    }
  });

  it("gives the same canonical P when W's singular vectors change sign", async () => {
    const sigma = distinctSigma(24);
    for (const [out, inputs, method] of [
      [40, 24, "auto"],
      [24, 40, "auto"],
      [220, 150, "subspace"],
    ] as const) {
      const first = constructed(out, inputs, method === "subspace" ? Array.from({ length: 150 }, (_, i) => 2 * 0.97 ** i) : sigma, 5);
      const flipped = constructed(out, inputs, method === "subspace" ? Array.from({ length: 150 }, (_, i) => 2 * 0.97 ** i) : sigma, 5, [0, 2, 3, 7]);
      const a = await topRightSingularVectors(first.weight, 12, product, { method });
      const b = await topRightSingularVectors(flipped.weight, 12, product, { method });
      expect(maxDifference(flipped.weight.data.subarray(0, 5), first.weight.data.subarray(0, 5))).toBeGreaterThan(0); // a different W
      expect(maxDifference(a.rows, b.rows)).toBeLessThan(1e-6);
      expectCanonicalSigns(a.rows, 12, inputs);
    }
  });

  it("has the rank prefix property: rank 8 is the first 8 rows of rank 16", async () => {
    for (const [out, inputs, method] of [
      [40, 24, "auto"],
      [24, 40, "auto"],
      [250, 180, "subspace"],
    ] as const) {
      const sigma = Array.from({ length: Math.min(out, inputs) }, (_, i) => 4 - (3 * i) / Math.min(out, inputs));
      const { weight } = constructed(out, inputs, sigma, 21);
      const small = await topRightSingularVectors(weight, 8, product, { method });
      const large = await topRightSingularVectors(weight, 16, product, { method });
      expect(maxDifference(small.rows, large.rows.subarray(0, 8 * inputs))).toBeLessThan(1e-6);
    }
  });

  it("handles a rank-deficient W (rank below the requested rank)", async () => {
    const { weight } = constructed(30, 200, [5, 4, 3], 4); // rank 3, asked for 8: the W Wᵀ shortcut cannot be used
    const { rows, singularValues } = await topRightSingularVectors(weight, 8, product);
    expect(orthonormalityError(rows, 8, 200)).toBeLessThan(1e-5);
    expect(maxDifference(singularValues.subarray(0, 3), [5, 4, 3])).toBeLessThan(1e-5);
    expect(Math.max(...singularValues.subarray(3))).toBeLessThan(1e-5);
    // An all-zero W: every unit vector is a singular vector; the answer must still be a valid P.
    for (const [out, inputs] of [
      [30, 200],
      [200, 150],
    ]) {
      const zero = await topRightSingularVectors({ shape: [out, inputs], data: new Float32Array(out * inputs) }, 6, product);
      expect(orthonormalityError(zero.rows, 6, inputs)).toBeLessThan(1e-5);
      expectCanonicalSigns(zero.rows, 6, inputs);
      expect(Array.from(zero.singularValues)).toEqual([0, 0, 0, 0, 0, 0]);
    }
  });

  it("names the weight when it holds a non-finite value or the rank is too large", async () => {
    const weight: FloatTensor = { shape: [3, 4], data: Float32Array.of(1, 2, 3, 4, 5, NaN, 7, 8, 9, 10, 11, 12) };
    await expect(topRightSingularVectors(weight, 2, product, { label: "layers.1.q" })).rejects.toThrow(/layers\.1\.q: element 5 \(row 1, column 1\) is NaN/);
    await expect(topRightSingularVectors({ shape: [3, 4], data: new Float32Array(12) }, 4, product)).rejects.toThrow(
      /rank 4 must be an integer in \[1, min\(out, in\) = 3\]/,
    );
  });
});

describe("onnxruntime weight products", () => {
  it("widen a float32 W inside the graph and match the float64 products of JS: W Wᵀ, WᵀW and U W", async () => {
    const rng = new Rng(31);
    const [out, inputs, count] = [37, 53, 5];
    const w = Float32Array.from({ length: out * inputs }, () => rng.normal());
    const u = Float64Array.from({ length: count * out }, () => rng.normal());
    const reference = weightProductsOf(jsMatrixProduct);
    for (const side of ["rows", "columns"] as const) {
      const size = side === "rows" ? out : inputs;
      const onnx = await weightProducts.gram(w, out, inputs, side);
      const js = await reference.gram(w, out, inputs, side);
      expect(onnx).toHaveLength(size * size);
      expect(maxDifference(onnx, js)).toBeLessThan(1e-12 * Math.max(...js.map(Math.abs)));
    }
    const left = await weightProducts.leftTimes(u, count, w, out, inputs);
    expect(left).toHaveLength(count * inputs);
    expect(maxDifference(left, await reference.leftTimes(u, count, w, out, inputs))).toBeLessThan(1e-12 * out);
  });
});

describe("computeBasis on tiny llama-gqa", () => {
  const { config, weights } = tinyModel("llama-gqa");
  let basis: Basis;
  beforeAll(async () => {
    basis = await computeBasis(config, weights, { rMax: 16 });
  });

  it("gives every layer and module an orthonormal, sign-canonical P [rMax, in] spanning W's top singular subspace", () => {
    expect(basis.rMax).toBe(16);
    expect(basis.numLayers).toBe(2);
    expect(basis.targetModules).toEqual([...DEFAULT_TARGET_MODULES]);
    expect(basis.baseFingerprint).toBe(modelFingerprint(config, weights));
    expect(basis.projections.size).toBe(14);
    for (let layer = 0; layer < 2; layer++) {
      for (const module of DEFAULT_TARGET_MODULES) {
        const [out, inputs] = linearShape(config, module);
        const p = basis.projections.get(projectionKey(layer, module))!;
        expect(p.shape).toEqual([16, inputs]);
        expect(orthonormalityError(p.data, 16, inputs)).toBeLessThan(1e-5);
        expectCanonicalSigns(p.data, 16, inputs);
        const svd = jacobiSvd(weights.get(linearName(layer, module))!.data, out, inputs);
        expect(projectorDifference(p.data, svd.vectors, 16, inputs)).toBeLessThan(1e-5);
      }
    }
  });

  it("is deterministic: same weights give the same id, other weights or fingerprints another", async () => {
    const again = await computeBasis(config, weights, { rMax: 16 });
    expect(again.id).toBe(basis.id);
    expect(basisId(again)).toBe(basis.id);
    expect(basis.id).toMatch(/^[0-9a-f]{64}$/);
    const other = tinyModel("llama-gqa", 8);
    expect((await computeBasis(other.config, other.weights, { rMax: 16 })).id).not.toBe(basis.id);
    expect(basisId({ ...basis, baseFingerprint: "another" })).not.toBe(basis.id);
  });

  it("takes target modules in any order and stores them canonically", async () => {
    const subset = await computeBasis(config, weights, { rMax: 4, targetModules: ["v_proj", "q_proj"] });
    expect(subset.targetModules).toEqual(["q_proj", "v_proj"]);
    expect([...subset.projections.keys()]).toEqual(["0.q_proj", "0.v_proj", "1.q_proj", "1.v_proj"]);
    await expect(computeBasis(config, weights, { rMax: 4, targetModules: ["q_proj", "qq_proj" as LinearModule] })).rejects.toThrow(
      /unknown target module "qq_proj"/,
    );
  });

  it("refuses an rMax larger than a targeted weight allows, naming the module", async () => {
    // k_proj is [32, 64] here (2 KV heads of 16).
    await expect(computeBasis(config, weights, { rMax: 33 })).rejects.toThrow(
      /rMax 33 exceeds the rank limit of k_proj: its weight is \[32, 64\], so at most min\(out, in\) = 32/,
    );
    await expect(computeBasis(config, weights, { rMax: 33, targetModules: ["q_proj"] })).resolves.toBeDefined();
  });

  it("round-trips through serializeBasis / parseBasis with the same id", () => {
    const parsed = parseBasis(serializeBasis(basis), "basis.safetensors");
    expect(parsed.id).toBe(basis.id);
    expect(parsed.targetModules).toEqual(basis.targetModules);
    expect(parsed.baseFingerprint).toBe(basis.baseFingerprint);
    for (const [key, p] of basis.projections) expect(parsed.projections.get(key)!.data).toEqual(p.data);
  });

  it("refuses a tampered file: one flipped byte of a P no longer matches basis_id", () => {
    const bytes = serializeBasis(basis);
    const headerLength = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
    const tampered = Uint8Array.from(bytes);
    tampered[8 + headerLength + 4 * 1000] ^= 0x01; // lowest mantissa byte of one float32
    expect(parseBasis(bytes, "basis.safetensors").id).toBe(basis.id);

    // Read as plain safetensors, the edit is one value of one P, off by one unit in the last place:
    // metadata, shapes and every other value as written, the row still of unit norm.
    const original = parseSafetensors(bytes, "original");
    const edited = parseSafetensors(tampered, "edited");
    expect(edited.metadata).toEqual(original.metadata);
    const changes: { tensor: string; before: number; after: number }[] = [];
    for (const [name, tensor] of original.tensors) {
      const after = edited.tensors.get(name)!;
      expect(after.shape).toEqual(tensor.shape);
      tensor.data.forEach((value, i) => {
        if (after.data[i] !== value) changes.push({ tensor: name, before: Number(value), after: Number(after.data[i]) });
      });
    }
    expect(changes).toHaveLength(1);
    expect(changes[0].tensor).toMatch(/^pica\.basis\.layers\.\d+\.[a-z]+_proj$/);
    expect(Math.abs(changes[0].after - changes[0].before)).toBeLessThanOrEqual(Math.abs(changes[0].before) * 2 ** -22);

    // Only the content hash can catch that: it names the id the file declares and a different one.
    const message = (() => {
      try {
        parseBasis(tampered, "tampered.safetensors");
      } catch (error) {
        return (error as Error).message;
      }
      return "parsed without error";
    })();
    const match = /tampered\.safetensors: basis_id ([0-9a-f]{64}) does not match the contents, which hash to ([0-9a-f]{64})/.exec(message);
    expect(match, message).not.toBeNull();
    expect(match![1]).toBe(basis.id);
    expect(match![2]).not.toBe(basis.id);
  });

  it("refuses files with wrong metadata or values", () => {
    const { tensors, metadata } = fileParts(basis);
    const broken = (edit: (m: Record<string, string>, t: Map<string, FloatTensor>) => void) => {
      const m = { ...metadata };
      const t = new Map([...tensors].map(([k, v]) => [k, { shape: v.shape, data: Float32Array.from(v.data) }]));
      edit(m, t);
      return serializeSafetensors(t, m);
    };
    expect(() =>
      parseBasis(
        broken((m) => (m.format = "pica-adapter")),
        "f",
      ),
    ).toThrow(/f: format is "pica-adapter", expected "pica-basis"/);
    expect(() =>
      parseBasis(
        broken((m) => (m.format_version = "2")),
        "f",
      ),
    ).toThrow(/format_version is "2"/);
    expect(() =>
      parseBasis(
        broken((m) => (m.r_max = "8")),
        "f",
      ),
    ).toThrow(/has shape \[16, 64\], expected \[8, in ≥ 8\]/);
    expect(() =>
      parseBasis(
        broken((m) => (m.target_modules = '["q_proj"]')),
        "f",
      ),
    ).toThrow(/unexpected tensor "pica\.basis\.layers\.0\.down_proj" \(the file declares 2 layers × \["q_proj"\]\)/);
    expect(() =>
      parseBasis(
        broken((_, t) => t.delete("pica.basis.layers.1.down_proj")),
        "f",
      ),
    ).toThrow(/tensor "pica\.basis\.layers\.1\.down_proj" is missing/);
    expect(() =>
      parseBasis(
        broken((_, t) => (t.get("pica.basis.layers.0.q_proj")!.data[3] = Infinity)),
        "f",
      ),
    ).toThrow(/row 0 column 3 is Infinity/);
    expect(() =>
      parseBasis(
        broken((_, t) =>
          t
            .get("pica.basis.layers.0.o_proj")!
            .data.subarray(0, 64)
            .forEach((x, i, row) => (row[i] = -x)),
        ),
        "f",
      ),
    ).toThrow(/row 0 is not sign-canonical/);
  });
});

describe("loadOrComputeBasis", () => {
  let directory: string;
  beforeAll(async () => {
    directory = await mkdtemp(join(tmpdir(), "pica-basis-"));
  });
  afterAll(() => rm(directory, { recursive: true, force: true }));

  it("computes and writes the basis once, then loads it", async () => {
    const { config, weights } = tinyModel("llama-gqa");
    const progress: [number, number][] = [];
    const first = await loadOrComputeBasis(directory, config, weights, { rMax: 8 }, (done, total) => progress.push([done, total]));
    expect(first.computed).toBe(true);
    expect(progress.at(-1)).toEqual([14, 14]);
    expect(progress).toHaveLength(14);
    const stored = parseBasis(await readFile(join(directory, basisFileName(8))), "stored");
    expect(stored.id).toBe(first.basis.id);

    const second = await loadOrComputeBasis(directory, config, weights, { rMax: 8 });
    expect(second.computed).toBe(false);
    expect(second.basis.id).toBe(first.basis.id);
    expect(second.seconds).toBeGreaterThanOrEqual(0);
  });

  it("refuses a basis file of another base model, naming both fingerprints", async () => {
    const mine = tinyModel("llama-gqa");
    const other = tinyModel("llama-gqa", 99);
    await loadOrComputeBasis(directory, other.config, other.weights, { rMax: 4 });
    const otherFingerprint = modelFingerprint(other.config, other.weights);
    const myFingerprint = modelFingerprint(mine.config, mine.weights);
    await expect(loadOrComputeBasis(directory, mine.config, mine.weights, { rMax: 4 })).rejects.toThrow(
      new RegExp(`another base model: its base_fingerprint is ${otherFingerprint}, this model's is ${myFingerprint}`),
    );
  });

  it("refuses a stored basis with other target modules rather than overwrite it", async () => {
    const { config, weights } = tinyModel("llama-gqa");
    await loadOrComputeBasis(directory, config, weights, { rMax: 2, targetModules: ["q_proj"] });
    await expect(loadOrComputeBasis(directory, config, weights, { rMax: 2 })).rejects.toThrow(/covers target modules \["q_proj"\], but \["q_proj","k_proj",/);
  });

  it("refuses a corrupted stored file", async () => {
    const { config, weights } = tinyModel("llama-gqa");
    const path = join(directory, basisFileName(3));
    await loadOrComputeBasis(directory, config, weights, { rMax: 3 });
    const bytes = await readFile(path);
    bytes[bytes.length - 1] ^= 0x01;
    await writeFile(path, bytes);
    await expect(loadOrComputeBasis(directory, config, weights, { rMax: 3 })).rejects.toThrow(/does not match the contents/);
  });
});

/** The tensors and metadata serializeBasis writes, to edit into broken files. */
function fileParts(basis: Basis): { tensors: Map<string, FloatTensor>; metadata: Record<string, string> } {
  const file = parseSafetensors(serializeBasis(basis), "<basis>");
  const tensors = new Map<string, FloatTensor>();
  for (const [name, tensor] of file.tensors) tensors.set(name, { shape: tensor.shape, data: tensor.data as Float32Array });
  return { tensors, metadata: file.metadata };
}
