/**
 * Finite-difference check of a training session's gradients: central differences in float64 on
 * sampled coordinates of every parameter, against the analytic gradients of one step.
 */
import { Rng } from "../random.ts";
import type { TrainingBatch, TrainingSession } from "../training/training-session.ts";

/** Worst relative error |numeric − analytic| / max(|numeric|, |analytic|, 1e-4) over the samples. */
export async function sessionGradientCheck(
  session: TrainingSession,
  batch: TrainingBatch,
  values: Map<string, Float64Array>,
  options: { samplesPerParameter: number; step?: number; seed?: number },
): Promise<{ maxRelativeError: number; coordinates: number }> {
  const { gradients } = await session.step(batch, values);
  const rng = new Rng(options.seed ?? 17);
  const h = options.step ?? 1e-6;
  let worst = 0;
  let coordinates = 0;
  for (const parameter of session.parameters) {
    const data = values.get(parameter.name)!;
    const gradient = gradients.get(parameter.name)!;
    for (let s = 0; s < options.samplesPerParameter; s++) {
      const i = Math.floor(rng.uniform() * data.length);
      const original = data[i];
      data[i] = original + h;
      const plus = await session.loss(batch, values);
      data[i] = original - h;
      const minus = await session.loss(batch, values);
      data[i] = original;
      const numeric = (plus - minus) / (2 * h);
      worst = Math.max(worst, Math.abs(numeric - gradient[i]) / Math.max(Math.abs(numeric), Math.abs(gradient[i]), 1e-4));
      coordinates++;
    }
  }
  return { maxRelativeError: worst, coordinates };
}
