// OpenAI's fine-tuning hyper-parameters ("auto" or numbers) resolved to the numbers a run uses.
// Shared by the trainer and the edge, which estimates a job's tokens and time with the same rules.

/** A hyper-parameter as the public API accepts it: a number, "auto", or left out (= "auto"). */
export type HyperparameterInput = number | "auto" | undefined;

/** The three OpenAI hyper-parameters of a supervised fine-tuning job, as requested. */
export interface HyperparameterRequest {
  n_epochs?: HyperparameterInput;
  batch_size?: HyperparameterInput;
  learning_rate_multiplier?: HyperparameterInput;
}

/** The adapter method, which sets the base learning rate. */
export type AdapterMethod = "pica" | "lora";

/** Concrete hyper-parameters of a job, "auto" resolved. */
export interface ResolvedHyperparameters {
  nEpochs: number;
  batchSize: number;
  learningRateMultiplier: number;
  /** Peak learning rate: the method's base rate times the multiplier. */
  learningRate: number;
  /** Optimizer steps in the whole run: ceil(trainExamples / batchSize) per epoch. */
  totalSteps: number;
  /** Warmup steps: 10% of the run, rounded up (PiCa's paper), at least 1. */
  warmupSteps: number;
}

/** A hyper-parameter outside its range; `param` names it as the API does (e.g. "n_epochs"). */
export class HyperparameterError extends Error {
  /** The offending field, for the `param` of an OpenAI-shaped error. */
  readonly param: string;
  constructor(param: string, message: string) {
    super(message);
    this.name = "HyperparameterError";
    this.param = param;
  }
}

/** Share of the training examples held out for validation when a job has no validation file. */
export const VALIDATION_FRACTION = 0.1;

/**
 * How many of `count` training examples the trainer holds out for validation (without a
 * validation file): floor(fraction · count), at least one from 10 examples on, never all.
 */
export function validationHoldout(count: number, fraction = VALIDATION_FRACTION): number {
  if (!(fraction >= 0 && fraction < 1)) throw new Error(`fraction must be in [0, 1), got ${fraction}`);
  let held = Math.floor(fraction * count);
  if (fraction > 0 && count >= 10) held = Math.max(1, held);
  return Math.min(held, Math.max(0, count - 1));
}

/** Base (peak) learning rate per method at multiplier 1: PiCa's paper uses 1e-3; LoRA's usual 2e-4. */
export const BASE_LEARNING_RATE: Readonly<Record<AdapterMethod, number>> = { pica: 1e-3, lora: 2e-4 };

// OpenAI's published "auto" rule for epochs (their data-preparation cookbook): aim at 3 epochs,
// but see at least 100 and at most 25,000 examples in total, within [1, 25] epochs.
const TARGET_EPOCHS = 3;
const MIN_TARGET_EXAMPLES = 100;
const MAX_TARGET_EXAMPLES = 25_000;
const MAX_AUTO_EPOCHS = 25;

/**
 * Resolves "auto" (or a missing value) to numbers and checks explicit ones, throwing a
 * {@link HyperparameterError} naming the field. Auto rules:
 * - n_epochs: 3, raised for tiny sets to min(25, floor(100 / n)) and lowered for large ones to
 *   max(1, floor(25000 / n)), as OpenAI does; explicit: integer in [1, 50].
 * - batch_size: round(0.2% of n), clamped to [1, 32]; explicit: integer in [1, 256] and ≤ n.
 * - learning_rate_multiplier: 1; explicit: in (0, 10].
 */
export function resolveHyperparameters(request: HyperparameterRequest, context: { trainExamples: number; method: AdapterMethod }): ResolvedHyperparameters {
  const n = context.trainExamples;
  if (!Number.isInteger(n) || n < 1) throw new Error(`trainExamples must be a positive integer, got ${n}`);

  let autoEpochs = TARGET_EPOCHS;
  if (n * TARGET_EPOCHS < MIN_TARGET_EXAMPLES) autoEpochs = Math.min(MAX_AUTO_EPOCHS, Math.floor(MIN_TARGET_EXAMPLES / n));
  else if (n * TARGET_EPOCHS > MAX_TARGET_EXAMPLES) autoEpochs = Math.max(1, Math.floor(MAX_TARGET_EXAMPLES / n));
  const nEpochs = resolveOne("n_epochs", request.n_epochs, autoEpochs, { min: 1, max: 50, integer: true });

  const autoBatch = Math.min(32, Math.max(1, Math.round(0.002 * n)));
  const batchSize = resolveOne("batch_size", request.batch_size, autoBatch, { min: 1, max: 256, integer: true });
  if (batchSize > n) {
    throw new HyperparameterError("batch_size", `batch_size ${batchSize} is larger than the ${n} training examples`);
  }

  const learningRateMultiplier = resolveOne("learning_rate_multiplier", request.learning_rate_multiplier, 1, {
    min: 0,
    max: 10,
    integer: false,
    minExclusive: true,
  });
  const totalSteps = Math.ceil(n / batchSize) * nEpochs;
  return {
    nEpochs,
    batchSize,
    learningRateMultiplier,
    learningRate: BASE_LEARNING_RATE[context.method] * learningRateMultiplier,
    totalSteps,
    warmupSteps: Math.max(1, Math.ceil(0.1 * totalSteps)),
  };
}

function resolveOne(param: string, value: unknown, auto: number, range: { min: number; max: number; integer: boolean; minExclusive?: boolean }): number {
  if (value === undefined || value === "auto") return auto;
  const lower = range.minExclusive ? `(${range.min}` : `[${range.min}`;
  const expected = `${range.integer ? "an integer" : "a number"} in ${lower}, ${range.max}] or "auto"`;
  if (typeof value !== "number" || !Number.isFinite(value)) {
    throw new HyperparameterError(param, `${param} must be ${expected}, got ${typeof value === "number" ? value : (JSON.stringify(value) ?? String(value))}`);
  }
  const belowMin = range.minExclusive ? value <= range.min : value < range.min;
  if ((range.integer && !Number.isInteger(value)) || belowMin || value > range.max) {
    throw new HyperparameterError(param, `${param} must be ${expected}, got ${value}`);
  }
  return value;
}
