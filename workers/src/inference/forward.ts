/**
 * Sends an inference request to runners in preference order until one answers: a network error,
 * a 5xx, or a stream that breaks before its first byte counts against that runner and moves on to
 * the next; a 4xx is the runner's verdict on the request and goes back to the client as is.
 * A runner that cannot be reached at all (refused or reset connection) is reported as down, so
 * the edge takes it out at once instead of after several failures. Every request carries the
 * runner secret; a runner that refuses it is misconfigured, not the client's problem, so its 401
 * counts against it like a 5xx and never reaches the client.
 */
import { ApiError } from "../../../src/errors.ts";
import { type RUNNER_PATHS, runnerAuthorization } from "../../../src/protocol/runner.ts";
import type { RunnerInfo } from "../runners/registry.ts";

export interface ForwardRequest {
  path: typeof RUNNER_PATHS.chatCompletions | typeof RUNNER_PATHS.completions;
  body: string; // JSON
  runnerSecret: string; // sent as a bearer token: runners with a secret refuse every request without it
  stream: boolean;
  requestId: string;
  headersTimeoutMs?: number; // streams only; default HEADERS_TIMEOUT_MS
}

/**
 * How long a runner may take to answer a streamed request's headers. A runner sends them at once
 * (before queueing the request), so one that stays silent this long is hung, and the next runner
 * gets the request. Non-streamed answers come whole at the end, so they have no such bound.
 */
export const HEADERS_TIMEOUT_MS = 10_000;

/** What the chosen runner answered. */
export type ForwardResult =
  | { kind: "refused"; runner: RunnerInfo; response: Response } // a 4xx, passed through
  | { kind: "json"; runner: RunnerInfo; status: number; text: string }
  | { kind: "stream"; runner: RunnerInfo; first: Uint8Array; reader: ReadableStreamDefaultReader<Uint8Array> };

/** Why one runner could not take the request; `down` when it could not be reached at all. */
export interface RunnerFailure {
  reason: string;
  down: boolean;
}

export interface ForwardHooks {
  failed(runner: RunnerInfo, failure: RunnerFailure): void; // counts against the runner
  succeeded(runner: RunnerInfo): void;
}

/** Tries `runners` in order; throws a 503 when none of them could answer. */
export async function forwardToRunners(runners: readonly RunnerInfo[], request: ForwardRequest, hooks: ForwardHooks): Promise<ForwardResult> {
  const reasons: string[] = [];
  for (const runner of runners) {
    const result = await tryRunner(runner, request).catch(
      (error: unknown): RunnerFailure => ({ reason: `${runner.url}: ${(error as Error).message}`, down: true }),
    );
    if ("reason" in result) {
      reasons.push(result.reason);
      hooks.failed(runner, result);
      continue;
    }
    hooks.succeeded(runner);
    return result;
  }
  console.error(`request ${request.requestId}: no runner answered (${reasons.join("; ") || "no runners"})`);
  throw runnerUnavailable("No inference runner is available right now; please retry shortly.");
}

/** 503: no runner can take the request; a retry soon may find one. */
export function runnerUnavailable(message: string): ApiError {
  return new ApiError(503, "server_error", message, null, "runner_unavailable", 1);
}

/** One attempt: a result, or the reason it failed (thrown errors are failures too). */
async function tryRunner(runner: RunnerInfo, request: ForwardRequest): Promise<ForwardResult | RunnerFailure> {
  const hung = new AbortController();
  const timer = request.stream ? setTimeout(() => hung.abort(), request.headersTimeoutMs ?? HEADERS_TIMEOUT_MS) : null;
  let response: Response;
  try {
    response = await fetch(`${runner.url}${request.path}`, {
      method: "POST",
      headers: { ...runnerAuthorization(request.runnerSecret), "content-type": "application/json", "x-request-id": request.requestId },
      body: request.body,
      signal: hung.signal,
    });
  } catch (error) {
    if (hung.signal.aborted) return { reason: `${runner.url} sent no headers within ${request.headersTimeoutMs ?? HEADERS_TIMEOUT_MS} ms`, down: false };
    return { reason: `${runner.url}: ${(error as Error).message}`, down: true };
  } finally {
    if (timer !== null) clearTimeout(timer);
  }
  if (response.status >= 500) {
    await response.body?.cancel();
    return { reason: `${runner.url} answered ${response.status}`, down: false };
  }
  if (response.status === 401) {
    await response.body?.cancel();
    return { reason: `${runner.url} refused the runner secret (401): RUNNER_SECRET differs between the edge and this runner`, down: false };
  }
  if (response.status >= 400) return { kind: "refused", runner, response };
  if (!request.stream || !(response.headers.get("content-type") ?? "").startsWith("text/event-stream")) {
    return { kind: "json", runner, status: response.status, text: await response.text() };
  }
  if (response.body === null) return { reason: `${runner.url} sent a stream without a body`, down: false };
  // Wait for the first bytes before answering the client: until then another runner can still
  // take the request without the client ever noticing.
  const reader = response.body.getReader();
  let first = await reader.read();
  while (!first.done && first.value.byteLength === 0) first = await reader.read();
  if (first.done) {
    reader.cancel().catch(() => undefined);
    return { reason: `${runner.url} closed the stream before its first byte`, down: false };
  }
  return { kind: "stream", runner, first: first.value, reader };
}
