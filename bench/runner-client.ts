/**
 * What a bench asks a running runner besides completions: whether it is idle, how many adapters
 * it holds, and the internal training-job API used to train during a load. A runner started with
 * a secret needs it on every route: pass `runnerAuthorization(secret)` as `headers`.
 */
import { RUNNER_PATHS, runnerAuthorization } from "../src/protocol/runner.ts";

/** Resolves once the runner reports no running and no waiting requests (or after `timeoutMs`). */
export async function waitForIdle(baseUrl: string, headers: Record<string, string> = {}, timeoutMs = 15_000): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    const health = (await (await fetch(`${baseUrl}${RUNNER_PATHS.health}`, { headers })).json()) as { running?: number; waiting?: number };
    if (health.running === undefined || health.waiting === undefined) {
      // This runner does not say; give aborted requests a moment to release their rows.
      await sleep(300);
      return true;
    }
    if (health.running === 0 && health.waiting === 0) return true;
    await sleep(50);
  }
  return false;
}

/** A resident-adapter count and where it was read. */
export interface ResidentAdapters {
  count: number;
  source: "metrics" | "health" | "models";
}

/**
 * How many adapters the runner holds resident: the `runner_adapters_resident` gauge of /metrics
 * when it has one, else a count in /health, else the adapters /v1/models lists (those the engine
 * has registered). Throws when none of them says, rather than guessing.
 */
export async function readResidentAdapters(baseUrl: string, headers: Record<string, string> = {}): Promise<ResidentAdapters> {
  const metrics = await fetch(`${baseUrl}${RUNNER_PATHS.metrics}`, { headers });
  if (metrics.ok) {
    const text = await metrics.text();
    const match = /^runner_adapters_resident(?:\{[^}]*\})?\s+([0-9.eE+-]+)\s*$/m.exec(text);
    if (match) return { count: Number(match[1]), source: "metrics" };
  } else {
    await metrics.body?.cancel();
  }
  const health = (await (await fetch(`${baseUrl}${RUNNER_PATHS.health}`, { headers })).json()) as Record<string, unknown>;
  const fromHealth = [health.adapters_resident, health.resident_adapters, (health.adapters as { resident?: unknown } | undefined)?.resident].find(
    (value): value is number => typeof value === "number",
  );
  if (fromHealth !== undefined) return { count: fromHealth, source: "health" };
  const models = await fetch(`${baseUrl}${RUNNER_PATHS.models}`, { headers });
  if (models.ok) {
    const { data } = (await models.json()) as { data?: { owned_by?: string }[] };
    if (Array.isArray(data)) return { count: data.filter((model) => model.owned_by !== "system").length, source: "models" };
  }
  throw new Error(`the runner at ${baseUrl} reports no resident adapter count (no runner_adapters_resident in /metrics, none in /health or /v1/models)`);
}

/** A training job as `GET /internal/jobs/{id}` reports it (the fields a bench reads). */
export interface TrainingJob {
  id: string;
  status: "queued" | "running" | "succeeded" | "failed" | "cancelled";
  step: number;
  total_steps: number | null;
  error?: { code: string; message: string } | null;
}

/** The internal API of one runner, authorised by its secret. */
export class InternalApi {
  constructor(
    private readonly baseUrl: string,
    private readonly secret: string,
  ) {}

  /** Submits a training job: `POST /internal/jobs`. Throws with the status and body on refusal. */
  async submitJob(body: Record<string, unknown>): Promise<TrainingJob> {
    return this.call("POST", RUNNER_PATHS.jobs, body);
  }

  /** A job's state: `GET /internal/jobs/{id}`. */
  async job(id: string): Promise<TrainingJob> {
    return this.call("GET", RUNNER_PATHS.job(encodeURIComponent(id)));
  }

  /** Cancels a job: `POST /internal/jobs/{id}/cancel`. */
  async cancelJob(id: string): Promise<TrainingJob> {
    return this.call("POST", RUNNER_PATHS.cancelJob(encodeURIComponent(id)));
  }

  /** Polls a job until `done` holds for it; throws after `timeoutMs` or if it ends otherwise. */
  async waitForJob(id: string, done: (job: TrainingJob) => boolean, timeoutMs: number): Promise<TrainingJob> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const job = await this.job(id);
      if (done(job)) return job;
      if (["succeeded", "failed", "cancelled"].includes(job.status)) {
        throw new Error(`training job ${id} ended as ${job.status} at step ${job.step}${job.error ? `: ${job.error.message}` : ""}`);
      }
      if (performance.now() > deadline) throw new Error(`training job ${id} is still ${job.status} at step ${job.step} after ${timeoutMs} ms`);
      await sleep(100);
    }
  }

  private async call(method: string, path: string, body?: Record<string, unknown>): Promise<TrainingJob> {
    const response = await fetch(`${this.baseUrl}${path}`, {
      method,
      headers: { ...runnerAuthorization(this.secret), ...(body !== undefined ? { "content-type": "application/json" } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`${method} ${path} answered ${response.status}: ${text.slice(0, 300)}`);
    return JSON.parse(text) as TrainingJob;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
