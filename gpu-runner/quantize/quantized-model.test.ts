import { mkdir } from "node:fs/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LlamaEngine } from "../engine/llama-engine.ts";
import { GraphBuilder } from "../graph/builder.ts";
import { referenceForward } from "../model/reference.ts";
import { openWeightFile, weightCacheDirectory, writeWeightFile } from "../model/weight-file.ts";
import { computeBasis } from "../pica/basis.ts";
import { mergeIntoWeights } from "../pica/merge-weights.ts";
import type { Basis, PicaAdapter } from "../pica/types.ts";
import { Rng } from "../random.ts";
import { OnnxSession } from "../runtime/onnx-session.ts";
import { expectRowsEqualAlone, type BatchRow } from "../testing/batch-rows.ts";
import { maxAbsDiff, syntheticTokens } from "../testing/numeric.ts";
import { randomAdapter } from "../testing/random-adapters.ts";
import { scratchDirectories } from "../testing/scratch-directories.ts";
import { tinyModel } from "../testing/tiny-checkpoints.ts";
import { codeAt, dequantizeMatrix, quantizationOf, quantizeMatrix, type Quantization, type WeightBits } from "./block-format.ts";
import { dequantizedWeights } from "./dequantized-weights.ts";
import { dequantizeRows, gatherQuantizedRows, quantizedMatMul, quantizedShapes, scalesByRow, type QuantizedValue } from "./quantized-graph.ts";

function randomMatrix(rows: number, cols: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: rows * cols }, () => rng.normal() * (1 + rng.uniform()));
}

describe("the block format", () => {
  it("codes a hand-worked 4-bit block as ggml's Q4_0 does", () => {
    // m = −2 (largest magnitude, sign kept): d = m / −8 = 0.25, code = min(15, trunc(x/d + 8.5)).
    const x = new Float32Array(32);
    x.set([-2, 1, 0.3, 0.12, 1.9]);
    const q = quantizeMatrix(x, 1, 32, 4, 32);
    expect(q.scales[0]).toBe(0.25);
    expect([0, 1, 2, 3, 4, 5].map((j) => codeAt(q, 0, j))).toEqual([0, 12, 9, 8, 15, 8]);
    expect(q.data[0]).toBe(0 | (12 << 4));
    expect(Array.from(dequantizeMatrix(q).subarray(0, 6))).toEqual([-2, 1, 0.25, 0, 1.75, 0]);
  });

  it("codes a hand-worked 8-bit block as ggml's Q8_0 does, rounding half away from zero", () => {
    // amax = 127·0.5: d = 0.5; x/d = −2.5 → −3, 2.5 → 3, 63.5 → 127 (codes + 128).
    const x = Float32Array.of(-1.25, 1.25, 63.5, 0, ...new Array(28).fill(0));
    const q = quantizeMatrix(x, 1, 32, 8, 32);
    expect(q.scales[0]).toBe(0.5);
    expect([0, 1, 2, 3].map((j) => codeAt(q, 0, j))).toEqual([125, 131, 255, 128]);
  });

  it.each([4, 8] as const)(
    "%i bits: each value within half a step of its block's scale (4 bits: a step beyond +7), and quantizing again changes nothing",
    (bits) => {
      const [rows, cols] = [7, 112]; // 112 = 3.5 blocks of 32: the last block is padded
      const x = randomMatrix(rows, cols, bits);
      const q = quantizeMatrix(x, rows, cols, bits, 32);
      const y = dequantizeMatrix(q);
      for (let r = 0; r < rows; r++) {
        for (let c = 0; c < cols; c++) {
          const scale = Math.abs(q.scales[r * 4 + Math.floor(c / 32)]); // 4-bit scales carry the sign of the block's largest value
          // float16 scales move the grid by at most 2⁻¹¹ of a step per code: 8 codes for 4 bits, 127 for 8
          const slack = scale * (bits === 4 ? 8 : 127) * 2 ** -10;
          // 4 bits reach −8 steps on the side of the block's largest value but only +7 on the other
          const step = bits === 4 && Math.abs(x[r * cols + c]) > 7 * scale ? scale : scale / 2;
          expect(Math.abs(x[r * cols + c] - y[r * cols + c])).toBeLessThanOrEqual(step + slack);
        }
      }
      const again = quantizeMatrix(y, rows, cols, bits, 32);
      expect(dequantizeMatrix(again)).toEqual(y);
    },
  );

  it("rejects block sizes MatMulNBits cannot run", () => {
    expect(() => quantizationOf("int4", 24)).toThrow(/block size must be one of 16, 32, 64, 128, 256/);
    expect(quantizationOf("f32")).toBeNull();
    expect(quantizationOf("int4")).toEqual({ precision: "int4", linearBits: 4, embeddingBits: 4, blockSize: 32 });
  });
});

describe.each([
  [4, 32],
  [8, 32],
  [4, 16],
  [8, 64],
] as const)("onnxruntime reads %i-bit blocks of %i as the reference does", (bits, blockSize) => {
  const [rows, cols] = [24, 112];
  const w = randomMatrix(rows, cols, 3);
  const q = quantizeMatrix(w, rows, cols, bits as WeightBits, blockSize);
  const dense = dequantizeMatrix(q);

  function graphWith(build: (g: GraphBuilder, weight: QuantizedValue) => void): GraphBuilder {
    const g = new GraphBuilder("quantized");
    const shapes = quantizedShapes(rows, cols, bits as WeightBits, blockSize);
    const weight = {
      codes: g.initializer("codes", "uint8", shapes.codes, q.data),
      scales: g.initializer("scales", "float32", shapes.scales, q.scales),
      bits: bits as WeightBits,
      blockSize,
      rows,
      cols,
    };
    build(g, weight);
    return g;
  }
  async function run(
    g: GraphBuilder,
    feeds: Record<string, { dtype: "float32" | "float64" | "int64"; shape: number[]; data: Float32Array | Float64Array | BigInt64Array }>,
  ) {
    const session = await OnnxSession.create(g.serialize(), { inputs: g.inputs, outputs: g.outputs });
    try {
      return await session.run(feeds);
    } finally {
      await session.dispose();
    }
  }

  it("dequantised in the graph: every value equals the reference's", async () => {
    const g = graphWith((g, w) => g.output(dequantizeRows(g, "dq", w.codes, scalesByRow(g, "scales", w.codes, w.scales), w, "float32"), "w"));
    const out = await run(g, {});
    expect(out.w.shape).toEqual([rows, cols]);
    expect(Array.from(out.w.data as Float32Array)).toEqual(Array.from(dense));
  });

  it("gathered rows (an embedding lookup) equal the reference's rows", async () => {
    const ids = [5, 0, 23, 5];
    const g = graphWith((g, w) => g.output(gatherQuantizedRows(g, "embed", w, g.input("ids", "int64", [1, ids.length]), "float32"), "rows"));
    const out = await run(g, { ids: { dtype: "int64", shape: [1, ids.length], data: BigInt64Array.from(ids.map(BigInt)) } });
    expect(Array.from(out.rows.data as Float32Array)).toEqual(ids.flatMap((id) => Array.from(dense.subarray(id * cols, (id + 1) * cols))));
  });

  it.each(["float32", "float64"] as const)("x · Wᵀ in %s equals the product with the reference's weights", async (dtype) => {
    const x = randomMatrix(3, cols, 9);
    const g = graphWith((g, w) => g.output(quantizedMatMul(g, "mm", g.input("x", dtype, [3, cols]), w, "float"), "y"));
    const out = await run(g, { x: { dtype, shape: [3, cols], data: dtype === "float32" ? x : Float64Array.from(x) } });
    const expected = Array.from({ length: 3 * rows }, (_, i) => {
      const [r, n] = [Math.floor(i / rows), i % rows];
      let sum = 0;
      for (let k = 0; k < cols; k++) sum += x[r * cols + k] * dense[n * cols + k];
      return sum;
    });
    expect(maxAbsDiff(out.y.data as Float32Array, expected)).toBeLessThanOrEqual(dtype === "float32" ? 1e-4 : 1e-10);
  });
});

describe.each([
  ["llama-gqa", "int4", 32],
  ["qwen2-bias", "int8", 32],
  ["llama-gqa", "int4", 16],
] as const)("a quantized %s engine (%s, blocks of %i)", (variant, precision, blockSize) => {
  const { config, weights } = tinyModel(variant);
  const quantization = quantizationOf(precision, blockSize) as Quantization;
  const dequantised = dequantizedWeights(config, weights, quantization);
  let basis: Basis;
  let engine: LlamaEngine;
  let adapters: Record<string, PicaAdapter>;

  beforeAll(async () => {
    // The basis comes from the original weights, not the quantized ones.
    basis = await computeBasis(config, weights, { rMax: 8 });
    engine = await LlamaEngine.create(config, weights, { adapters: { basis, rank: 8 }, quantization, quantizedProducts: "float" });
    adapters = {
      shared8: randomAdapter(config, basis, { rank: 8, seed: 1 }),
      layered4: randomAdapter(config, basis, { rank: 4, seed: 2, sharing: "per_layer" }),
    };
    for (const [id, adapter] of Object.entries(adapters)) engine.registerAdapter(id, adapter);
  });
  afterAll(() => engine.dispose());

  function expected(adapterId: string | null, ids: number[]): Float64Array {
    const base = adapterId === null ? dequantised : mergeIntoWeights(config, dequantised, basis, adapters[adapterId]);
    return referenceForward(config, base, ids).at(-1)!;
  }

  it("gives the reference forward's logits on the dequantised weights (≤ 1e-4), with and without adapters, through prefill and decode", async () => {
    const rows: BatchRow[] = [
      { adapter: null, prompt: syntheticTokens(6, 1), decode: syntheticTokens(3, 11) },
      { adapter: "shared8", prompt: syntheticTokens(4, 2), decode: syntheticTokens(3, 12) },
      { adapter: "layered4", prompt: syntheticTokens(9, 3), decode: syntheticTokens(3, 13) },
    ];
    await expectRowsEqualAlone(engine, rows, expected, 1e-4);
  });

  it("differs from the float model by more than that tolerance (so the check above can fail)", () => {
    const ids = syntheticTokens(6, 1);
    expect(maxAbsDiff(referenceForward(config, weights, ids).at(-1)!, expected(null, ids))).toBeGreaterThan(precision === "int4" ? 1e-2 : 1e-3);
  });
});

describe("a quantized weight file", () => {
  const { config, weights } = tinyModel("llama-gqa");
  const scratch = scratchDirectories("pica-quantized-file");

  it("holds codes and scales, is found again by its precision, and serves what the inline graph serves", async () => {
    const quantization = quantizationOf("int4") as Quantization;
    const root = scratch("cache");
    const checkpoint = scratch("checkpoint");
    await mkdir(checkpoint);
    const directory = await weightCacheDirectory(root, checkpoint, config, quantization);
    expect(directory).not.toBe(await weightCacheDirectory(root, checkpoint, config, null));
    const written = await writeWeightFile(directory, config, weights, quantization);
    const opened = await openWeightFile(directory);
    expect(opened?.quantization).toEqual(quantization);
    expect(opened?.fingerprint).toBe(written.fingerprint);
    const codes = opened!.tensors.get("/model/layers.0/mlp/gate_up_proj/codes")!;
    expect(codes).toMatchObject({ dtype: "uint8", shape: [2 * config.intermediateSize, 2, 16] });
    expect(opened!.tensors.has("/model/layers.0/mlp/gate_up_proj/weight_t")).toBe(false);
    const float = await writeWeightFile(scratch("float"), config, weights);
    expect(written.bytes).toBeLessThan(float.bytes / 2);

    const fromFile = await LlamaEngine.create(config, weights, { weightFile: opened!, quantizedProducts: "float" });
    const inline = await LlamaEngine.create(config, weights, { quantization, quantizedProducts: "float" });
    try {
      const ids = syntheticTokens(7, 4);
      const [a, b] = [fromFile.createBatch(1), inline.createBatch(1)];
      a.addRow(null);
      b.addRow(null);
      const [x] = await fromFile.step(a, [ids]);
      const [y] = await inline.step(b, [ids]);
      expect(maxAbsDiff(x.data, y.data)).toBe(0);
    } finally {
      await fromFile.dispose();
      await inline.dispose();
    }
  });
});

describe.each(["int4", "int8"] as const)("int8 products on %s weights (the fast path: activations quantized per block, as llama.cpp does)", (precision) => {
  const { config, weights } = tinyModel("llama-gqa");
  const quantization = quantizationOf(precision) as Quantization;

  it("stay close to the exact products' logits", async () => {
    const engine = await LlamaEngine.create(config, weights, { quantization, quantizedProducts: "int8" });
    try {
      const ids = syntheticTokens(12, 8);
      const batch = engine.createBatch(1);
      batch.addRow(null);
      const [logits] = await engine.step(batch, [ids]);
      const exact = referenceForward(config, dequantizedWeights(config, weights, quantization), ids).at(-1)!;
      const scale = exact.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      const diff = maxAbsDiff(logits.data, exact);
      expect(diff).toBeGreaterThan(0); // activations really are quantized
      expect(diff).toBeLessThan(0.02 * scale);
    } finally {
      await engine.dispose();
    }
  });
});
