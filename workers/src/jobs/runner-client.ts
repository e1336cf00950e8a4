/**
 * The edge's calls to a runner's internal job API (runner secret): submit a job, cancel it, and
 * fetch a finished adapter the runner could not deliver. Requests are typed by the shared
 * protocol (src/protocol/runner.ts), so the two sides cannot drift apart. A failed call knows the
 * runner's own reason apart from the runner's address: tenants may read the first, only logs the
 * second.
 */
import { eq } from "drizzle-orm";
import type { z } from "zod";
import { CONTENT_SHA256_HEADER, RUNNER_PATHS, runnerAuthorization, type trainingJobRequestSchema } from "../../../src/protocol/runner.ts";
import type { Database } from "../db/client.ts";
import { runners } from "../db/schema.ts";

export type RunnerJobRequest = z.input<typeof trainingJobRequestSchema>;

const TIMEOUT_MS = 15_000;

/** A runner's answer that was not a success. Its message (for logs) names the runner; `reason` does not. */
export class RunnerCallError extends Error {
  override readonly name = "RunnerCallError";
  constructor(
    readonly status: number | null, // null: no answer at all
    /** What went wrong, in words a tenant may read: the runner's own error message, never its address. */
    readonly reason: string,
    target: string, // "POST http://runner/internal/jobs"
  ) {
    super(`${target} ${status === null ? "failed" : `answered ${status}`}: ${reason}`);
  }

  /** Whether asking again later may help (no answer, 5xx, 408, 429). */
  get retryable(): boolean {
    return this.status === null || this.status >= 500 || this.status === 408 || this.status === 429;
  }
}

/** The base URL of a runner by the id a job recorded; null when it is no longer known. */
export async function runnerUrl(db: Database, runnerId: string): Promise<string | null> {
  const row = await db.select({ url: runners.url }).from(runners).where(eq(runners.id, runnerId)).get();
  if (row !== undefined && row.url !== "") return row.url.replace(/\/+$/, "");
  // Listed runners that never sent a heartbeat are known by their URL.
  return /^https?:\/\//.test(runnerId) ? runnerId.replace(/\/+$/, "") : null;
}

/** `POST {runner}/internal/jobs`: idempotent on the runner for the same id and request. */
export async function submitToRunner(baseUrl: string, secret: string, request: RunnerJobRequest): Promise<void> {
  const response = await call(baseUrl, RUNNER_PATHS.jobs, secret, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(request),
  });
  await response.body?.cancel();
}

/** `POST {runner}/internal/jobs/{id}/cancel`; a job the runner does not know counts as cancelled. */
export async function cancelOnRunner(baseUrl: string, secret: string, jobId: string): Promise<void> {
  try {
    const response = await call(baseUrl, RUNNER_PATHS.cancelJob(encodeURIComponent(jobId)), secret, { method: "POST" });
    await response.body?.cancel();
  } catch (error) {
    if (error instanceof RunnerCallError && error.status === 404) return;
    throw error;
  }
}

/** `GET {runner}/internal/jobs/{id}/adapter`: the finished adapter and the sha256 the runner states. */
export async function fetchAdapterFromRunner(baseUrl: string, secret: string, jobId: string): Promise<{ bytes: Uint8Array; sha256: string | null }> {
  const response = await call(baseUrl, RUNNER_PATHS.jobAdapter(encodeURIComponent(jobId)), secret, { method: "GET" });
  return { bytes: new Uint8Array(await response.arrayBuffer()), sha256: response.headers.get(CONTENT_SHA256_HEADER) };
}

async function call(baseUrl: string, path: string, secret: string, init: RequestInit): Promise<Response> {
  const target = `${init.method} ${baseUrl}${path}`;
  let response: Response;
  try {
    response = await fetch(`${baseUrl}${path}`, {
      ...init,
      headers: { ...(init.headers as Record<string, string>), ...runnerAuthorization(secret) },
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
  } catch (error) {
    console.error(`${target} failed: ${(error as Error).message}`);
    throw new RunnerCallError(null, "the runner could not be reached", target);
  }
  if (response.ok) return response;
  const text = await response.text().catch(() => "");
  let reason = text.slice(0, 500);
  try {
    reason = (JSON.parse(text) as { error?: { message?: string } }).error?.message ?? reason;
  } catch {
    // not JSON: keep the text
  }
  throw new RunnerCallError(response.status, withoutAddresses(reason) || `the runner answered ${response.status}`, target);
}

/** `text` with every URL replaced: runners' messages may name addresses (their own, the edge's internal routes). */
export function withoutAddresses(text: string): string {
  return text.replace(/\b[a-z][a-z0-9+.-]*:\/\/[^\s"'<>]+/gi, "(address withheld)");
}
