import { env } from "cloudflare:test";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { installFakeRunners, type RunnerHandler, withoutRunnerSecret } from "./fake-runners.ts";
import { call, consumeOnce, errorOf, tenantWithKey } from "./helpers.ts";
import { createdJob, RUNNER_AUTH, sha256 } from "./fine-tuning-helpers.ts";
import { forgetRunners } from "./inference-helpers.ts";

const job = async (key: string, id: string) => (await (await call("GET", `/v1/fine_tuning/jobs/${id}`, { key })).json()) as Record<string, any>;
const postEvents = (id: string, events: unknown[]) => call("POST", `/internal/jobs/${id}/events`, { headers: RUNNER_AUTH, json: { events } });
const statusEvent = (id: string, status: string, data: Record<string, unknown> = {}) => ({
  id: `${id}:status:${status}`,
  job_id: id,
  created_at: 1_800_000_100,
  level: "info",
  type: "status",
  message: `Job ${status}`,
  data: { status, ...data },
});

/** Both listed runners answer with `handler`; the paths they were asked for. */
function runners(handler: RunnerHandler): string[] {
  const calls: string[] = [];
  const record: RunnerHandler = async (request) => {
    const { origin, pathname } = new URL(request.url);
    const submitted = pathname === "/internal/jobs" ? ` ${((await request.clone().json()) as { id: string }).id}` : "";
    calls.push(`${request.method} ${origin}${pathname}${submitted}`);
    return withoutRunnerSecret(request) ?? handler(request);
  };
  restore = installFakeRunners({ "http://runner-a.test": record, "http://runner-b.test": record });
  return calls;
}
const accepting: RunnerHandler = () => Response.json({ status: "queued" }, { status: 202 });

beforeEach(forgetRunners);

let restore: (() => void) | null = null;
afterEach(() => {
  restore?.();
  restore = null;
});

describe("the job state machine", () => {
  it("cancels a job before dispatch; the dispatch then sends nothing and the job stays cancelled", async () => {
    const { key } = await tenantWithKey();
    const calls = runners(accepting);
    const created = await createdJob(key);
    const cancelled = await call("POST", `/v1/fine_tuning/jobs/${created.id}/cancel`, { key });
    expect(cancelled.status).toBe(200);
    expect(await cancelled.json()).toMatchObject({ id: created.id, status: "cancelled" });
    expect(await consumeOnce({ kind: "dispatch_job", jobId: created.id })).toEqual({ acked: true, retried: false });
    expect(calls.filter((c) => c.includes(created.id))).toEqual([]);
    // Cancelling again answers the cancelled job; a late runner report cannot revive it.
    expect(await (await call("POST", `/v1/fine_tuning/jobs/${created.id}/cancel`, { key })).json()).toMatchObject({ status: "cancelled" });
    await postEvents(created.id, [statusEvent(created.id, "running")]);
    const adapter = new Uint8Array([1, 2, 3]);
    const late = await call("PUT", `/internal/jobs/${created.id}/adapter`, {
      headers: { ...RUNNER_AUTH, "x-content-sha256": await sha256(adapter) },
      body: adapter,
    });
    expect(late.status).toBe(409);
    const after = await job(key, created.id);
    expect(after).toMatchObject({ status: "cancelled", fine_tuned_model: null });
    expect(after.finished_at).toBeGreaterThan(0);
    const events = (await (await call("GET", `/v1/fine_tuning/jobs/${created.id}/events`, { key })).json()) as Record<string, any>;
    expect(events.data.map((e: { id: string }) => e.id)).toContain(`${created.id}:edge:cancelled`);
  });

  it("cancels a running job on its runner too", async () => {
    const { key } = await tenantWithKey();
    const calls = runners(accepting);
    const created = await createdJob(key);
    await consumeOnce({ kind: "dispatch_job", jobId: created.id });
    await postEvents(created.id, [statusEvent(created.id, "running")]);
    expect((await job(key, created.id)).status).toBe("running");
    expect(await (await call("POST", `/v1/fine_tuning/jobs/${created.id}/cancel`, { key })).json()).toMatchObject({ status: "cancelled" });
    const runner = (await env.DB.prepare("SELECT runner_id FROM fine_tuning_jobs WHERE id = ?").bind(created.id).first<{ runner_id: string }>())!.runner_id;
    expect(calls).toContain(`POST ${runner}/internal/jobs/${created.id}/cancel`);
    await postEvents(created.id, [statusEvent(created.id, "cancelled")]);
    expect((await job(key, created.id)).status).toBe("cancelled");
  });

  it("fails a job the runner reports failed, with its error, and ignores later reports", async () => {
    const { key } = await tenantWithKey();
    runners(accepting);
    const created = await createdJob(key);
    await consumeOnce({ kind: "dispatch_job", jobId: created.id });
    await postEvents(created.id, [
      statusEvent(created.id, "running"),
      statusEvent(created.id, "failed", { error: { code: "invalid_training_file", message: "line 3: bad" } }),
    ]);
    await postEvents(created.id, [statusEvent(created.id, "running")]);
    expect(await job(key, created.id)).toMatchObject({ status: "failed", error: { code: "invalid_training_file", message: "line 3: bad", param: null } });
    expect((await call("POST", `/v1/fine_tuning/jobs/${created.id}/cancel`, { key })).status).toBe(400);
  });

  it("fails a job a runner refuses, and retries one no runner could take", async () => {
    const { key } = await tenantWithKey();
    runners(() => Response.json({ error: { message: "hyperparameters.rank 32 is above this runner's serving rank 16" } }, { status: 400 }));
    const refused = await createdJob(key, { method: { type: "supervised", supervised: { hyperparameters: { rank: 32 } } } });
    expect(await consumeOnce({ kind: "dispatch_job", jobId: refused.id })).toEqual({ acked: true, retried: false });
    const failed = await job(key, refused.id);
    expect(failed.status).toBe("failed");
    expect(failed.error.code).toBe("runner_rejected");
    expect(failed.error.message).toContain("serving rank 16");
    // The runner's reason, never its address or its internal routes.
    expect(failed.error.message).not.toMatch(/runner-[ab]\.test|\/internal\/|http/);
    const events = (await (await call("GET", `/v1/fine_tuning/jobs/${refused.id}/events`, { key })).json()) as { data: { message: string }[] };
    for (const event of events.data) expect(event.message).not.toMatch(/runner-[ab]\.test|\/internal\/|http/);
    restore!();

    runners(() => new Response("overloaded", { status: 503 }));
    const waiting = await createdJob(key);
    expect(await consumeOnce({ kind: "dispatch_job", jobId: waiting.id })).toEqual({ acked: false, retried: true });
    expect((await job(key, waiting.id)).status).toBe("queued");
    const failures = await env.DB.prepare("SELECT failures FROM runners WHERE url = ?").bind("http://runner-a.test").first<{ failures: number }>();
    expect(failures!.failures).toBeGreaterThanOrEqual(1);
  });

  it("fails a job whose training file was deleted before dispatch", async () => {
    const { key } = await tenantWithKey();
    const calls = runners(accepting);
    const created = await createdJob(key);
    expect((await call("DELETE", `/v1/files/${created.training_file}`, { key })).status).toBe(200);
    await consumeOnce({ kind: "dispatch_job", jobId: created.id });
    expect(await job(key, created.id)).toMatchObject({ status: "failed", error: { code: "invalid_file", param: "training_file" } });
    expect(calls.filter((c) => c.includes(created.id))).toEqual([]);
  });

  it("fetches the adapter from the runner when it reports success without having delivered it", async () => {
    const { key } = await tenantWithKey();
    const adapter = new Uint8Array([7, 7, 7, 7]);
    const hash = await sha256(adapter);
    runners((request) => {
      if (request.method === "GET" && new URL(request.url).pathname.endsWith("/adapter"))
        return new Response(adapter, { headers: { "x-content-sha256": hash } });
      return accepting(request);
    });
    const created = await createdJob(key, { suffix: "late" });
    await consumeOnce({ kind: "dispatch_job", jobId: created.id });
    await postEvents(created.id, [statusEvent(created.id, "running"), statusEvent(created.id, "succeeded", { trained_tokens: 99 })]);
    const after = await job(key, created.id);
    expect(after).toMatchObject({ status: "succeeded", trained_tokens: 99 });
    const stored = (await (await call("GET", `/v1/adapters/${after.fine_tuned_model}`, { key })).json()) as Record<string, any>;
    expect(stored).toMatchObject({ id: after.fine_tuned_model, sha256: hash, bytes: 4, source: "fine_tune" });
    restore!();

    runners((request) => (request.method === "GET" ? new Response("gone", { status: 404 }) : accepting(request)));
    const lost = await createdJob(key);
    await consumeOnce({ kind: "dispatch_job", jobId: lost.id });
    await postEvents(lost.id, [statusEvent(lost.id, "succeeded")]);
    const failed = await job(key, lost.id);
    expect(failed).toMatchObject({ status: "failed", error: { code: "adapter_unavailable" } });
    expect(failed.error.message).not.toMatch(/runner-[ab]\.test|\/internal\/|http/);
  });

  it("shows a runner's failure without the addresses it names", async () => {
    const { key } = await tenantWithKey();
    runners(accepting);
    const created = await createdJob(key);
    await consumeOnce({ kind: "dispatch_job", jobId: created.id });
    const download = `training_file: GET http://edge.test/internal/files/${created.training_file}/content answered 503`;
    const failure = statusEvent(created.id, "failed", { error: { code: "invalid_training_file", message: download } });
    await postEvents(created.id, [{ ...failure, message: `Job failed: ${download}` }]);
    const failed = await job(key, created.id);
    expect(failed.error).toMatchObject({ code: "invalid_training_file", message: "training_file: GET (address withheld) answered 503" });
    const events = (await (await call("GET", `/v1/fine_tuning/jobs/${created.id}/events`, { key })).json()) as { data: { message: string }[] };
    for (const event of events.data) expect(event.message).not.toMatch(/http|\/internal\//);
  });
});

describe("the runner's callbacks", () => {
  it("need the runner secret on every internal route", async () => {
    const { key } = await tenantWithKey();
    const created = await createdJob(key);
    const routes: [string, string][] = [
      ["POST", `/internal/jobs/${created.id}/events`],
      ["PUT", `/internal/jobs/${created.id}/checkpoints/1`],
      ["PUT", `/internal/jobs/${created.id}/state`],
      ["PUT", `/internal/jobs/${created.id}/adapter`],
      ["GET", `/internal/files/${created.training_file}/content`],
      ["GET", `/internal/adapters/ft:x/blob`],
    ];
    for (const [method, path] of routes) {
      for (const headers of [{}, { authorization: "Bearer wrong-secret" }, { authorization: `Bearer ${key}` }] as Record<string, string>[]) {
        const response = await call(method, path, { headers, body: method === "GET" ? undefined : "x" });
        expect(response.status, `${method} ${path}`).toBe(401);
        expect((await errorOf(response)).type).toBe("authentication_error");
      }
    }
  });

  it("answer bad input with 4xx, never 5xx", async () => {
    const { key } = await tenantWithKey();
    const created = await createdJob(key);
    const bytes = new Uint8Array([1]);
    const hash = await sha256(bytes);
    const cases: [string, string, { json?: unknown; body?: BodyInit; headers?: Record<string, string> }, number][] = [
      ["POST", `/internal/jobs/ftjob-nope/events`, { json: { events: [] } }, 404],
      ["POST", `/internal/jobs/${created.id}/events`, { json: { events: [{ id: "x" }] } }, 400],
      ["POST", `/internal/jobs/${created.id}/events`, { json: { nope: 1 } }, 400],
      ["POST", `/internal/jobs/${created.id}/events`, { body: "{", headers: { "content-type": "application/json" } }, 400],
      ["PUT", `/internal/jobs/${created.id}/checkpoints/abc`, { body: bytes, headers: { "x-content-sha256": hash } }, 400],
      ["PUT", `/internal/jobs/${created.id}/checkpoints/-1`, { body: bytes, headers: { "x-content-sha256": hash } }, 400],
      ["PUT", `/internal/jobs/${created.id}/state`, { body: bytes, headers: { "x-content-sha256": "zz" } }, 400],
      ["PUT", `/internal/jobs/${created.id}/state`, { body: new Uint8Array(0), headers: { "x-content-sha256": await sha256(new Uint8Array(0)) } }, 400],
      ["PUT", `/internal/jobs/ftjob-nope/adapter`, { body: bytes, headers: { "x-content-sha256": hash } }, 404],
      ["GET", `/internal/files/file-nope/content`, {}, 404],
      ["GET", `/internal/adapters/${encodeURIComponent("ft:pica-base-4m:t:x:ftjob-nope")}/blob`, {}, 404],
    ];
    for (const [method, path, options, status] of cases) {
      const response = await call(method, path, { ...options, headers: { ...RUNNER_AUTH, ...options.headers } });
      expect(response.status, `${method} ${path}`).toBe(status);
      expect((await errorOf(response)).message.length).toBeGreaterThan(0);
    }
  });
});
