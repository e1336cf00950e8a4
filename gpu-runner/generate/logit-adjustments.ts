/**
 * What a request adds to the logits before sampling: OpenAI's `logit_bias`, and its presence and
 * frequency penalties over the tokens generated so far:
 *   logit[j] += bias[j] − count[j] · frequency_penalty − (count[j] > 0) · presence_penalty
 * Only tokens with a bias or a count are touched, so a step costs what the completion holds,
 * not the vocabulary.
 */
export interface LogitAdjustmentOptions {
  presencePenalty?: number;
  frequencyPenalty?: number;
  logitBias?: ReadonlyMap<number, number>;
}

export class LogitAdjustments {
  private readonly presence: number;
  private readonly frequency: number;
  private readonly bias: ReadonlyMap<number, number>;
  private readonly counts = new Map<number, number>(); // generated token → occurrences

  constructor(options: LogitAdjustmentOptions) {
    this.presence = options.presencePenalty ?? 0;
    this.frequency = options.frequencyPenalty ?? 0;
    this.bias = options.logitBias ?? new Map();
  }

  /** Whether `apply` changes anything at all for this request. */
  get active(): boolean {
    return this.bias.size > 0 || this.presence !== 0 || this.frequency !== 0;
  }

  /** Adds the biases and subtracts the penalties, in place; ids past `logits` are ignored. */
  apply(logits: Float32Array): void {
    for (const [id, bias] of this.bias) if (id < logits.length) logits[id] += bias;
    if (this.presence === 0 && this.frequency === 0) return;
    for (const [id, count] of this.counts) if (id < logits.length) logits[id] -= count * this.frequency + this.presence;
  }

  /** Counts a generated token for the penalties. */
  record(id: number): void {
    this.counts.set(id, (this.counts.get(id) ?? 0) + 1);
  }
}
