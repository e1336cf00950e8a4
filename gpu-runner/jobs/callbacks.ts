/**
 * Delivers a job's events and files to its callback URL, in order, with the runner secret. Each
 * job has one queue: consecutive events travel together in one POST, a failed delivery is retried
 * with exponential backoff (the receiver treats event ids and checkpoint steps idempotently), and a
 * delivery that keeps failing is dropped with a warning once its retries are spent; the job's state
 * stays readable at `GET /internal/jobs/{id}` for the control plane to reconcile.
 */
import { createHash } from "node:crypto";
import { CALLBACK_PATHS, type JobEvent } from "../../src/protocol/runner.ts";

type Delivery = { kind: "events"; events: JobEvent[] } | { kind: "blob"; path: string; bytes: Uint8Array };

export interface CallbackOptions {
  secret: string | null;
  retries?: number; // attempts after the first; default 6
  backoffMs?: number; // first retry delay, doubled each time; default 500
  timeoutMs?: number; // per attempt; default 30 s
  fetch?: typeof fetch;
  log?: (message: string) => void;
}

const MAX_EVENTS_PER_POST = 100;

export class CallbackClient {
  private readonly queues = new Map<string, { url: string; items: Delivery[]; draining: Promise<void> | null }>();
  private counters = { delivered: 0, failed: 0 };

  constructor(private readonly options: CallbackOptions) {}

  /** Queues events for the job's callback. */
  events(jobId: string, url: string, events: JobEvent[]): void {
    const queue = this.queue(jobId, url);
    const last = queue.items.at(-1);
    if (last?.kind === "events" && last.events.length + events.length <= MAX_EVENTS_PER_POST && queue.draining !== null && queue.items.length > 1) {
      last.events.push(...events); // not yet in flight (the head is): ride along
    } else {
      queue.items.push({ kind: "events", events: [...events] });
    }
    this.drain(jobId);
  }

  /** Queues a file (a checkpoint, the trainer state, the adapter) for `{url}{path}`. */
  blob(jobId: string, url: string, path: string, bytes: Uint8Array): void {
    this.queue(jobId, url).items.push({ kind: "blob", path, bytes });
    this.drain(jobId);
  }

  /** Resolves when everything queued for the job has been delivered or given up on. */
  async flushed(jobId: string): Promise<void> {
    while (this.queues.get(jobId)?.draining) await this.queues.get(jobId)!.draining;
  }

  stats(): { delivered: number; failed: number; pending: number } {
    let pending = 0;
    for (const queue of this.queues.values()) pending += queue.items.length;
    return { ...this.counters, pending };
  }

  private queue(jobId: string, url: string) {
    let queue = this.queues.get(jobId);
    if (queue === undefined) this.queues.set(jobId, (queue = { url: url.replace(/\/+$/, ""), items: [], draining: null }));
    return queue;
  }

  private drain(jobId: string): void {
    const queue = this.queues.get(jobId)!;
    queue.draining ??= (async () => {
      while (queue.items.length > 0) {
        await this.deliver(queue.url, queue.items[0]);
        queue.items.shift();
      }
    })().finally(() => {
      queue.draining = null;
      if (queue.items.length === 0) this.queues.delete(jobId);
    });
  }

  private async deliver(base: string, delivery: Delivery): Promise<void> {
    const retries = this.options.retries ?? 6;
    const url = delivery.kind === "events" ? `${base}${CALLBACK_PATHS.events}` : `${base}${delivery.path}`;
    let lastError = "";
    for (let attempt = 0; attempt <= retries; attempt++) {
      if (attempt > 0) await new Promise((resolve) => setTimeout(resolve, (this.options.backoffMs ?? 500) * 2 ** (attempt - 1)));
      try {
        const response = await (this.options.fetch ?? fetch)(url, this.request(delivery));
        await response.body?.cancel();
        if (response.ok) {
          this.counters.delivered++;
          return;
        }
        lastError = `answered ${response.status}`;
        // A 4xx other than 408/429 will not get better by retrying.
        if (response.status < 500 && response.status !== 408 && response.status !== 429) break;
      } catch (error) {
        lastError = (error as Error).message;
      }
    }
    this.counters.failed++;
    this.options.log?.(`callback ${url} failed (${lastError}); dropped after ${retries + 1} attempts`);
  }

  private request(delivery: Delivery): RequestInit {
    const headers: Record<string, string> = {};
    if (this.options.secret !== null) headers.authorization = `Bearer ${this.options.secret}`;
    const signal = AbortSignal.timeout(this.options.timeoutMs ?? 30_000);
    if (delivery.kind === "events") {
      headers["content-type"] = "application/json";
      return { method: "POST", headers, body: JSON.stringify({ events: delivery.events }), signal };
    }
    headers["content-type"] = "application/octet-stream";
    headers["x-content-sha256"] = createHash("sha256").update(delivery.bytes).digest("hex");
    return { method: "PUT", headers, body: delivery.bytes, signal };
  }
}
