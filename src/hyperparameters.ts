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

/**
 * Base (peak) learning rate per method at multiplier 1, chosen by `npm run bench -- sweep` on the
 * shipped model (README, Quality): over four tasks and rates 3e-3…1e-1, PiCa shared at the default
 * rank did best at 1e-2 on every task, and so did LoRA r=8 over 1e-3…1e-1. That is 10× the PiCa
 * paper's 1e-3 and 50× LoRA's customary 2e-4, at which both under-train in a few hundred steps.
 */
export const BASE_LEARNING_RATE: Readonly<Record<AdapterMethod, number>> = { pica: 1e-2, lora: 1e-2 };

// The "auto" schedule, chosen by the sweep's schedule phase (README, Quality), which tried 4, 8
// and 16 epochs at batch 16 and 8 and 16 at batch 4 on 32 and on 128 training examples, and took
// at each size the fewest optimizer steps within 10% of the best: 8 epochs of batch 4 at 32
// examples (16 epochs overfit there), 16 epochs of batch 16 at 128 (batch 4 was 8% better there
// with 4× the steps, and worse on the quality bench's 240 examples). Both are 8 steps an epoch,
// hence the batch rule; the epochs are 8 up to 32 examples, 16 from 128 on, interpolated in log n
// between (untried there), and fewer for large sets so that a job sees at most 25,000 examples
// (as OpenAI's rule caps it). Sets far larger than 128 examples were not swept.
const AUTO_STEPS_PER_EPOCH = 8;
const MAX_AUTO_BATCH_SIZE = 16;
const AUTO_EPOCHS = { small: { examples: 32, epochs: 8 }, large: { examples: 128, epochs: 16 } } as const;
const MAX_AUTO_EXAMPLES_SEEN = 25_000;

/** The "auto" epochs for `n` training examples. */
function autoEpochsFor(n: number): number {
  const { small, large } = AUTO_EPOCHS;
  const position = Math.min(1, Math.max(0, Math.log2(n / small.examples) / Math.log2(large.examples / small.examples)));
  const epochs = Math.round(small.epochs + position * (large.epochs - small.epochs));
  return Math.max(1, Math.min(epochs, Math.floor(MAX_AUTO_EXAMPLES_SEEN / n)));
}

/**
 * Resolves "auto" (or a missing value) to numbers and checks explicit ones, throwing a
 * {@link HyperparameterError} naming the field. Auto rules (the sweep's choices, see above):
 * - n_epochs: 8 up to 32 examples, 16 from 128 (log-linear between), at most floor(25000 / n) and
 *   at least 1; explicit: integer in [1, 50].
 * - batch_size: floor(n / 8) within [1, 16] (8 steps an epoch); explicit: integer in [1, 256] and ≤ n.
 * - learning_rate_multiplier: 1 (the method's base rate); explicit: in (0, 10].
 */
export function resolveHyperparameters(request: HyperparameterRequest, context: { trainExamples: number; method: AdapterMethod }): ResolvedHyperparameters {
  const n = context.trainExamples;
  if (!Number.isInteger(n) || n < 1) throw new Error(`trainExamples must be a positive integer, got ${n}`);

  const nEpochs = resolveOne("n_epochs", request.n_epochs, autoEpochsFor(n), { min: 1, max: 50, integer: true });

  const autoBatch = Math.max(1, Math.min(MAX_AUTO_BATCH_SIZE, Math.floor(n / AUTO_STEPS_PER_EPOCH)));
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
