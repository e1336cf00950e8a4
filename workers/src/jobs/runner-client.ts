/**
 * The edge's calls to a runner's internal job API (runner secret): submit a job, cancel it, and
 * fetch a finished adapter the runner could not deliver. Requests are typed by the shared
 * protocol (src/protocol/runner.ts), so the two sides cannot drift apart.
 */
import { eq } from "drizzle-orm";
import type { z } from "zod";
import type { trainingJobRequestSchema } from "../../../src/protocol/runner.ts";
import type { Database } from "../db/client.ts";
import { runners } from "../db/schema.ts";

export type RunnerJobRequest = z.input<typeof trainingJobRequestSchema>;

const TIMEOUT_MS = 15_000;

/** A runner's answer that was not a success: its status and its error message. */
export class RunnerCallError extends Error {
  override readonly name = "RunnerCallError";
  constructor(
    readonly status: number | null, // null: no answer at all
    message: string,
  ) {
    super(message);
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
  const response = await call(`${baseUrl}/internal/jobs`, secret, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(request),
  });
  await response.body?.cancel();
}

/** `POST {runner}/internal/jobs/{id}/cancel`; a job the runner does not know counts as cancelled. */
export async function cancelOnRunner(baseUrl: string, secret: string, jobId: string): Promise<void> {
  try {
    const response = await call(`${baseUrl}/internal/jobs/${encodeURIComponent(jobId)}/cancel`, secret, { method: "POST" });
    await response.body?.cancel();
  } catch (error) {
    if (error instanceof RunnerCallError && error.status === 404) return;
    throw error;
  }
}

/** `GET {runner}/internal/jobs/{id}/adapter`: the finished adapter and the sha256 the runner states. */
export async function fetchAdapterFromRunner(baseUrl: string, secret: string, jobId: string): Promise<{ bytes: Uint8Array; sha256: string | null }> {
  const response = await call(`${baseUrl}/internal/jobs/${encodeURIComponent(jobId)}/adapter`, secret, { method: "GET" });
  return { bytes: new Uint8Array(await response.arrayBuffer()), sha256: response.headers.get("x-content-sha256") };
}

async function call(url: string, secret: string, init: RequestInit): Promise<Response> {
  let response: Response;
  try {
    response = await fetch(url, {
      ...init,
      headers: { ...(init.headers as Record<string, string>), authorization: `Bearer ${secret}` },
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
  } catch (error) {
    throw new RunnerCallError(null, `${init.method} ${url} failed: ${(error as Error).message}`);
  }
  if (response.ok) return response;
  const text = await response.text().catch(() => "");
  let message = text.slice(0, 500);
  try {
    message = (JSON.parse(text) as { error?: { message?: string } }).error?.message ?? message;
  } catch {
    // not JSON: keep the text
  }
  throw new RunnerCallError(response.status, `${init.method} ${url} answered ${response.status}: ${message}`);
}
