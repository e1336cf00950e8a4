/**
 * Small training batches for tests of training graphs, and their loss computed by the float64
 * reference forward: rows of random byte tokens and labels, of their own lengths, with the loss
 * counted from a given position on.
 */
import type { ModelConfig } from "../model/config.ts";
import { referenceForward } from "../model/reference.ts";
import type { WeightMap } from "../model/weights.ts";
import { Rng } from "../random.ts";
import type { TrainingBatch } from "../training/training-session.ts";

/** A padded batch of random tokens: row r holds `lengths[r]` real tokens; positions before `firstTrained` carry no loss. */
export function randomTrainingBatch(options: { length: number; lengths: number[]; seed: number; firstTrained: number }): TrainingBatch {
  const { length, lengths } = options;
  const rows = lengths.length;
  const rng = new Rng(options.seed);
  const inputIds: number[] = [];
  const labels: number[] = [];
  const lossWeights: number[] = [];
  for (let row = 0; row < rows; row++) {
    for (let t = 0; t < length; t++) {
      inputIds.push(t < lengths[row] ? Math.floor(rng.uniform() * 256) : 0);
      labels.push(Math.floor(rng.uniform() * 256));
      lossWeights.push(t < lengths[row] && t >= options.firstTrained ? 1 : 0);
    }
  }
  return { rows, length, inputIds, labels, lossWeights, lengths };
}

/** The weighted mean cross-entropy of the reference forward on the batch, in float64. */
export function referenceBatchLoss(config: ModelConfig, weights: WeightMap, batch: TrainingBatch): number {
  let total = 0;
  let weightSum = 0;
  for (let row = 0; row < batch.rows; row++) {
    const ids = Array.from({ length: batch.lengths[row] }, (_, t) => batch.inputIds[row * batch.length + t]);
    referenceForward(config, weights, ids).forEach((logits, t) => {
      const w = batch.lossWeights[row * batch.length + t];
      if (w === 0) return;
      const max = Math.max(...logits);
      const logSum = max + Math.log(logits.reduce((s, v) => s + Math.exp(v - max), 0));
      total += w * (logSum - logits[batch.labels[row * batch.length + t]]);
      weightSum += w;
    });
  }
  return total / weightSum;
}
