/**
 * Continuous batching: one owner of the running batch, reached only through `submit` (LoRAX's
 * scheduler shape). A request joins the running batch at the next step, rows of any adapters mix,
 * admission rotates across adapters so none starves, a bounded queue refuses work it cannot
 * take, and a cancelled or disconnected request frees its row at once.
 */
import type { LlamaEngine, RowLogits } from "../engine/llama-engine.ts";
import type { SequenceBatch } from "../engine/sequence-batch.ts";
import { Completion } from "../generate/completion.ts";
import { validateGeneration, type GenerationEvent, type GenerationOptions } from "../generate/generate.ts";
import type { TextTokenizer } from "../tokenizer/tokenizer.ts";
import type { ComputeGate } from "./compute-gate.ts";

/** What the scheduler needs to make an adapter resident while a request uses it. */
export interface AdapterResidency {
  acquire(id: string): Promise<() => void>; // resolves to a release function
}

export interface SchedulerOptions {
  maxBatch: number; // rows decoded together
  maxQueue: number; // requests waiting for a row; more are refused
  prefillChunkTokens?: number; // prompt tokens fed per step beside the decoding rows (default 256)
  /**
   * Fit the prompt tokens of a step to what the hardware reads in about three quarters of a
   * decode step (measured as it runs), so a long prompt does not double the decoding rows' step
   * time; the chunk size is then the ceiling. Off: every step reads a full chunk.
   */
  adaptivePrefill?: boolean;
  adapters?: AdapterResidency | null; // absent: adapters must already be registered with the engine
  initialCapacity?: number; // KV slots per row before the cache grows
  gate?: ComputeGate | null; // shares the device with training; inference goes first
  observer?: SchedulerObserver | null; // metrics
}

/** What the scheduler reports as it runs (for metrics). */
export interface SchedulerObserver {
  step(rows: number, seconds: number): void; // one batch step
  firstToken(seconds: number): void; // a request's time from submission to its first token
  finished(promptTokens: number, completionTokens: number): void;
}

export interface ScheduledRequest {
  promptIds: number[];
  adapterId: string | null;
  options: GenerationOptions;
  signal?: AbortSignal;
}

/** Prompt tokens fed per step beside the decoding rows, unless configured. */
export const DEFAULT_PREFILL_CHUNK_TOKENS = 256;
const FIRST_ADAPTIVE_CHUNK = 16;
// A step that reads prompt tokens may cost this much more than a decode step (0.75: the decoding
// rows' worst gaps stay under twice their usual ones, with room for the machine's noise).
const PREFILL_STEP_SHARE = 0.75;

/** The queue is full: retry after the given number of seconds. */
export class QueueFullError extends Error {
  constructor(readonly retryAfterSeconds: number) {
    super(`the runner's queue is full; retry after ${retryAfterSeconds} s`);
    this.name = "QueueFullError";
  }
}

/** A request's stream of events, fed by the scheduler and read by the caller. */
class EventStream implements AsyncIterable<GenerationEvent> {
  private readonly buffered: GenerationEvent[] = [];
  private waiter: (() => void) | null = null;
  private ended = false;
  private failure: Error | null = null;
  cancelled = false;

  push(event: GenerationEvent): void {
    this.buffered.push(event);
    this.wake();
  }

  end(error: Error | null = null): void {
    this.ended = true;
    this.failure = error;
    this.wake();
  }

  private wake(): void {
    const waiter = this.waiter;
    this.waiter = null;
    waiter?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<GenerationEvent> {
    try {
      for (;;) {
        if (this.buffered.length > 0) {
          yield this.buffered.shift()!;
          continue;
        }
        if (this.ended) {
          if (this.failure !== null) throw this.failure;
          return;
        }
        await new Promise<void>((resolve) => (this.waiter = resolve));
      }
    } finally {
      // The consumer stopped reading (a client disconnect): the scheduler frees the row.
      if (!this.ended) this.cancelled = true;
    }
  }
}

interface Entry {
  request: ScheduledRequest;
  stream: EventStream;
  adapterKey: string;
  prefilled: number; // prompt tokens already in the cache
  pending: number[]; // while decoding: the last sampled token, fed at the next step
  completion: Completion;
  release: () => void;
  submittedAt: number;
  tokens: number; // generated so far
}

export class Scheduler {
  private readonly batch: SequenceBatch;
  private readonly waiting = new Map<string, Entry[]>(); // adapter key → FIFO of waiting requests
  private readonly running: Entry[] = []; // running[row] is the entry in that batch row
  private waitingCount = 0;
  private lastAdmitted: string | null = null;
  private loop: Promise<void> | null = null;
  private closed = false;
  private ending: Error | null = null; // set when a shutdown's grace period is over
  private stepMs = 50; // running estimate of one step, for Retry-After
  private decodeStepMs: number | null = null; // running estimate of a step without prompt tokens
  private readonly promptCost = new PromptCostFit(); // what a step's prompt tokens add to it

  constructor(
    private readonly engine: LlamaEngine,
    private readonly tokenizer: TextTokenizer,
    private readonly options: SchedulerOptions,
  ) {
    if (!Number.isInteger(options.maxBatch) || options.maxBatch < 1) throw new Error(`maxBatch must be a positive integer, got ${options.maxBatch}`);
    this.batch = engine.createBatch(options.maxBatch, options.initialCapacity === undefined ? {} : { initialCapacity: options.initialCapacity });
  }

  /** The most tokens (prompt plus completion) a request can hold: the model's context or the KV cache budget's. */
  get contextLimit(): number {
    return this.batch.cache.maxCapacity;
  }

  /** Rows running and requests waiting. */
  get stats(): { running: number; waiting: number } {
    return { running: this.running.length, waiting: this.waitingCount };
  }

  /**
   * Queues a request and returns its event stream. Throws at once for a request the model cannot
   * serve (GenerationError) or when the queue is full (QueueFullError).
   */
  submit(request: ScheduledRequest): AsyncIterable<GenerationEvent> {
    if (this.closed) throw new Error("the scheduler is closed");
    validateGeneration(this.engine, request.promptIds, request.options, this.batch.cache.maxCapacity);
    if (this.waitingCount >= this.options.maxQueue) this.dropAbandonedWaiting();
    if (this.waitingCount >= this.options.maxQueue) {
      const ahead = this.waitingCount + this.running.length;
      throw new QueueFullError(Math.max(1, Math.ceil((ahead * this.stepMs * 32) / this.options.maxBatch / 1000)));
    }
    const stream = new EventStream();
    const adapterKey = request.adapterId ?? "";
    const entry: Entry = {
      request,
      stream,
      adapterKey,
      prefilled: 0,
      pending: [],
      completion: new Completion(this.tokenizer, request.options, request.promptIds.length, this.batch.cache.maxCapacity),
      release: () => undefined,
      submittedAt: performance.now(),
      tokens: 0,
    };
    const queue = this.waiting.get(adapterKey) ?? [];
    queue.push(entry);
    this.waiting.set(adapterKey, queue);
    this.waitingCount++;
    this.options.gate?.setInferenceBusy(true);
    this.startLoop();
    return stream;
  }

  /**
   * Stops accepting requests and waits for the running and queued ones to finish; those still
   * going after `graceMs` end with an error their clients can read.
   */
  async close(graceMs = Number.POSITIVE_INFINITY): Promise<void> {
    this.closed = true;
    const timer = Number.isFinite(graceMs)
      ? setTimeout(() => (this.ending = new Error("the runner is shutting down; retry on another runner")), graceMs)
      : null;
    while (this.loop !== null) await this.loop;
    if (timer !== null) clearTimeout(timer);
  }

  private startLoop(): void {
    this.loop ??= this.run().finally(() => {
      this.loop = null;
      // A request submitted while the loop was winding down still gets served.
      if (this.waitingCount > 0 || this.running.length > 0) this.startLoop();
      else this.options.gate?.setInferenceBusy(false);
    });
  }

  private async run(): Promise<void> {
    while (this.running.length > 0 || this.waitingCount > 0) {
      if (this.ending !== null) this.endEverything(this.ending);
      await this.admit();
      this.dropCancelled();
      if (this.running.length === 0) {
        if (this.waitingCount === 0) break;
        await new Promise((resolve) => setImmediate(resolve));
        continue;
      }
      const started = performance.now();
      let logits: RowLogits[];
      const pending = this.nextTokens();
      try {
        logits = this.options.gate
          ? await this.options.gate.inference(() => this.engine.step(this.batch, pending))
          : await this.engine.step(this.batch, pending);
      } catch (error) {
        // A failed step ends every running request with the error rather than hanging them.
        for (let row = this.running.length - 1; row >= 0; row--) this.release(row, error as Error);
        continue;
      }
      const elapsed = performance.now() - started;
      this.stepMs = 0.9 * this.stepMs + 0.1 * elapsed;
      this.learnStepCost(pending, elapsed);
      this.options.observer?.step(this.running.length, elapsed / 1000);
      for (let row = this.running.length - 1; row >= 0; row--) {
        const entry = this.running[row];
        if (pending[row].length === 0) continue;
        if (entry.prefilled < entry.request.promptIds.length) {
          entry.prefilled += pending[row].length;
          if (entry.prefilled < entry.request.promptIds.length) continue; // more of the prompt to come
        }
        this.advance(row, logits[row].data);
      }
      // Let new submissions and cancellations in between steps.
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  /**
   * What each row feeds this step: a decoding row its last token; rows still reading their prompt
   * share a budget of `prefillChunkTokens`, first admitted first, so a long prompt is read a chunk
   * per step while the other rows keep decoding (chunked prefill); a row past the budget waits.
   */
  private nextTokens(): number[][] {
    let budget = this.prefillBudget();
    return this.running.map((entry) => {
      const prompt = entry.request.promptIds;
      if (entry.prefilled >= prompt.length) return entry.pending;
      const take = Math.min(budget, prompt.length - entry.prefilled);
      budget -= take;
      return prompt.slice(entry.prefilled, entry.prefilled + take);
    });
  }

  /**
   * Prompt tokens this step may read: a full chunk when no row is decoding (nobody waits), else,
   * with adaptive prefill, as many as keep the step within 1.75 decode steps (at least one, so a
   * prompt always progresses); until both costs are known, a small first chunk measures them.
   */
  private prefillBudget(): number {
    const chunk = this.options.prefillChunkTokens ?? DEFAULT_PREFILL_CHUNK_TOKENS;
    const decoding = this.running.some((entry) => entry.prefilled >= entry.request.promptIds.length);
    if (!this.options.adaptivePrefill || !decoding) return chunk;
    const fit = this.promptCost.fit();
    if (this.decodeStepMs === null || fit === null) return Math.min(chunk, FIRST_ADAPTIVE_CHUNK);
    // Prompt tokens ride in a run of their own, whose fixed part (reading the weights) is paid
    // whatever the chunk: size the chunk so the whole step stays within (1 + share) decode steps.
    const budgetMs = PREFILL_STEP_SHARE * this.decodeStepMs - fit.fixedMs;
    return Math.max(1, Math.min(chunk, Math.floor(budgetMs / fit.perTokenMs)));
  }

  /** Updates the step-cost estimates from a step's tokens and time. */
  private learnStepCost(fed: number[][], elapsedMs: number): void {
    let prompt = 0;
    let decoding = 0;
    this.running.forEach((entry, row) => {
      if (entry.prefilled < entry.request.promptIds.length) prompt += fed[row].length;
      else decoding++;
    });
    if (prompt === 0 && decoding > 0) this.decodeStepMs = this.decodeStepMs === null ? elapsedMs : 0.8 * this.decodeStepMs + 0.2 * elapsedMs;
    else if (prompt > 0 && (decoding === 0 || this.decodeStepMs !== null)) this.promptCost.add(prompt, elapsedMs - (decoding > 0 ? this.decodeStepMs! : 0));
  }

  /** Fills free rows, rotating over adapters so a busy adapter cannot starve the others. */
  private async admit(): Promise<void> {
    while (this.running.length < this.options.maxBatch && this.waitingCount > 0) {
      const keys = [...this.waiting.keys()].sort();
      const next = keys.find((k) => this.lastAdmitted === null || k > this.lastAdmitted) ?? keys[0];
      const queue = this.waiting.get(next)!;
      const entry = queue.shift()!;
      if (queue.length === 0) this.waiting.delete(next);
      this.waitingCount--;
      this.lastAdmitted = next;
      if (entry.stream.cancelled || entry.request.signal?.aborted) {
        this.end(entry, null);
        continue;
      }
      try {
        if (entry.request.adapterId !== null && this.options.adapters) entry.release = await this.options.adapters.acquire(entry.request.adapterId);
        this.batch.addRow(entry.request.adapterId); // the new row's index is this.running.length
      } catch (error) {
        entry.release();
        this.end(entry, error as Error);
        continue;
      }
      this.running.push(entry);
    }
  }

  /** Ends every running and waiting request with `error`. */
  private endEverything(error: Error): void {
    for (let row = this.running.length - 1; row >= 0; row--) this.release(row, error);
    for (const queue of this.waiting.values()) for (const entry of queue) this.end(entry, error);
    this.waiting.clear();
    this.waitingCount = 0;
  }

  /** Ends waiting requests whose client has gone, so they stop holding queue slots. */
  private dropAbandonedWaiting(): void {
    for (const [key, queue] of this.waiting) {
      const kept = queue.filter((entry) => !(entry.stream.cancelled || entry.request.signal?.aborted));
      for (const entry of queue) if (!kept.includes(entry)) this.end(entry, null);
      this.waitingCount -= queue.length - kept.length;
      if (kept.length === 0) this.waiting.delete(key);
      else this.waiting.set(key, kept);
    }
  }

  private dropCancelled(): void {
    for (let row = this.running.length - 1; row >= 0; row--) {
      const entry = this.running[row];
      if (entry.stream.cancelled || entry.request.signal?.aborted) this.release(row, null);
    }
  }

  /** Samples the row's next token and streams it, or finishes the row. */
  private advance(row: number, logits: Float32Array): void {
    const entry = this.running[row];
    const { events, next } = entry.completion.advance(logits);
    if (entry.tokens++ === 0) this.options.observer?.firstToken((performance.now() - entry.submittedAt) / 1000);
    for (const event of events) {
      if (event.type === "finish") this.options.observer?.finished(event.promptTokens, event.completionTokens);
      entry.stream.push(event);
    }
    if (next === null) this.release(row, null);
    else entry.pending = [next];
  }

  /** Ends a request's stream (with `error` if it failed) and frees its grammar. */
  private end(entry: Entry, error: Error | null): void {
    entry.stream.end(error);
    entry.request.options.constraint?.dispose();
  }

  /** Ends a row's stream (with `error` if it failed) and frees its row and adapter. */
  private release(row: number, error: Error | null): void {
    const entry = this.running[row];
    this.end(entry, error);
    entry.release();
    const moved = this.batch.removeRow(row);
    const last = this.running.pop()!;
    if (moved !== null) this.running[row] = last; // the batch moved its last row into this slot too
  }
}

/**
 * What prompt tokens add to a step, fitted as fixed + perToken · tokens by least squares over the
 * recent steps that read some (older ones fade): the fixed part is a run's pass over the weights,
 * paid however few tokens it reads.
 */
export class PromptCostFit {
  private sums = { n: 0, t: 0, ms: 0, tt: 0, tms: 0 };

  /** Records a step that read `tokens` prompt tokens at `extraMs` over a decode step. */
  add(tokens: number, extraMs: number): void {
    const s = this.sums;
    const keep = 0.9;
    this.sums = {
      n: keep * s.n + 1,
      t: keep * s.t + tokens,
      ms: keep * s.ms + extraMs,
      tt: keep * s.tt + tokens * tokens,
      tms: keep * s.tms + tokens * extraMs,
    };
  }

  /** The fitted cost, or null before any step; with one chunk size seen so far, all of it counts per token. */
  fit(): { fixedMs: number; perTokenMs: number } | null {
    const { n, t, ms, tt, tms } = this.sums;
    if (n === 0) return null;
    const spread = n * tt - t * t;
    const perTokenMs = spread > 1e-6 * n * tt ? (n * tms - t * ms) / spread : ms / t;
    const fixedMs = (ms - perTokenMs * t) / n;
    if (!(perTokenMs > 0) || fixedMs < 0) return { fixedMs: 0, perTokenMs: Math.max(ms / t, 1e-3) };
    return { fixedMs, perTokenMs };
  }
}
