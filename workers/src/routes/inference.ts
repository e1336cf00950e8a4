/**
 * OpenAI-shaped inference: `POST /v1/chat/completions` and `POST /v1/completions`. A request is
 * validated with the protocol the runner shares, its model checked against the tenant's adapters
 * (someone else's, or an unknown one, is a 404: never a silent fallback to the base model),
 * admitted by the tenant's limiter, routed by adapter affinity, and streamed back as it comes.
 * Usage is recorded and the concurrency lease released once the response has ended.
 */
import { Hono, type Context } from "hono";
import { notFound, rateLimited } from "../../../src/errors.ts";
import {
  parseChatCompletionRequest,
  parseCompletionRequest,
  requestedModel,
  type SamplingParameters,
  type Usage,
  unknownModelMessage,
  usageSchema,
} from "../../../src/protocol/openai.ts";
import { RUNNER_PATHS } from "../../../src/protocol/runner.ts";
import { jsonBody } from "../../../src/request-body.ts";
import { requireKey } from "../auth/middleware.ts";
import { database, type Database } from "../db/client.ts";
import { inferenceLookups } from "../db/queries/inference.ts";
import { clearRunnerFailures, recordRunnerFailure } from "../db/queries/runners.ts";
import { recordUsage, type UsageRecord } from "../db/queries/usage.ts";
import type { AppEnv } from "../env.ts";
import type { TaskMessage } from "../queue/messages.ts";
import { cachedRunnerRows, cachedTenantLimits, cacheRunnerRows, cacheTenantLimits, forgetRunnerRows } from "../inference/lookup-cache.ts";
import { forwardToRunners, runnerUnavailable, type ForwardRequest, type ForwardResult, type RunnerFailure } from "../inference/forward.ts";
import { relaySse } from "../inference/sse-relay.ts";
import type { TenantLimits } from "../limits/tenant-limiter.ts";
import { healthyFromRows, servesBasis, type RunnerInfo } from "../runners/registry.ts";
import { rankByRendezvous } from "../runners/rendezvous.ts";

// Per-route middleware, not `use()`: this app is mounted at /v1 beside other resources.
export const inferenceRoutes = new Hono<AppEnv>();
inferenceRoutes.post("/chat/completions", requireKey("inference"), (c) => complete(c, RUNNER_PATHS.chatCompletions));
inferenceRoutes.post("/completions", requireKey("inference"), (c) => complete(c, RUNNER_PATHS.completions));

const DEFAULT_LIMITS: TenantLimits = { requestsPerMinute: 600, concurrentStreams: 16 };

async function complete(c: Context<AppEnv>, path: ForwardRequest["path"]): Promise<Response> {
  const body = (await jsonBody(c)) as Record<string, unknown>;
  const request: SamplingParameters = path === RUNNER_PATHS.chatCompletions ? parseChatCompletionRequest(body) : parseCompletionRequest(body);
  const { tenantId } = c.get("caller");
  const db = database(c.env.DB);
  const requestId = c.get("requestId"); // set for every request in index.ts; also on the response

  const { adapterId, name: model, param } = requestedModel(request, c.env.BASE_MODEL);
  const isBase = adapterId === null;
  const { limits, adapter, runners } = await lookUp(db, c.env, tenantId, adapterId);
  if (!isBase && (adapter === null || adapter.status !== "ready")) throw notFound(unknownModelMessage(model), param, "model_not_found");
  const candidates = servingRunners(runners, adapter?.baseModel ?? c.env.BASE_MODEL, adapter?.basisId ?? null);
  if (candidates.length === 0) throw runnerUnavailable(`No runner serves the base model '${adapter?.baseModel ?? c.env.BASE_MODEL}' right now.`);
  // Affinity keeps an adapter on the runner whose cache holds it; base-model requests have
  // nothing to keep warm, so they spread by request.
  const ranked = rankByRendezvous(isBase ? crypto.randomUUID() : model, candidates, (runner) => runner.url);

  const limiter = c.env.LIMITER.get(c.env.LIMITER.idFromName(tenantId));
  const admission = await limiter.acquire(limits);
  if (!admission.ok) throw rateLimitError(admission.limit, limits, admission.retryAfterSeconds);
  const release = () => limiter.release(admission.lease).catch((error: unknown) => console.error(`lease release failed: ${(error as Error).message}`));

  let result: ForwardResult;
  try {
    result = await forwardToRunners(
      ranked,
      { path, body: runnerBody(body, request), runnerSecret: c.env.RUNNER_SECRET, stream: request.stream, requestId },
      runnerHealth(c, db),
    );
  } catch (error) {
    c.executionCtx.waitUntil(release());
    throw error;
  }
  const billed = (usage: Usage | null) => (usage === null ? Promise.resolve() : record(c.env, db, { tenantId, model, requestId, usage }));

  if (result.kind === "refused") {
    c.executionCtx.waitUntil(release());
    const headers = new Headers({ "content-type": result.response.headers.get("content-type") ?? "application/json" });
    const retryAfter = result.response.headers.get("retry-after");
    if (retryAfter !== null) headers.set("retry-after", retryAfter);
    return new Response(result.response.body, { status: result.response.status, headers });
  }
  if (result.kind === "json") {
    c.executionCtx.waitUntil(Promise.all([release(), billed(usageOf(result.text))]));
    return new Response(result.text, { status: result.status, headers: { "content-type": "application/json" } });
  }
  const relay = relaySse(result.first, result.reader, { forwardUsage: request.include_usage, clientGone: c.req.raw.signal });
  c.executionCtx.waitUntil(
    relay.finished.then(async (outcome) => {
      await Promise.all([release(), billed(outcome.usage)]);
      if (outcome.end === "runner_failed") await countFailure(db, result.runner.url, true);
    }),
  );
  return new Response(relay.body, {
    status: 200,
    headers: { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache" },
  });
}

/** The tenant's limits, its adapter (if named) and the healthy runners: cached parts, then one batch. */
async function lookUp(db: Database, env: Env, tenantId: string, adapterId: string | null) {
  let limits = cachedTenantLimits(tenantId);
  let runnerRows = cachedRunnerRows();
  const found = await inferenceLookups(db, { tenantId, adapterId, tenant: limits === null, runners: runnerRows === null });
  if (limits === null) {
    limits = found.tenant === null ? DEFAULT_LIMITS : { requestsPerMinute: found.tenant.requestsPerMinute, concurrentStreams: found.tenant.concurrentStreams };
    cacheTenantLimits(tenantId, limits);
  }
  if (runnerRows === null) {
    runnerRows = found.runnerRows ?? [];
    cacheRunnerRows(runnerRows);
  }
  return { limits, adapter: found.adapter, runners: healthyFromRows(runnerRows, env) };
}

/** Runners that can serve this base model and basis (unknown ones are given the benefit of the doubt). */
function servingRunners(runners: RunnerInfo[], baseModel: string, basisId: string | null): RunnerInfo[] {
  return runners.filter((runner) => (runner.baseModel === null || runner.baseModel === baseModel) && servesBasis(runner, basisId));
}

/** The body for the runner: the client's, asking for the usage chunk whenever it streams. */
function runnerBody(body: Record<string, unknown>, request: SamplingParameters): string {
  if (!request.stream) return JSON.stringify(body);
  const streamOptions = (body.stream_options ?? {}) as Record<string, unknown>;
  return JSON.stringify({ ...body, stream_options: { ...streamOptions, include_usage: true } });
}

/** Failures count against a runner (in the background); a success after failures clears them. */
function runnerHealth(c: Context<AppEnv>, db: Database) {
  return {
    failed(runner: RunnerInfo, failure: RunnerFailure) {
      console.error(`runner ${runner.url} failed: ${failure.reason}`);
      c.executionCtx.waitUntil(countFailure(db, runner.url, failure.down));
    },
    succeeded(runner: RunnerInfo) {
      if (runner.failures > 0) c.executionCtx.waitUntil(clearRunnerFailures(db, runner.url).then(forgetRunnerRows, () => undefined));
    },
  };
}

/** Records a failed forward; the runner rows this isolate keeps are stale once it has landed. */
async function countFailure(db: Database, url: string, down: boolean): Promise<void> {
  await recordRunnerFailure(db, url, down).then(forgetRunnerRows, (error: unknown) =>
    console.error(`failure of ${url} not recorded: ${(error as Error).message}`),
  );
}

function usageOf(text: string): Usage | null {
  try {
    const usage = usageSchema.safeParse((JSON.parse(text) as { usage?: unknown }).usage);
    return usage.success ? usage.data : null;
  } catch {
    return null;
  }
}

/**
 * Records what a request used. A failed write goes on the queue, whose consumer retries it with
 * backoff, so a storage hiccup loses no usage (a record the queue redelivers after a write that
 * did land but was never acknowledged would count twice: at-least-once, as queues are).
 */
async function record(env: Env, db: Database, entry: { tenantId: string; model: string; requestId: string; usage: Usage }) {
  const usage: UsageRecord = {
    tenantId: entry.tenantId,
    model: entry.model,
    requestId: entry.requestId,
    promptTokens: entry.usage.prompt_tokens,
    completionTokens: entry.usage.completion_tokens,
    createdAt: Math.floor(Date.now() / 1000),
  };
  try {
    await recordUsage(db, usage);
  } catch (error) {
    console.error(`usage of ${entry.requestId} not recorded (${(error as Error).message}); queued for a retry`);
    await env.TASKS.send({ kind: "record_usage", usage } satisfies TaskMessage).catch((queued: unknown) =>
      console.error(`usage of ${entry.requestId} lost: ${(queued as Error).message}`),
    );
  }
}

function rateLimitError(limit: "requests_per_minute" | "concurrent_streams", limits: TenantLimits, retryAfterSeconds: number) {
  const message =
    limit === "requests_per_minute"
      ? `Rate limit reached for requests per minute: limit ${limits.requestsPerMinute}. Please try again in ${retryAfterSeconds}s.`
      : `Too many concurrent requests: limit ${limits.concurrentStreams}. Please try again when one of your requests has finished.`;
  return rateLimited(message, retryAfterSeconds);
}
