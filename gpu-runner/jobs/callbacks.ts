/**
 * Delivers a job's events and files to its callback URL, in order, with the runner secret. Each
 * job has one queue: consecutive events travel together in one POST, a failed delivery is retried
 * with exponential backoff (the receiver treats event ids and checkpoint steps idempotently), and a
 * delivery that keeps failing is dropped with a warning once its retries are spent; the job's state
 * stays readable at `GET /internal/jobs/{id}` for the control plane to reconcile. Every delivery
 * carries the job's placement; a 409 `job_moved` means the control plane gave the job to another
 * runner: the queue is dropped and the route's `onMoved` tells the job manager to stop the job.
 */
import { createHash } from "node:crypto";
import { CALLBACK_PATHS, CONTENT_SHA256_HEADER, JOB_MOVED_CODE, PLACEMENT_HEADER, runnerAuthorization, type JobEvent } from "../../src/protocol/runner.ts";

type Delivery = { kind: "events"; events: JobEvent[] } | { kind: "blob"; path: string; bytes: Uint8Array };

export interface CallbackOptions {
  secret: string | null;
  retries?: number; // attempts after the first; default 6
  backoffMs?: number; // first retry delay, doubled each time; default 500
  timeoutMs?: number; // per attempt; default 30 s
  fetch?: typeof fetch;
  log?: (message: string) => void;
}

/** Where a job's deliveries belong: its placement (sent in PLACEMENT_HEADER) and who to tell when the job was moved. */
export interface CallbackRoute {
  placement?: string;
  onMoved?: () => void;
}

const MAX_EVENTS_PER_POST = 100;

export class CallbackClient {
  private readonly queues = new Map<string, { url: string; route: CallbackRoute; items: Delivery[]; draining: Promise<void> | null }>();
  private counters = { delivered: 0, failed: 0 };
  private readonly moved = new Set<string>(); // jobs the control plane gave to another runner: nothing more is sent

  constructor(private readonly options: CallbackOptions) {}

  /** Queues events for the job's callback. */
  events(jobId: string, url: string, events: JobEvent[], route: CallbackRoute = {}): void {
    if (this.moved.has(jobId)) return;
    const queue = this.queue(jobId, url, route);
    const last = queue.items.at(-1);
    if (last?.kind === "events" && last.events.length + events.length <= MAX_EVENTS_PER_POST && queue.draining !== null && queue.items.length > 1) {
      last.events.push(...events); // not yet in flight (the head is): ride along
    } else {
      queue.items.push({ kind: "events", events: [...events] });
    }
    this.drain(jobId);
  }

  /** Queues a file (a checkpoint, the trainer state, the adapter) for `{url}{path}`. */
  blob(jobId: string, url: string, path: string, bytes: Uint8Array, route: CallbackRoute = {}): void {
    if (this.moved.has(jobId)) return;
    this.queue(jobId, url, route).items.push({ kind: "blob", path, bytes });
    this.drain(jobId);
  }

  /** Sends the job's callbacks again (the control plane gave the job back to this runner). */
  reopen(jobId: string): void {
    this.moved.delete(jobId);
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

  private queue(jobId: string, url: string, route: CallbackRoute) {
    let queue = this.queues.get(jobId);
    if (queue === undefined) {
      queue = { url: url.replace(/\/+$/, ""), route, items: [], draining: null };
      this.queues.set(jobId, queue);
    }
    return queue;
  }

  private drain(jobId: string): void {
    const queue = this.queues.get(jobId)!;
    queue.draining ??= (async () => {
      while (queue.items.length > 0) {
        if ((await this.deliver(jobId, queue, queue.items[0])) === "moved") {
          this.moved.add(jobId);
          queue.items.length = 0;
          queue.route.onMoved?.();
          return;
        }
        queue.items.shift();
      }
    })().finally(() => {
      queue.draining = null;
      if (queue.items.length === 0) this.queues.delete(jobId);
    });
  }

  private async deliver(jobId: string, queue: { url: string; route: CallbackRoute }, delivery: Delivery): Promise<"done" | "moved"> {
    const retries = this.options.retries ?? 6;
    const url = delivery.kind === "events" ? `${queue.url}${CALLBACK_PATHS.events}` : `${queue.url}${delivery.path}`;
    let lastError = "";
    for (let attempt = 0; attempt <= retries; attempt++) {
      if (attempt > 0) await new Promise((resolve) => setTimeout(resolve, (this.options.backoffMs ?? 500) * 2 ** (attempt - 1)));
      try {
        const response = await (this.options.fetch ?? fetch)(url, this.request(queue.route, delivery));
        if (response.status === 409) {
          const body = (await response.json().catch(() => null)) as { error?: { code?: string } } | null;
          if (body?.error?.code === JOB_MOVED_CODE) {
            this.options.log?.(`job ${jobId} was moved to another runner; its callbacks stop here`);
            return "moved";
          }
        }
        await response.body?.cancel().catch(() => undefined);
        if (response.ok) {
          this.counters.delivered++;
          return "done";
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
    return "done";
  }

  private request(route: CallbackRoute, delivery: Delivery): RequestInit {
    const headers: Record<string, string> = {};
    if (this.options.secret !== null) Object.assign(headers, runnerAuthorization(this.options.secret));
    if (route.placement !== undefined) headers[PLACEMENT_HEADER] = route.placement;
    const signal = AbortSignal.timeout(this.options.timeoutMs ?? 30_000);
    if (delivery.kind === "events") {
      headers["content-type"] = "application/json";
      return { method: "POST", headers, body: JSON.stringify({ events: delivery.events }), signal };
    }
    headers["content-type"] = "application/octet-stream";
    headers[CONTENT_SHA256_HEADER] = createHash("sha256").update(delivery.bytes).digest("hex");
    return { method: "PUT", headers, body: delivery.bytes, signal };
  }
}
