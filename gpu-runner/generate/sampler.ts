/**
 * Picks the next token from logits: greedy, or sampled with temperature, top-k and top-p from a
 * seeded generator, so the same seed gives the same tokens.
 */
import { Rng } from "../random.ts";

export interface SamplingOptions {
  temperature?: number; // 0 = greedy (argmax); default 1
  topK?: number; // keep the k most likely tokens (0 or absent: all)
  topP?: number; // keep the smallest set whose probability reaches p (1 or absent: all)
  seed?: number; // absent: a random seed
  presencePenalty?: number; // subtracted once from every token already generated (OpenAI's presence_penalty)
  frequencyPenalty?: number; // subtracted per occurrence of a token already generated
  logitBias?: ReadonlyMap<number, number>; // token id → added to its logit
}

/** Checks sampling options, naming the offending field. */
export function validateSamplingOptions(options: SamplingOptions): void {
  const { temperature, topK, topP, seed, presencePenalty, frequencyPenalty, logitBias } = options;
  if (temperature !== undefined && !(Number.isFinite(temperature) && temperature >= 0)) {
    throw new RangeError(`temperature must be a finite number ≥ 0, got ${temperature}`);
  }
  if (topK !== undefined && !(Number.isInteger(topK) && topK >= 0)) throw new RangeError(`topK must be an integer ≥ 0, got ${topK}`);
  if (topP !== undefined && !(Number.isFinite(topP) && topP > 0 && topP <= 1)) throw new RangeError(`topP must be in (0, 1], got ${topP}`);
  if (seed !== undefined && !Number.isSafeInteger(seed)) throw new RangeError(`seed must be an integer, got ${seed}`);
  for (const [name, value] of [
    ["presencePenalty", presencePenalty],
    ["frequencyPenalty", frequencyPenalty],
  ] as const) {
    if (value !== undefined && !Number.isFinite(value)) throw new RangeError(`${name} must be a finite number, got ${value}`);
  }
  for (const [id, bias] of logitBias ?? []) {
    if (!Number.isInteger(id) || id < 0) throw new RangeError(`logitBias keys must be token ids, got ${id}`);
    if (!Number.isFinite(bias)) throw new RangeError(`logitBias of token ${id} must be a finite number, got ${bias}`);
  }
}

/** A per-sequence sampler holding its own random state. */
export class Sampler {
  private readonly rng: Rng;
  private readonly temperature: number;
  private readonly topK: number;
  private readonly topP: number;
  private weights = new Float64Array(0); // sampleFull's scratch, kept between tokens

  constructor(options: SamplingOptions = {}) {
    validateSamplingOptions(options);
    this.temperature = options.temperature ?? 1;
    this.topK = options.topK ?? 0;
    this.topP = options.topP ?? 1;
    this.rng = new Rng(options.seed ?? Math.floor(Math.random() * 2 ** 32));
  }

  /** The next token id for one position's logits (tokens at -Infinity are never drawn). */
  sample(logits: Float32Array): number {
    if (this.temperature === 0) return argmax(logits);
    if (this.topK === 0 && this.topP === 1) return this.sampleFull(logits);
    // Candidates in descending order of logit; ties go to the lower id so results are stable.
    let candidates: number[];
    if (this.topK > 0 && this.topK < logits.length) candidates = topKIndices(logits, this.topK);
    else candidates = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a] || a - b);
    const max = logits[candidates[0]];
    const weights = candidates.map((id) => Math.exp((logits[id] - max) / this.temperature));
    let total = weights.reduce((s, w) => s + w, 0);
    if (this.topP < 1) {
      let cumulative = 0;
      let keep = 0;
      while (keep < weights.length && cumulative < this.topP * total) cumulative += weights[keep++];
      candidates = candidates.slice(0, Math.max(1, keep));
      weights.length = candidates.length;
      total = weights.reduce((s, w) => s + w, 0);
    }
    let threshold = this.rng.uniform() * total;
    for (let i = 0; i < candidates.length; i++) {
      threshold -= weights[i];
      if (threshold < 0) return candidates[i];
    }
    return candidates[candidates.length - 1];
  }

  // Without a top-k or top-p cut the order of candidates does not matter: one pass over the
  // vocabulary in id order, no sort (a sort of 150k logits per token would dominate decoding).
  private sampleFull(logits: Float32Array): number {
    const max = logits[argmax(logits)];
    const scale = 1 / this.temperature;
    if (this.weights.length < logits.length) this.weights = new Float64Array(logits.length);
    const weights = this.weights;
    let total = 0;
    for (let id = 0; id < logits.length; id++) {
      weights[id] = Math.exp((logits[id] - max) * scale);
      total += weights[id];
    }
    let threshold = this.rng.uniform() * total;
    let last = 0;
    for (let id = 0; id < logits.length; id++) {
      if (weights[id] === 0) continue;
      last = id;
      threshold -= weights[id];
      if (threshold < 0) return id;
    }
    return last;
  }
}

/** Index of the largest logit (the lowest such index on ties). */
export function argmax(logits: Float32Array): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

/** The ids of the k largest logits, largest first (the lower id first on ties). */
export function topKIndices(logits: Float32Array, k: number): number[] {
  // A sorted buffer of k is enough: k is small next to the vocabulary.
  const top: number[] = [];
  for (let id = 0; id < logits.length; id++) {
    const value = logits[id];
    if (top.length === k && value <= logits[top[k - 1]]) continue;
    let at = top.length;
    while (at > 0 && logits[top[at - 1]] < value) at--;
    top.splice(at, 0, id);
    if (top.length > k) top.pop();
  }
  return top;
}
