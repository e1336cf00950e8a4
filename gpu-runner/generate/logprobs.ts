/**
 * Log-probabilities of generated tokens under the model's own distribution, softmax(logits):
 * what OpenAI's `logprobs` report. Computed from the raw logits of a position, before
 * temperature, penalties, logit_bias or a grammar reshape what is sampled.
 */
import { topKIndices } from "./sampler.ts";

/** A sampled token's log-probability and the likeliest alternatives at its position. */
export interface TokenLogprob {
  logprob: number;
  top: { id: number; logprob: number }[]; // descending; the sampled token among them only if it is one of the likeliest
}

/** log Σ exp(logits), in float64 and shifted by the maximum so that nothing overflows. */
export function logSumExp(logits: Float32Array): number {
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - max);
  return max + Math.log(sum);
}

/** The log-probability of `id` and of the `top` likeliest tokens of one position's logits. */
export function tokenLogprob(logits: Float32Array, id: number, top: number): TokenLogprob {
  const normaliser = logSumExp(logits);
  return {
    logprob: logits[id] - normaliser,
    top: top === 0 ? [] : topKIndices(logits, top).map((other) => ({ id: other, logprob: logits[other] - normaliser })),
  };
}
