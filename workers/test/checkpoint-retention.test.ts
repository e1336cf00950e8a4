/**
 * A job keeps its newest CHECKPOINTS_KEPT checkpoints and its final model: older checkpoints lose
 * their rows, adapters and blobs as new ones arrive; a blob that cannot be deleted leaves a
 * retired (invisible) adapter row that the cron sweep finishes; a kept checkpoint stays a model.
 */
import { createExecutionContext, env, waitOnExecutionContext } from "cloudflare:test";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { fineTuningCheckpointPageSchema } from "../../src/protocol/platform-objects.ts";
import worker from "../src/index.ts";
import { sweep } from "../src/jobs/sweeper.ts";
import { call, edgeRequest, tenantWithKey } from "./helpers.ts";
import { createdJob, putCheckpoint, putFinishedAdapter, RUNNER_AUTH, sha256 } from "./fine-tuning-helpers.ts";
import { fakeRunners, forgetRunners, preferredRunner } from "./inference-helpers.ts";

const steps = (count: number) => Array.from({ length: count }, (_, i) => (i + 1) * 10);

async function listedSteps(key: string, jobId: string): Promise<number[]> {
  const response = await call("GET", `/v1/fine_tuning/jobs/${jobId}/checkpoints?limit=100`, { key });
  expect(response.status).toBe(200);
  return fineTuningCheckpointPageSchema.parse(await response.json()).data.map((checkpoint) => checkpoint.step_number);
}

async function checkpointBlobs(tenantId: string, jobId: string): Promise<string[]> {
  const listed = await env.BLOBS.list({ prefix: `tenants/${tenantId}/jobs/${jobId}/checkpoints/` });
  return listed.objects.map((object) => object.key.split("/").at(-1)!).sort();
}

async function adapterRows(jobId: string): Promise<{ id: string; status: string; source: string }[]> {
  const rows = await env.DB.prepare("SELECT id, status, source FROM adapters WHERE source_job_id = ? ORDER BY id")
    .bind(jobId)
    .all<{ id: string; status: string; source: string }>();
  return rows.results;
}

/** A runner callback through the worker's entry point with another environment; background work awaited. */
async function callWith(environment: Env, method: string, path: string, headers: Record<string, string>, body: Uint8Array): Promise<Response> {
  const context = createExecutionContext();
  const response = await worker.fetch(edgeRequest(method, path, { headers, body }) as Request<unknown, IncomingRequestCfProperties>, environment, context);
  await waitOnExecutionContext(context);
  return response;
}

async function putCheckpointWith(environment: Env, jobId: string, step: number): Promise<Response> {
  const bytes = new Uint8Array([step % 251, 4, 2]);
  return callWith(environment, "PUT", `/internal/jobs/${jobId}/checkpoints/${step}`, { ...RUNNER_AUTH, "x-content-sha256": await sha256(bytes) }, bytes);
}

/** The environment with an R2 bucket whose deletes throw (reads and writes still work). */
function failingDeletes(): Env {
  const bucket = env.BLOBS;
  const failing = new Proxy(bucket, {
    get(target, property) {
      if (property === "delete") return () => Promise.reject(new Error("We encountered an internal error. Please try again. (10001)"));
      const value: unknown = Reflect.get(target, property, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return { ...env, BLOBS: failing };
}

afterEach(() => vi.restoreAllMocks());

describe("checkpoint retention", () => {
  it("keeps exactly the configured number of checkpoints plus the final model, deleting older rows and blobs", async () => {
    const kept = Number(env.CHECKPOINTS_KEPT);
    expect(kept).toBe(3); // workers/wrangler.jsonc
    const { key, tenantId } = await tenantWithKey();
    const job = await createdJob(key, { suffix: "keep" });
    const model = `ft:pica-base-4m:${tenantId}:keep:${job.id}`;
    for (const step of steps(6)) {
      expect((await putCheckpoint(job.id, step)).status).toBe(200);
      expect(await listedSteps(key, job.id)).toEqual(
        steps(step / 10)
          .slice(-kept)
          .reverse(),
      );
    }
    expect(await checkpointBlobs(tenantId, job.id)).toEqual(["step-40.safetensors", "step-50.safetensors", "step-60.safetensors"]);
    expect((await adapterRows(job.id)).map((row) => row.id)).toEqual([40, 50, 60].map((step) => `${model}:ckpt-step-${step}`));
    expect((await call("GET", `/v1/adapters/${model}:ckpt-step-30`, { key })).status).toBe(404);
    expect((await call("GET", `/v1/models/${model}:ckpt-step-30`, { key })).status).toBe(404);

    expect((await putFinishedAdapter(job.id)).status).toBe(200);
    expect(await listedSteps(key, job.id)).toEqual([60, 50, 40]);
    expect(await adapterRows(job.id)).toEqual([
      { id: model, status: "ready", source: "fine_tune" },
      ...[40, 50, 60].map((step) => ({ id: `${model}:ckpt-step-${step}`, status: "ready", source: "checkpoint" })),
    ]);
    expect(await env.BLOBS.head(`tenants/${tenantId}/jobs/${job.id}/adapter.safetensors`)).not.toBeNull();

    // A late retry of a retired step is accepted and retired again at once.
    expect((await putCheckpoint(job.id, 10)).status).toBe(200);
    expect(await listedSteps(key, job.id)).toEqual([60, 50, 40]);
    expect(await checkpointBlobs(tenantId, job.id)).toEqual(["step-40.safetensors", "step-50.safetensors", "step-60.safetensors"]);
    expect(await adapterRows(job.id)).toHaveLength(4);
  });

  it("follows CHECKPOINTS_KEPT: one keeps the newest only, zero keeps none but never the final model", async () => {
    const { key, tenantId } = await tenantWithKey();
    const one = await createdJob(key, { suffix: "one" });
    for (const step of steps(4)) expect((await putCheckpointWith({ ...env, CHECKPOINTS_KEPT: "1" }, one.id, step)).status).toBe(200);
    expect(await listedSteps(key, one.id)).toEqual([40]);
    expect(await checkpointBlobs(tenantId, one.id)).toEqual(["step-40.safetensors"]);

    const none = await createdJob(key, { suffix: "none" });
    const keepNone = { ...env, CHECKPOINTS_KEPT: "0" };
    for (const step of steps(2)) expect((await putCheckpointWith(keepNone, none.id, step)).status).toBe(200);
    expect(await listedSteps(key, none.id)).toEqual([]);
    expect(await checkpointBlobs(tenantId, none.id)).toEqual([]);
    const adapter = new Uint8Array([5, 5]);
    const finished = await callWith(
      keepNone,
      "PUT",
      `/internal/jobs/${none.id}/adapter`,
      { ...RUNNER_AUTH, "x-content-sha256": await sha256(adapter) },
      adapter,
    );
    expect(finished.status).toBe(200);
    expect(await adapterRows(none.id)).toEqual([{ id: `ft:pica-base-4m:${tenantId}:none:${none.id}`, status: "ready", source: "fine_tune" }]);
  });

  it("answers the callback when a blob cannot be deleted, hides the retired adapter at once, and the sweep deletes it later", async () => {
    const errors = vi.spyOn(console, "error").mockImplementation(() => undefined);
    const { key, tenantId } = await tenantWithKey();
    const job = await createdJob(key, { suffix: "sweep" });
    const retired = `ft:pica-base-4m:${tenantId}:sweep:${job.id}:ckpt-step-10`;
    for (const step of steps(4)) expect((await putCheckpointWith(failingDeletes(), job.id, step)).status).toBe(200);
    expect(errors.mock.calls.map((args) => String(args[0])).join("\n")).toContain(retired);

    expect(await listedSteps(key, job.id)).toEqual([40, 30, 20]);
    expect((await adapterRows(job.id)).find((row) => row.id === retired)).toEqual({ id: retired, status: "deleted", source: "checkpoint" });
    expect((await call("GET", `/v1/adapters/${retired}`, { key })).status).toBe(404);
    const chat = await call("POST", "/v1/chat/completions", { key, json: { model: retired, messages: [{ role: "user", content: "hi" }] } });
    expect(chat.status).toBe(404);
    expect(await checkpointBlobs(tenantId, job.id)).toContain("step-10.safetensors");

    await sweep(env);
    expect(await checkpointBlobs(tenantId, job.id)).toEqual(["step-20.safetensors", "step-30.safetensors", "step-40.safetensors"]);
    expect((await adapterRows(job.id)).map((row) => row.id)).not.toContain(retired);
  });
});

describe("a kept checkpoint", () => {
  let restore: () => void;
  beforeEach(forgetRunners);
  afterEach(() => restore?.());

  it("serves inference by its id, is retrievable as an adapter and as a model, and leaves its job's list when deleted", async () => {
    const { runners, restore: undo } = fakeRunners();
    restore = undo;
    const { key, tenantId } = await tenantWithKey();
    const job = await createdJob(key, { suffix: "ckpt" });
    expect((await putCheckpoint(job.id, 10)).status).toBe(200);
    const checkpoint = `ft:pica-base-4m:${tenantId}:ckpt:${job.id}:ckpt-step-10`;

    const chat = await call("POST", "/v1/chat/completions", { key, json: { model: checkpoint, messages: [{ role: "user", content: "hi" }] } });
    expect(chat.status).toBe(200);
    expect(((await chat.json()) as { model: string }).model).toBe(checkpoint);
    expect(runners[preferredRunner(checkpoint)].received.at(-1)!.body.model).toBe(checkpoint);

    const adapter = await call("GET", `/v1/adapters/${checkpoint}`, { key });
    expect(await adapter.json()).toMatchObject({ id: checkpoint, object: "adapter", source: "checkpoint", fine_tuning_job_id: job.id });
    expect(await (await call("GET", `/v1/models/${encodeURIComponent(checkpoint)}`, { key })).json()).toEqual({
      id: checkpoint,
      object: "model",
      created: expect.any(Number),
      owned_by: tenantId,
    });

    // Deleting the checkpoint's adapter takes it off its job's list too.
    expect((await call("DELETE", `/v1/adapters/${encodeURIComponent(checkpoint)}`, { key })).status).toBe(200);
    expect(await listedSteps(key, job.id)).toEqual([]);
    expect(await checkpointBlobs(tenantId, job.id)).toEqual([]);
  });
});
