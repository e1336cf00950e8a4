/**
 * One sequence's grammar state: which tokens may come next, and advancing by the sampled one.
 * The sampler calls mask() on the row's logits before drawing and accept() after; the bitmask is
 * computed once per state and reused by isTerminated() and mask().
 */
import type { NativeMatcher, XGrammarRuntime } from "./xgrammar-runtime.ts";

/** One sequence's matcher. */
export interface TokenConstraint {
  /**
   * Sets every logit the grammar forbids now to -Infinity, in place. Entries past the
   * tokenizer's vocabulary (padded embedding rows) are always forbidden.
   */
  mask(logits: Float32Array): void;
  /** Advances by `tokenId`; throws if the grammar does not allow it here. */
  accept(tokenId: number): void;
  /** Whether the text is complete and only an end-of-sequence token may follow. */
  isTerminated(): boolean;
  /** Frees the matcher; the constraint must not be used afterwards. */
  dispose(): void;
}

/** What a constraint shares with every other one of its compiler. */
export interface ConstraintVocabulary {
  readonly vocabSize: number;
  readonly stopTokenIds: readonly number[];
  /** Bitmask of the stop tokens, ceil(vocabSize / 32) words. */
  readonly stopBitmask: Int32Array;
  /** Decodes one token for error messages. */
  describeToken(tokenId: number): string;
}

// A constraint dropped without dispose() still frees its matcher when it is collected.
const unreachableMatchers = new FinalizationRegistry<NativeMatcher>((matcher) => matcher.delete());

/** A TokenConstraint over an xgrammar matcher. */
export class MatcherConstraint implements TokenConstraint {
  readonly #runtime: XGrammarRuntime;
  readonly #vocabulary: ConstraintVocabulary;
  readonly #bitmask: Int32Array;
  #matcher: NativeMatcher | null;
  #bitmaskFresh = false;

  constructor(runtime: XGrammarRuntime, matcher: NativeMatcher, vocabulary: ConstraintVocabulary) {
    this.#runtime = runtime;
    this.#matcher = matcher;
    this.#vocabulary = vocabulary;
    this.#bitmask = new Int32Array(vocabulary.stopBitmask.length);
    unreachableMatchers.register(this, matcher, this);
  }

  mask(logits: Float32Array): void {
    const bitmask = this.#currentBitmask();
    const vocabSize = Math.min(this.#vocabulary.vocabSize, logits.length);
    const words = vocabSize >>> 5;
    // Runs of fully forbidden words are filled natively; mixed words go bit by bit.
    let runStart = -1;
    for (let word = 0; word < words; word++) {
      const bits = bitmask[word];
      if (bits === 0) {
        if (runStart < 0) runStart = word << 5;
        continue;
      }
      if (runStart >= 0) {
        logits.fill(Number.NEGATIVE_INFINITY, runStart, word << 5);
        runStart = -1;
      }
      if (bits === -1) continue;
      const base = word << 5;
      for (let bit = 0; bit < 32; bit++) if (((bits >>> bit) & 1) === 0) logits[base + bit] = Number.NEGATIVE_INFINITY;
    }
    if (runStart >= 0) logits.fill(Number.NEGATIVE_INFINITY, runStart, words << 5);
    for (let id = words << 5; id < vocabSize; id++) if (((bitmask[id >>> 5] >>> (id & 31)) & 1) === 0) logits[id] = Number.NEGATIVE_INFINITY;
    if (logits.length > vocabSize) logits.fill(Number.NEGATIVE_INFINITY, vocabSize);
  }

  accept(tokenId: number): void {
    const matcher = this.#live();
    if (!Number.isInteger(tokenId) || tokenId < 0 || tokenId >= this.#vocabulary.vocabSize) {
      throw new Error(`token id ${tokenId} is outside the vocabulary [0, ${this.#vocabulary.vocabSize})`);
    }
    if (!matcher.AcceptToken(tokenId, false)) {
      const state = matcher.IsTerminated() ? "after the grammar has ended" : "here";
      throw new Error(`the grammar does not allow token ${tokenId} (${this.#vocabulary.describeToken(tokenId)}) ${state}`);
    }
    this.#bitmaskFresh = false;
  }

  isTerminated(): boolean {
    if (this.#live().IsTerminated()) return true;
    const bitmask = this.#currentBitmask();
    const stops = this.#vocabulary.stopBitmask;
    for (let word = 0; word < bitmask.length; word++) if ((bitmask[word] & ~stops[word]) !== 0) return false;
    return true;
  }

  dispose(): void {
    if (this.#matcher === null) return;
    unreachableMatchers.unregister(this);
    this.#matcher.delete();
    this.#matcher = null;
  }

  #currentBitmask(): Int32Array {
    if (!this.#bitmaskFresh) {
      const matcher = this.#live();
      // After the stop token nothing may follow but more stop tokens (a sampler may pad with them).
      if (matcher.IsTerminated()) this.#bitmask.set(this.#vocabulary.stopBitmask);
      else this.#runtime.readBitmask(matcher, this.#vocabulary.vocabSize, this.#bitmask);
      this.#bitmaskFresh = true;
    }
    return this.#bitmask;
  }

  #live(): NativeMatcher {
    if (this.#matcher === null) throw new Error("this token constraint has been disposed");
    return this.#matcher;
  }
}
