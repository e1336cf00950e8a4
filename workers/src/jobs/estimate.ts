/**
 * A job's cost before it runs: the tokens it will train on (the file's estimate times the epochs
 * the trainer's own "auto" rules choose) and the seconds that takes at a runner's training rate.
 */
import { badRequest } from "../../../src/errors.ts";
import { HyperparameterError, resolveHyperparameters } from "../../../src/hyperparameters.ts";
import type { Hyperparameters } from "../../../src/protocol/runner.ts";

/**
 * Training throughput assumed for estimates. `npm run bench -- train` measures about 7,400
 * tokens/s for PiCa; training yields to inference on a busy runner, so estimates assume less.
 */
export const TRAINING_TOKENS_PER_SECOND = 5_000;
/** Loading data, tokenising and writing the adapter, per job. */
export const JOB_OVERHEAD_SECONDS = 10;

/** The estimate shown on a new job. */
export interface JobEstimate {
  nEpochs: number;
  batchSize: number;
  learningRateMultiplier: number;
  estimatedTokens: number;
  estimatedSeconds: number;
}

/** Estimates a job on a file; a hyper-parameter that cannot apply to it is a 400 under `paramPrefix`. */
export function estimateJob(file: { examples: number; estimatedTokens: number }, hyperparameters: Hyperparameters, paramPrefix: string): JobEstimate {
  let resolved: ReturnType<typeof resolveHyperparameters>;
  try {
    resolved = resolveHyperparameters(hyperparameters, { trainExamples: file.examples, method: "pica" });
  } catch (error) {
    if (error instanceof HyperparameterError)
      throw badRequest(`Invalid value for '${paramPrefix}.${error.param}': ${error.message}.`, `${paramPrefix}.${error.param}`, "invalid_value");
    throw error;
  }
  const estimatedTokens = file.estimatedTokens * resolved.nEpochs;
  return {
    nEpochs: resolved.nEpochs,
    batchSize: resolved.batchSize,
    learningRateMultiplier: resolved.learningRateMultiplier,
    estimatedTokens,
    estimatedSeconds: Math.round(JOB_OVERHEAD_SECONDS + estimatedTokens / TRAINING_TOKENS_PER_SECOND),
  };
}
