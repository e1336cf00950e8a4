import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { TrainingMethod } from "../model/training-graph.ts";
import { computeBasis } from "../pica/basis.ts";
import { Rng } from "../random.ts";
import { sessionGradientCheck } from "../testing/session-gradient-check.ts";
import { tinyModel } from "../testing/tiny-checkpoints.ts";
import { randomTrainingBatch, referenceBatchLoss } from "../testing/training-batches.ts";
import { TrainingSession, type TrainingBatch } from "../training/training-session.ts";
import { quantizationOf, type Quantization } from "./block-format.ts";
import { dequantizedWeights } from "./dequantized-weights.ts";

const { config, weights } = tinyModel("qwen2-bias");

function sampleBatch(): TrainingBatch {
  return randomTrainingBatch({ length: 6, lengths: [6, 4], seed: 5, firstTrained: 1 });
}

function randomValues(session: TrainingSession, seed: number, dtype: "float32" | "float64"): Map<string, Float32Array | Float64Array> {
  const rng = new Rng(seed);
  return new Map(
    session.parameters.map((p) => {
      const data = dtype === "float64" ? new Float64Array(p.initial.length) : new Float32Array(p.initial.length);
      for (let i = 0; i < data.length; i++) data[i] = p.initial[i] + 0.2 * rng.normal();
      return [p.name, data];
    }),
  );
}

const referenceLoss = (modelWeights: typeof weights, batch: TrainingBatch) => referenceBatchLoss(config, modelWeights, batch);

describe.each(["int4", "int8"] as const)("PiCa training through %s frozen weights", (precision) => {
  const quantization = quantizationOf(precision) as Quantization;
  const dequantised = dequantizedWeights(config, weights, quantization);
  let method: TrainingMethod;
  let quantized32: TrainingSession; // MatMulNBits forward, dequantised-per-layer input gradients
  let quantized64: TrainingSession; // float64: the codes dequantised in the graph, standard products
  let reference64: TrainingSession; // float64 on the dequantised weights as plain float tensors
  beforeAll(async () => {
    const basis = await computeBasis(config, weights, { rMax: 4 }); // from the original weights
    method = { kind: "pica", basis, rank: 4, sharing: "shared" };
    quantized32 = await TrainingSession.create(config, weights, method, { quantization, quantizedProducts: "float" });
    quantized64 = await TrainingSession.create(config, weights, method, { quantization, dtype: "float64" });
    reference64 = await TrainingSession.create(config, dequantised, method, { dtype: "float64" });
  });
  afterAll(async () => {
    for (const session of [quantized32, quantized64, reference64]) await session.dispose();
  });

  it("starts at the reference loss on the dequantised weights, not the float ones", async () => {
    const batch = sampleBatch();
    const initial = new Map(quantized64.parameters.map((p) => [p.name, Float64Array.from(p.initial)]));
    const expected = referenceLoss(dequantised, batch);
    expect(Math.abs((await quantized64.loss(batch, initial)) - expected)).toBeLessThan(1e-9);
    const initial32 = new Map(quantized32.parameters.map((p) => [p.name, Float32Array.from(p.initial)]));
    expect(Math.abs((await quantized32.loss(batch, initial32)) - expected) / expected).toBeLessThan(1e-5);
    expect(Math.abs(referenceLoss(weights, batch) - expected) / expected).toBeGreaterThan(1e-4);
  });

  it("with int8 products (the default, the serving path) the loss stays within 2% of the exact one and each gradient within 5%", async () => {
    const fast = await TrainingSession.create(config, weights, method, { quantization });
    try {
      const batch = sampleBatch();
      const values = randomValues(quantized32, 13, "float32");
      const [exact, approximate] = [await quantized32.step(batch, values), await fast.step(batch, values)];
      expect(approximate.loss).not.toBe(exact.loss); // the activations really are quantized
      expect(Math.abs(approximate.loss - exact.loss) / exact.loss).toBeLessThan(0.02);
      for (const [name, g] of exact.gradients) {
        const h = approximate.gradients.get(name)!;
        let [difference, norm] = [0, 0];
        for (let i = 0; i < g.length; i++) {
          difference += (g[i] - h[i]) ** 2;
          norm += g[i] ** 2;
        }
        expect(Math.sqrt(difference / norm), name).toBeLessThan(0.05);
      }
    } finally {
      await fast.dispose();
    }
  });

  it("float64 gradients through the quantized graph match finite differences (≤ 1e-5 relative)", async () => {
    const values = randomValues(quantized64, 7, "float64") as Map<string, Float64Array>;
    expect((await sessionGradientCheck(quantized64, sampleBatch(), values, { samplesPerParameter: 4 })).maxRelativeError).toBeLessThanOrEqual(1e-5);
  });

  it("float32 gradients through MatMulNBits equal float64 gradients on the dequantised weights (≤ 1e-4 of each gradient's largest)", async () => {
    const batch = sampleBatch();
    const values64 = randomValues(reference64, 9, "float64");
    const values32 = new Map([...values64].map(([name, data]) => [name, Float32Array.from(data)]));
    const [a, b] = [await reference64.step(batch, values64), await quantized32.step(batch, values32)];
    let worst = 0;
    for (const [name, g64] of a.gradients) {
      const g32 = b.gradients.get(name)!;
      let norm = 0;
      for (const v of g64) norm = Math.max(norm, Math.abs(v));
      expect(norm).toBeGreaterThan(0);
      for (let i = 0; i < g64.length; i++) worst = Math.max(worst, Math.abs(g64[i] - g32[i]) / norm);
    }
    expect(worst).toBeLessThanOrEqual(1e-4);
    expect(Math.abs(a.loss - b.loss) / a.loss).toBeLessThan(1e-5);
  });
});
