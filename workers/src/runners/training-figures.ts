/**
 * What estimates assume about a base model: the template tokens and training rate its runners
 * report in their heartbeats (src/protocol/training-figures.ts), the freshest report first; the
 * defaults where none has reported yet (or none has finished a job to measure its rate).
 */
import { DEFAULT_TEMPLATE_TOKENS, DEFAULT_TRAINING_RATE, type EstimateRate, type TemplateTokens } from "../../../src/protocol/training-figures.ts";
import type { runners } from "../db/schema.ts";

/** The figures an estimate for a job on `baseModel` uses. */
export function modelTrainingFigures(
  rows: readonly (typeof runners.$inferSelect)[],
  baseModel: string,
): { template_tokens: TemplateTokens; rate: EstimateRate } {
  const reported = rows
    .filter((row) => row.baseModel === baseModel && row.trainingFigures !== null)
    .sort((a, b) => b.lastHeartbeat - a.lastHeartbeat)
    .map((row) => row.trainingFigures!);
  return {
    template_tokens: reported[0]?.template_tokens ?? DEFAULT_TEMPLATE_TOKENS,
    rate: reported.find((figures) => figures.rate !== null)?.rate ?? DEFAULT_TRAINING_RATE,
  };
}
