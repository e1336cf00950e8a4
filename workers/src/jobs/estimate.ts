/**
 * A job's cost before it runs: the tokens it will train on (the file's count, made with the base
 * model's template tokens, times the epochs the trainer's own "auto" rules choose) and the seconds
 * that takes at the training rate the model's runners measured on their own finished jobs
 * (runners/training-figures.ts).
 */
import { badRequest } from "../../../src/errors.ts";
import { HyperparameterError, resolveHyperparameters, validationHoldout } from "../../../src/hyperparameters.ts";
import type { Hyperparameters } from "../../../src/protocol/runner.ts";
import type { EstimateRate } from "../../../src/protocol/training-figures.ts";

/** The estimate shown on a new job. */
export interface JobEstimate {
  nEpochs: number;
  batchSize: number;
  learningRateMultiplier: number;
  estimatedTokens: number;
  estimatedSeconds: number;
}

/**
 * Estimates a job on a file; a hyper-parameter that cannot apply to it is a 400 under `paramPrefix`.
 * Without a validation file the trainer holds some of the file's examples out to validate on:
 * "auto" resolves on the examples it trains, and the tokens are the file's share of them.
 */
export function estimateJob(
  file: { examples: number; estimatedTokens: number },
  hyperparameters: Hyperparameters,
  paramPrefix: string,
  context: { rate: EstimateRate; validationFile: boolean },
): JobEstimate {
  const trainExamples = file.examples - (context.validationFile ? 0 : validationHoldout(file.examples));
  let resolved: ReturnType<typeof resolveHyperparameters>;
  try {
    resolved = resolveHyperparameters(hyperparameters, { trainExamples, method: "pica" });
  } catch (error) {
    if (error instanceof HyperparameterError)
      throw badRequest(`Invalid value for '${paramPrefix}.${error.param}': ${error.message}.`, `${paramPrefix}.${error.param}`, "invalid_value");
    throw error;
  }
  const estimatedTokens = Math.round((file.estimatedTokens * trainExamples * resolved.nEpochs) / file.examples);
  return {
    nEpochs: resolved.nEpochs,
    batchSize: resolved.batchSize,
    learningRateMultiplier: resolved.learningRateMultiplier,
    estimatedTokens,
    estimatedSeconds: Math.max(1, Math.round(context.rate.overhead_seconds + estimatedTokens / context.rate.tokens_per_second)),
  };
}
