import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { picaParameterName, type TrainingMethod } from "../model/training-graph.ts";
import { computeBasis } from "../pica/basis.ts";
import { mergeIntoWeights } from "../pica/merge-weights.ts";
import { adapterKey, type Basis, type PicaAdapter } from "../pica/types.ts";
import { Rng } from "../random.ts";
import { sessionGradientCheck } from "../testing/session-gradient-check.ts";
import { tinyModel } from "../testing/tiny-checkpoints.ts";
import { randomTrainingBatch, referenceBatchLoss } from "../testing/training-batches.ts";
import { TrainingSession, type TrainingBatch } from "./training-session.ts";

const { config, weights } = tinyModel("llama-gqa");

/** Two rows of different lengths; the loss counts only some positions. */
function sampleBatch(): TrainingBatch {
  return randomTrainingBatch({ length: 7, lengths: [7, 4], seed: 3, firstTrained: 2 });
}

function referenceLoss(modelWeights: typeof weights, batch: TrainingBatch, modelConfig = config): number {
  return referenceBatchLoss(modelConfig, modelWeights, batch);
}

function randomValues(session: TrainingSession, seed: number, scale: number, dtype: "float32" | "float64"): Map<string, Float32Array | Float64Array> {
  const rng = new Rng(seed);
  return new Map(
    session.parameters.map((p) => {
      const data = dtype === "float64" ? new Float64Array(p.initial.length) : new Float32Array(p.initial.length);
      for (let i = 0; i < data.length; i++) data[i] = p.initial[i] + scale * rng.normal();
      return [p.name, data];
    }),
  );
}

/** Central finite differences on sampled coordinates; returns the worst relative error. */
async function gradientCheck(session: TrainingSession, batch: TrainingBatch, values: Map<string, Float64Array>, samplesPerParameter: number): Promise<number> {
  return (await sessionGradientCheck(session, batch, values, { samplesPerParameter })).maxRelativeError;
}

describe("PiCa training graph", () => {
  let basis: Basis;
  let session64: TrainingSession;
  let session32: TrainingSession;
  let method: TrainingMethod;
  beforeAll(async () => {
    basis = await computeBasis(config, weights, { rMax: 8 });
    method = { kind: "pica", basis, rank: 4, sharing: "shared" };
    session64 = await TrainingSession.create(config, weights, method, { dtype: "float64" });
    session32 = await TrainingSession.create(config, weights, method);
  });
  afterAll(async () => {
    await session64.dispose();
    await session32.dispose();
  });

  it("starts exactly at the base model and its loss equals the reference on merged weights", async () => {
    const batch = sampleBatch();
    expect(session64.parameters.map((p) => p.name)).toContain(picaParameterName("shared", "q_proj", 0));
    // The session's own initial M, not zeros of our making: training starts at the base model.
    for (const p of session64.parameters) expect(p.initial.every((v) => v === 0)).toBe(true);
    const initial = new Map(session64.parameters.map((p) => [p.name, Float64Array.from(p.initial)]));
    const baseLoss = referenceLoss(weights, batch);
    expect(Math.abs((await session64.loss(batch, initial)) - baseLoss)).toBeLessThan(1e-9);

    const values = randomValues(session64, 5, 0.3, "float64");
    const adapter: PicaAdapter = {
      rank: 4,
      sharing: "shared",
      targetModules: [...basis.targetModules],
      basisId: basis.id,
      baseFingerprint: basis.baseFingerprint,
      m: new Map(
        basis.targetModules.map((module) => {
          const mT = values.get(picaParameterName("shared", module, 0))!; // [rank, out]
          const out = mT.length / 4;
          const m = new Float32Array(out * 4);
          for (let j = 0; j < 4; j++) for (let o = 0; o < out; o++) m[o * 4 + j] = mT[j * out + o];
          // Round the fed values to float32 too, so both sides use identical numbers.
          for (let j = 0; j < 4; j++) for (let o = 0; o < out; o++) mT[j * out + o] = m[o * 4 + j];
          return [adapterKey("shared", module, 0), { shape: [out, 4], data: m }];
        }),
      ),
      provenance: {},
    };
    const merged = referenceLoss(mergeIntoWeights(config, weights, basis, adapter), batch);
    const fed = await session64.loss(batch, values);
    // The fed M moves the loss far beyond the tolerance below, so a graph that kept a zero M of
    // its own (or a merge that dropped M) would fail here rather than agree at the base loss.
    expect(Math.abs(merged - baseLoss) / baseLoss).toBeGreaterThan(1e-3);
    expect(Math.abs(fed - baseLoss) / baseLoss).toBeGreaterThan(1e-3);
    expect(Math.abs(fed - merged) / merged).toBeLessThan(1e-6);
  });

  it("adapter gradients match float64 finite differences (≤ 1e-5 relative)", async () => {
    const values = randomValues(session64, 7, 0.2, "float64") as Map<string, Float64Array>;
    expect(await gradientCheck(session64, sampleBatch(), values, 6)).toBeLessThanOrEqual(1e-5);
  });

  it("float32 gradients agree with float64 gradients (≤ 1e-4 relative)", async () => {
    const batch = sampleBatch();
    const values64 = randomValues(session64, 9, 0.2, "float64");
    const values32 = new Map([...values64].map(([name, data]) => [name, Float32Array.from(data)]));
    const [a, b] = [await session64.step(batch, values64), await session32.step(batch, values32)];
    let worst = 0;
    for (const [name, g64] of a.gradients) {
      const g32 = b.gradients.get(name)!;
      let norm = 0;
      for (const v of g64) norm = Math.max(norm, Math.abs(v));
      for (let i = 0; i < g64.length; i++) worst = Math.max(worst, Math.abs(g64[i] - g32[i]) / norm);
    }
    expect(worst).toBeLessThanOrEqual(1e-4);
    expect(Math.abs(a.loss - b.loss) / a.loss).toBeLessThan(1e-5);
  });
});

describe.each([
  [
    "PiCa per layer",
    (basis: Basis): TrainingMethod => ({ kind: "pica", basis, rank: 3, sharing: "per_layer", targetModules: ["q_proj", "v_proj", "down_proj"] }),
  ],
  ["LoRA", (): TrainingMethod => ({ kind: "lora", rank: 2, alpha: 4, targetModules: ["k_proj", "o_proj", "up_proj"], seed: 1 })],
  ["full", (): TrainingMethod => ({ kind: "full" })],
] as const)("%s gradients", (_label, makeMethod) => {
  it("match float64 finite differences", async () => {
    const basis = await computeBasis(config, weights, { rMax: 4 });
    const session = await TrainingSession.create(config, weights, makeMethod(basis), { dtype: "float64" });
    const values = randomValues(session, 11, 0.05, "float64") as Map<string, Float64Array>;
    expect(await gradientCheck(session, sampleBatch(), values, 2)).toBeLessThanOrEqual(1e-5);
    await session.dispose();
  });
});

describe.each(["qwen3-qk-norm", "mistral-sliding", "qwen2-window-layers"] as const)("training graph of %s", (variant) => {
  it("starts at the reference loss and its PiCa gradients (through q/k norms and sliding windows) match finite differences", async () => {
    const model = tinyModel(variant);
    const basis = await computeBasis(model.config, model.weights, { rMax: 4 });
    const session = await TrainingSession.create(model.config, model.weights, { kind: "pica", basis, rank: 3, sharing: "shared" }, { dtype: "float64" });
    const batch = sampleBatch(); // 7 positions: past every window, so masks that ignored it would show
    const zeros = new Map(session.parameters.map((p) => [p.name, new Float64Array(p.initial.length)]));
    // Relative: the graph's rotary frequencies are float32 even in a float64 graph.
    const reference = referenceLoss(model.weights, batch, model.config);
    expect(Math.abs((await session.loss(batch, zeros)) - reference) / reference).toBeLessThan(1e-8);
    const values = randomValues(session, 13, 0.1, "float64") as Map<string, Float64Array>;
    expect(await gradientCheck(session, batch, values, 2)).toBeLessThanOrEqual(1e-5);
    await session.dispose();
  });
});
