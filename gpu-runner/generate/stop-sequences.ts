/**
 * Stop sequences on streamed text: text is released only once it cannot be the start of a stop
 * sequence, so a stop string split across tokens is never partly sent to the client.
 */
export class StopSequenceFilter {
  private pending = "";
  private stopped = false;

  constructor(private readonly stops: readonly string[]) {
    for (const stop of stops) if (stop.length === 0) throw new RangeError("stop sequences must not be empty");
  }

  /** True once a stop sequence has been seen; later text is dropped. */
  get done(): boolean {
    return this.stopped;
  }

  /** Feeds new text; returns what can safely be released now. */
  push(text: string): string {
    if (this.stopped) return "";
    this.pending += text;
    let cut = -1;
    for (const stop of this.stops) {
      const at = this.pending.indexOf(stop);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      this.stopped = true;
      const released = this.pending.slice(0, cut);
      this.pending = "";
      return released;
    }
    // Hold back the longest tail that is a proper prefix of some stop sequence.
    let hold = 0;
    for (const stop of this.stops) {
      for (let n = Math.min(stop.length - 1, this.pending.length); n > hold; n--) {
        if (this.pending.endsWith(stop.slice(0, n))) {
          hold = n;
          break;
        }
      }
    }
    const released = this.pending.slice(0, this.pending.length - hold);
    this.pending = this.pending.slice(this.pending.length - hold);
    return released;
  }

  /** Releases whatever was held back (the stream ended without a stop). */
  flush(): string {
    const rest = this.stopped ? "" : this.pending;
    this.pending = "";
    return rest;
  }
}
