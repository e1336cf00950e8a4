/**
 * Test support: drives a TokenConstraint the way a sampler would, but picking uniformly among the
 * tokens mask() leaves, so every corner of a grammar gets exercised, and checks the constraint's
 * own invariants at every step.
 */
import { Rng } from "../../random.ts";
import { makeByteLevelTokenizerFiles } from "../../tokenizer/byte-level.ts";
import { TextTokenizer } from "../../tokenizer/tokenizer.ts";
import type { TokenConstraint } from "./token-constraint.ts";

/** What a walk produced. */
export interface Walk {
  /** The tokens before the end-of-sequence token. */
  ids: number[];
  /** Whether it reached an end-of-sequence token within the step limit. */
  ended: boolean;
}

/** Options of {@link randomWalk}. */
export interface WalkOptions {
  seed: number;
  vocabSize: number;
  stopTokenIds: readonly number[];
  /** Length of the logits rows; longer than the vocabulary for models with padded embeddings. */
  logitsLength?: number;
  maxSteps?: number;
  /** Tokens to accept first, as a model might have chosen them. */
  forced?: readonly number[];
}

/** Samples uniformly among allowed tokens until an end-of-sequence token or the step limit. */
export function randomWalk(constraint: TokenConstraint, options: WalkOptions): Walk {
  const rng = new Rng(options.seed);
  const stops = new Set(options.stopTokenIds);
  const logits = new Float32Array(options.logitsLength ?? options.vocabSize);
  const ids: number[] = [];
  for (const id of options.forced ?? []) {
    constraint.accept(id);
    ids.push(id);
  }
  for (let step = 0; step < (options.maxSteps ?? 4000); step++) {
    logits.fill(0);
    constraint.mask(logits);
    // Counted, then picked by rank, without listing 150k ids at every step.
    let allowed = 0;
    for (let id = 0; id < logits.length; id++) {
      const logit = logits[id];
      if (logit === 0) allowed++;
      else if (logit !== Number.NEGATIVE_INFINITY) throw new Error(`mask() changed logit ${id} to ${logit}`);
    }
    for (let id = options.vocabSize; id < logits.length; id++) if (logits[id] === 0) throw new Error(`mask() allowed padding row ${id}`);
    if (allowed === 0) throw new Error(`no token is allowed after ${JSON.stringify(ids)}`);
    if (constraint.isTerminated() && [...stops].filter((id) => logits[id] === 0).length !== allowed) {
      throw new Error("a terminated constraint allowed more than end-of-sequence");
    }
    let rank = Math.floor(rng.uniform() * allowed);
    let id = 0;
    for (; id < logits.length; id++) if (logits[id] === 0 && rank-- === 0) break;
    constraint.accept(id);
    if (stops.has(id)) return { ids, ended: true };
    ids.push(id);
  }
  return { ids, ended: false };
}

/** The shipped model's kind of tokenizer: one id per byte, then <|endoftext|>, <|im_start|>, <|im_end|>. */
export function byteLevelTokenizer(): TextTokenizer {
  const { tokenizerJson, tokenizerConfig } = makeByteLevelTokenizerFiles();
  return TextTokenizer.fromJson(tokenizerJson, tokenizerConfig);
}
