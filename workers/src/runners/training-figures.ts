/**
 * What estimates assume about a base model: the template tokens and training rate its runners
 * report in their heartbeats (src/protocol/training-figures.ts), the freshest report first; the
 * defaults where none has reported yet (or none has finished a job to measure its rate).
 */
import { DEFAULT_TRAINING_FIGURES, type TrainingFigures } from "../../../src/protocol/training-figures.ts";
import type { runners } from "../db/schema.ts";

/** The figures an estimate for a job on `baseModel` uses. */
export function modelTrainingFigures(rows: readonly (typeof runners.$inferSelect)[], baseModel: string): TrainingFigures {
  const reported = rows
    .filter((row) => row.baseModel === baseModel && row.trainingFigures !== null)
    .sort((a, b) => b.lastHeartbeat - a.lastHeartbeat)
    .map((row) => row.trainingFigures!);
  return {
    template_tokens: reported[0]?.template_tokens ?? DEFAULT_TRAINING_FIGURES.template_tokens,
    rate: reported.find((figures) => figures.rate !== null)?.rate ?? DEFAULT_TRAINING_FIGURES.rate,
  };
}
