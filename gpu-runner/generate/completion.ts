/**
 * One sequence's completion, token by token: sampling, end-of-sequence, incremental
 * detokenisation, stop sequences and the length limit. Both the single-sequence `generate` loop
 * and the runner's scheduler drive it, so a request streams the same events either way.
 */
import { StreamDecoder } from "../tokenizer/stream-decoder.ts";
import type { TextTokenizer } from "../tokenizer/tokenizer.ts";
import type { FinishReason, GenerationEvent, GenerationOptions, TokenConstraint } from "./generate.ts";
import { LogitAdjustments } from "./logit-adjustments.ts";
import { tokenLogprob } from "./logprobs.ts";
import { Sampler } from "./sampler.ts";
import { StopSequenceFilter } from "./stop-sequences.ts";

export class Completion {
  private readonly sampler: Sampler;
  private readonly eos: Set<number>;
  private readonly decoder: StreamDecoder;
  private readonly stops: StopSequenceFilter;
  private readonly limit: number; // new tokens allowed: the request's maximum, within the context
  private readonly adjustments: LogitAdjustments;
  private readonly constraint: TokenConstraint | null;
  private readonly topLogprobs: number | null;
  private raw: Float32Array | null = null; // the logits before they are reshaped, when log-probabilities need them
  private text = "";
  private completionTokens = 0;

  constructor(
    private readonly tokenizer: TextTokenizer,
    options: GenerationOptions,
    private readonly promptTokens: number,
    contextLength: number,
  ) {
    this.sampler = new Sampler(options);
    this.eos = new Set(options.eosTokenIds ?? tokenizer.eosTokenIds);
    this.decoder = new StreamDecoder(tokenizer, { skipSpecialTokens: true });
    this.stops = new StopSequenceFilter(options.stop ?? []);
    this.limit = Math.min(options.maxNewTokens, contextLength - promptTokens);
    this.adjustments = new LogitAdjustments(options);
    this.constraint = options.constraint ?? null;
    this.topLogprobs = options.topLogprobs ?? null;
  }

  /**
   * Takes the logits of the sequence's last position and returns the events to stream, and the
   * token to feed next — or null when the sequence has ended (its last event is then `finish`).
   */
  advance(logits: Float32Array): { events: GenerationEvent[]; next: number | null } {
    // Embedding rows past the tokenizer's vocabulary (padding some checkpoints add) are never sampled.
    const usable = Math.min(this.tokenizer.vocabSize, logits.length);
    const view = usable < logits.length ? logits.subarray(0, usable) : logits;
    // Log-probabilities are the model's own: keep the logits as they were before reshaping them.
    const reshaped = this.adjustments.active || this.constraint !== null;
    const raw = this.topLogprobs !== null && reshaped ? this.keepRaw(view) : view;
    this.adjustments.apply(view);
    this.constraint?.mask(view);
    const id = this.sampler.sample(view);
    this.completionTokens++;
    if (this.eos.has(id)) return { events: [this.finish("stop")], next: null };
    this.constraint?.accept(id);
    this.adjustments.record(id);
    const released = this.stops.push(this.decoder.push(id));
    this.text += released;
    const token: GenerationEvent = { type: "token", id, text: released };
    if (this.topLogprobs !== null) token.logprob = tokenLogprob(raw, id, this.topLogprobs);
    if (this.stops.done) return { events: [token, this.finish("stop")], next: null };
    if (this.completionTokens >= this.limit) return { events: [token, this.finish("length")], next: null };
    return { events: [token], next: id };
  }

  private keepRaw(logits: Float32Array): Float32Array {
    if (this.raw === null || this.raw.length !== logits.length) this.raw = new Float32Array(logits.length);
    this.raw.set(logits);
    return this.raw;
  }

  private finish(reason: FinishReason): GenerationEvent {
    // Ended by EOS or length rather than a stop sequence: what was held back is real output.
    const tail = this.stops.done ? "" : this.stops.push(this.decoder.flush()) + this.stops.flush();
    this.text += tail;
    return { type: "finish", reason, tail, text: this.text, promptTokens: this.promptTokens, completionTokens: this.completionTokens };
  }
}
