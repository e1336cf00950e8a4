// The host side of an optimisation step: AdamW over the trainable tensors (PiCa's M tables are
// small: r · Σ out numbers, so updating them in TypeScript costs little next to the ONNX forward and
// backward), global-norm gradient clipping, the learning-rate schedule, and OpenAI's
// hyper-parameters resolved to numbers.

/** Named float32 tensors: trainable parameters, their gradients, or optimizer moments. */
export type TensorMap = Map<string, Float32Array>;

/** AdamW settings; the defaults are PyTorch's, except weight decay, which is PiCa's paper value. */
export interface AdamWOptions {
  beta1?: number;
  beta2?: number;
  eps?: number;
  /** Decoupled weight decay; 0 by default as in PiCa's paper (PyTorch's default is 0.01). */
  weightDecay?: number;
}

/** Everything needed to resume AdamW exactly: the step count and both moments. */
export interface AdamWState {
  /** Number of steps taken so far. */
  step: number;
  /** First moments (exponential average of gradients), one per parameter. */
  m: TensorMap;
  /** Second moments (exponential average of squared gradients), one per parameter. */
  v: TensorMap;
}

/**
 * AdamW as PyTorch's `torch.optim.AdamW` (amsgrad off, foreach or not, same numbers up to
 * rounding): for step t = 1, 2, ... and every parameter p with gradient g,
 *   p ← p · (1 − lr · weightDecay)            (decoupled: the decay never enters m or v)
 *   m ← β1 · m + (1 − β1) · g
 *   v ← β2 · v + (1 − β2) · g²
 *   p ← p − (lr / (1 − β1ᵗ)) · m / (√v / √(1 − β2ᵗ) + eps)
 * The moments are float32 like PyTorch's; each element's update is computed in float64 and
 * rounded once, so a run restored from {@link AdamW.state} continues bit-identically.
 */
export class AdamW {
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  readonly #parameters: TensorMap;
  #step = 0;
  #m: TensorMap = new Map();
  #v: TensorMap = new Map();

  /** Optimises `parameters` in place; the map's arrays are the ones the trainer feeds to the graph. */
  constructor(parameters: TensorMap, options: AdamWOptions = {}) {
    this.beta1 = options.beta1 ?? 0.9;
    this.beta2 = options.beta2 ?? 0.999;
    this.eps = options.eps ?? 1e-8;
    this.weightDecay = options.weightDecay ?? 0;
    for (const [name, value] of [
      ["beta1", this.beta1],
      ["beta2", this.beta2],
    ] as const) {
      if (!(value >= 0 && value < 1)) throw new Error(`AdamW ${name} must be in [0, 1), got ${value}`);
    }
    if (!(this.eps > 0)) throw new Error(`AdamW eps must be positive, got ${this.eps}`);
    if (!(this.weightDecay >= 0)) throw new Error(`AdamW weightDecay must be ≥ 0, got ${this.weightDecay}`);
    this.#parameters = parameters;
    for (const [name, parameter] of parameters) {
      this.#m.set(name, new Float32Array(parameter.length));
      this.#v.set(name, new Float32Array(parameter.length));
    }
  }

  /** Makes an optimizer over `parameters` that continues from a saved {@link AdamWState}. */
  static restore(parameters: TensorMap, options: AdamWOptions, state: AdamWState): AdamW {
    const optimizer = new AdamW(parameters, options);
    optimizer.loadState(state);
    return optimizer;
  }

  /** Number of steps taken so far. */
  get stepCount(): number {
    return this.#step;
  }

  /** Applies one update with these gradients (one per parameter, same lengths) at this learning rate. */
  step(gradients: TensorMap, learningRate: number): void {
    if (!(learningRate >= 0) || !Number.isFinite(learningRate)) {
      throw new Error(`learning rate must be a finite number ≥ 0, got ${learningRate}`);
    }
    checkSameShapes("gradient", gradients, this.#parameters);
    this.#step++;
    const { beta1, beta2, eps } = this;
    const stepSize = learningRate / (1 - beta1 ** this.#step);
    const secondMomentCorrection = Math.sqrt(1 - beta2 ** this.#step);
    const decay = 1 - learningRate * this.weightDecay;
    for (const [name, parameter] of this.#parameters) {
      const gradient = gradients.get(name)!;
      const m = this.#m.get(name)!;
      const v = this.#v.get(name)!;
      for (let i = 0; i < parameter.length; i++) {
        const g = gradient[i]!;
        m[i] = beta1 * m[i]! + (1 - beta1) * g;
        v[i] = beta2 * v[i]! + (1 - beta2) * g * g;
        parameter[i] = parameter[i]! * decay - (stepSize * m[i]!) / (Math.sqrt(v[i]!) / secondMomentCorrection + eps);
      }
    }
  }

  /** A copy of the state, for a checkpoint; the parameters themselves are saved by the caller. */
  state(): AdamWState {
    return { step: this.#step, m: copyTensors(this.#m), v: copyTensors(this.#v) };
  }

  /** Replaces the state with a saved one (copied), checking that it fits these parameters. */
  loadState(state: AdamWState): void {
    if (!Number.isInteger(state.step) || state.step < 0) throw new Error(`AdamW state step must be an integer ≥ 0, got ${state.step}`);
    checkSameShapes("first moment", state.m, this.#parameters);
    checkSameShapes("second moment", state.v, this.#parameters);
    this.#step = state.step;
    this.#m = copyTensors(state.m);
    this.#v = copyTensors(state.v);
  }
}

/**
 * Scales all gradients in place so that their global L2 norm is at most maxNorm, as PyTorch's
 * `clip_grad_norm_` (factor maxNorm / (norm + 1e-6) when norm > maxNorm) and returns the norm
 * before clipping. A non-finite norm leaves the gradients untouched and is returned as is: the
 * caller should skip that step rather than scale every gradient to NaN.
 */
export function clipGradientNorm(gradients: TensorMap, maxNorm: number): number {
  if (!(maxNorm > 0)) throw new Error(`maxNorm must be positive, got ${maxNorm}`);
  let sumOfSquares = 0;
  for (const gradient of gradients.values()) {
    for (let i = 0; i < gradient.length; i++) sumOfSquares += gradient[i]! * gradient[i]!;
  }
  const norm = Math.sqrt(sumOfSquares);
  if (!Number.isFinite(norm) || norm <= maxNorm) return norm;
  const scale = maxNorm / (norm + 1e-6);
  for (const gradient of gradients.values()) {
    for (let i = 0; i < gradient.length; i++) gradient[i] = gradient[i]! * scale;
  }
  return norm;
}

/** Options of {@link learningRateAt}. */
export interface ScheduleOptions {
  /** The learning rate at the end of warmup. */
  peak: number;
  /** Steps in the whole run. */
  totalSteps: number;
  /** Steps of linear warmup (PiCa's paper: 10% of the run). */
  warmupSteps: number;
  /** Final learning rate as a share of the peak; 0 by default. */
  minRatio?: number;
}

/**
 * Learning rate of 0-based step s: linear warmup, then cosine decay to peak · minRatio. The
 * schedule is read at the end of each step, x = s + 1 steps done, with W warmup and T total steps:
 *   x ≤ W:  lr = peak · x / W
 *   x > W:  lr = min + (peak − min) · (1 + cos(π · (x − W) / (T − W))) / 2,   min = peak · minRatio
 * so step 0 trains at peak / W (small but not the wasted 0 of transformers' schedule), step W − 1
 * reaches the peak and step T − 1 reaches min exactly; steps beyond the run stay at min.
 */
export function learningRateAt(step: number, options: ScheduleOptions): number {
  const { peak, totalSteps, warmupSteps } = options;
  const minRatio = options.minRatio ?? 0;
  if (!(peak > 0) || !Number.isFinite(peak)) throw new Error(`peak learning rate must be positive, got ${peak}`);
  if (!Number.isInteger(totalSteps) || totalSteps < 1) throw new Error(`totalSteps must be a positive integer, got ${totalSteps}`);
  if (!Number.isInteger(warmupSteps) || warmupSteps < 0 || warmupSteps > totalSteps) {
    throw new Error(`warmupSteps must be an integer in [0, totalSteps = ${totalSteps}], got ${warmupSteps}`);
  }
  if (!(minRatio >= 0 && minRatio <= 1)) throw new Error(`minRatio must be in [0, 1], got ${minRatio}`);
  if (!Number.isInteger(step) || step < 0) throw new Error(`step must be an integer ≥ 0, got ${step}`);
  const done = Math.min(step + 1, totalSteps);
  if (done <= warmupSteps) return (peak * done) / warmupSteps;
  const min = peak * minRatio;
  const progress = (done - warmupSteps) / (totalSteps - warmupSteps);
  return min + ((peak - min) * (1 + Math.cos(Math.PI * progress))) / 2;
}

// OpenAI's hyper-parameters resolved to numbers live in src/ so the edge estimates a job with the
// same "auto" rules the trainer applies.
export {
  BASE_LEARNING_RATE,
  HyperparameterError,
  resolveHyperparameters,
  type AdapterMethod,
  type HyperparameterInput,
  type HyperparameterRequest,
  type ResolvedHyperparameters,
} from "../../src/hyperparameters.ts";

function checkSameShapes(what: string, tensors: TensorMap, parameters: TensorMap): void {
  for (const [name, parameter] of parameters) {
    const tensor = tensors.get(name);
    if (tensor === undefined) throw new Error(`no ${what} for parameter "${name}"`);
    if (tensor.length !== parameter.length) {
      throw new Error(`${what} of "${name}" has ${tensor.length} elements, the parameter ${parameter.length}`);
    }
  }
  for (const name of tensors.keys()) {
    if (!parameters.has(name)) throw new Error(`${what} for unknown parameter "${name}"`);
  }
}

function copyTensors(tensors: TensorMap): TensorMap {
  return new Map([...tensors].map(([name, tensor]) => [name, Float32Array.from(tensor)]));
}
