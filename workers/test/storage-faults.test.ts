/**
 * Failed writes to D1 and R2: every route that writes answers a retriable 503 (OpenAI-shaped,
 * with Retry-After) and leaves nothing half-written, and the same request succeeds once storage
 * is back. D1 failures are real ones: a trigger makes SQLite refuse writes to one table (and so
 * rolls back the batch it is part of). R2 failures come from a bucket whose writes throw, handed
 * to the worker's own entry point in place of the real one. The chaos benchmark counts these.
 */
import { createExecutionContext, env, waitOnExecutionContext } from "cloudflare:test";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import worker from "../src/index.ts";
import type { TaskMessage } from "../src/queue/messages.ts";
import { sweepWaitingJobs } from "../src/jobs/sweeper.ts";
import { installFakeRunners } from "./fake-runners.ts";
import { call, consumeOnce, consumeTask, edgeRequest, errorOf, tenantWithKey, type RequestOptions } from "./helpers.ts";
import { createdJob, RUNNER_AUTH, sha256, trainingJsonl, uploadedFile } from "./fine-tuning-helpers.ts";
import { fakeRunners, forgetRunners } from "./inference-helpers.ts";

type Table = "files" | "fine_tuning_jobs" | "job_events" | "adapters" | "checkpoints" | "usage";

/** Makes SQLite refuse inserts into `table` until `storageBack()`. */
async function failInserts(table: Table): Promise<void> {
  await env.DB.prepare(`CREATE TRIGGER fail_${table} BEFORE INSERT ON ${table} BEGIN SELECT RAISE(ABORT, 'injected write failure'); END`).run();
  triggers.push(table);
}
const triggers: Table[] = [];
async function storageBack(): Promise<void> {
  for (const table of triggers.splice(0)) await env.DB.prepare(`DROP TRIGGER IF EXISTS fail_${table}`).run();
}

/** The environment with an R2 bucket whose puts throw (reads and deletes still work). */
function failingPuts(): Env {
  const bucket = env.BLOBS;
  const failing = new Proxy(bucket, {
    get(target, property) {
      if (property === "put") return () => Promise.reject(new Error("We encountered an internal error. Please try again. (10001)"));
      const value: unknown = Reflect.get(target, property, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return { ...env, BLOBS: failing };
}

/** A request through the worker's entry point with the given environment; background work awaited. */
async function callWith(environment: Env, method: string, path: string, options: RequestOptions): Promise<Response> {
  const context = createExecutionContext();
  const response = await worker.fetch(edgeRequest(method, path, options) as Request<unknown, IncomingRequestCfProperties>, environment, context);
  await waitOnExecutionContext(context);
  return response;
}

function uploadForm(content: string): FormData {
  const form = new FormData();
  form.set("purpose", "fine-tune");
  form.set("file", new File([content], "train.jsonl"));
  return form;
}

async function expectRetriable(response: Response): Promise<void> {
  expect(response.status).toBe(503);
  expect(response.headers.get("retry-after")).toBe("1");
  expect(await errorOf(response)).toMatchObject({ type: "server_error", code: "storage_unavailable" });
}

async function blobKeys(prefix = ""): Promise<string[]> {
  return (await env.BLOBS.list({ prefix })).objects.map((object) => object.key);
}

const count = async (sql: string, ...values: unknown[]) =>
  (await env.DB.prepare(sql)
    .bind(...values)
    .first<{ n: number }>())!.n;

let restore: (() => void) | null = null;
beforeEach(forgetRunners);
afterEach(async () => {
  await storageBack();
  restore?.();
  restore = null;
});

describe("a failed write to R2 or D1", () => {
  it("uploading a file: R2 refuses → 503, no file; D1 refuses → 503, no file and no blob; then it works", async () => {
    const { key } = await tenantWithKey();
    const blobsBefore = await blobKeys();
    await expectRetriable(await callWith(failingPuts(), "POST", "/v1/files", { key, body: uploadForm(trainingJsonl()) }));
    await failInserts("files");
    await expectRetriable(await callWith(env, "POST", "/v1/files", { key, body: uploadForm(trainingJsonl()) }));
    expect(((await (await call("GET", "/v1/files", { key })).json()) as { data: unknown[] }).data).toEqual([]);
    expect(await blobKeys()).toEqual(blobsBefore); // the blob written before the refused row is gone again
    await storageBack();
    const retried = await callWith(env, "POST", "/v1/files", { key, body: uploadForm(trainingJsonl()) });
    expect(retried.status).toBe(200);
    expect(((await (await call("GET", "/v1/files", { key })).json()) as { data: unknown[] }).data).toHaveLength(1);
  });

  it("creating a job: D1 refuses → 503 and no job or event; a lost dispatch message is sent by the sweep instead", async () => {
    const { key, tenantId } = await tenantWithKey();
    const file = await uploadedFile(key);
    await failInserts("job_events"); // the job row and its first event are one batch
    await expectRetriable(await callWith(env, "POST", "/v1/fine_tuning/jobs", { key, json: { model: env.BASE_MODEL, training_file: file } }));
    expect(await count("SELECT count(*) AS n FROM fine_tuning_jobs WHERE tenant_id = ?", tenantId)).toBe(0);
    await storageBack();

    const queueDown = {
      ...env,
      TASKS: {
        send: () => Promise.reject(new Error("queue unavailable")),
        sendBatch: () => Promise.reject(new Error("queue unavailable")),
      } as unknown as Queue,
    };
    const created = await callWith(queueDown, "POST", "/v1/fine_tuning/jobs", { key, json: { model: env.BASE_MODEL, training_file: file } });
    expect(created.status).toBe(200);
    const job = (await created.json()) as { id: string; status: string; created_at: number };
    expect(job.status).toBe("validating_files");
    expect(await sweepWaitingJobs(env, job.created_at + 61)).toContain(job.id);
  });

  describe("runner callbacks", () => {
    async function runningJob() {
      const { key } = await tenantWithKey();
      restore = installFakeRunners({
        "http://runner-a.test": () => Response.json({ status: "queued" }, { status: 202 }),
        "http://runner-b.test": () => Response.json({ status: "queued" }, { status: 202 }),
      });
      const job = await createdJob(key);
      expect(await consumeOnce({ kind: "dispatch_job", jobId: job.id })).toEqual({ acked: true, retried: false });
      const started = {
        id: `${job.id}:status:running`,
        job_id: job.id,
        created_at: 1_800_000_100,
        level: "info",
        type: "status",
        message: "Job running",
        data: { status: "running" },
      };
      expect((await call("POST", `/internal/jobs/${job.id}/events`, { headers: RUNNER_AUTH, json: { events: [started] } })).status).toBe(200);
      return { key, job: job as { id: string } };
    }
    const adapterPut = async (environment: Env, jobId: string, bytes: Uint8Array) =>
      callWith(environment, "PUT", `/internal/jobs/${jobId}/adapter`, { headers: { ...RUNNER_AUTH, "x-content-sha256": await sha256(bytes) }, body: bytes });

    it("the finished adapter: R2 or D1 refuses → 503 and the job still runs with no adapter; the runner's retry succeeds", async () => {
      const { key, job } = await runningJob();
      const bytes = new Uint8Array([7, 7, 7, 7]);
      await expectRetriable(await adapterPut(failingPuts(), job.id, bytes));
      await failInserts("adapters");
      await expectRetriable(await adapterPut(env, job.id, bytes));
      const during = (await (await call("GET", `/v1/fine_tuning/jobs/${job.id}`, { key })).json()) as { status: string };
      expect(during.status).toBe("running");
      expect(await count("SELECT count(*) AS n FROM adapters WHERE source_job_id = ?", job.id)).toBe(0);
      expect(await count("SELECT count(*) AS n FROM job_events WHERE id = ?", `${job.id}:edge:succeeded`)).toBe(0);
      await storageBack();
      expect((await adapterPut(env, job.id, bytes)).status).toBe(200);
      const after = (await (await call("GET", `/v1/fine_tuning/jobs/${job.id}`, { key })).json()) as { status: string; fine_tuned_model: string };
      expect(after.status).toBe("succeeded");
      expect((await call("GET", `/v1/adapters/${encodeURIComponent(after.fine_tuned_model)}`, { key })).status).toBe(200);
      expect(await count("SELECT count(*) AS n FROM adapters WHERE source_job_id = ?", job.id)).toBe(1);
    });

    it("a checkpoint: D1 refuses → 503 and neither its adapter nor its checkpoint row exists; the retry records both", async () => {
      const { key, job } = await runningJob();
      const bytes = new Uint8Array([1, 2, 3]);
      const withHash = async (environment: Env) =>
        callWith(environment, "PUT", `/internal/jobs/${job.id}/checkpoints/10`, {
          headers: { ...RUNNER_AUTH, "x-content-sha256": await sha256(bytes) },
          body: bytes,
        });
      await failInserts("checkpoints");
      await expectRetriable(await withHash(env));
      expect(await count("SELECT count(*) AS n FROM adapters WHERE source_job_id = ?", job.id)).toBe(0);
      await storageBack();
      expect((await withHash(env)).status).toBe(200);
      const checkpoints = (await (await call("GET", `/v1/fine_tuning/jobs/${job.id}/checkpoints`, { key })).json()) as { data: { step_number: number }[] };
      expect(checkpoints.data.map((c) => c.step_number)).toEqual([10]);
      expect(await count("SELECT count(*) AS n FROM adapters WHERE source_job_id = ?", job.id)).toBe(1);
    });

    it("events: D1 refuses → 503 and none of the batch is stored; the retry stores each once", async () => {
      const { key, job } = await runningJob();
      const events = [1, 2, 3].map((step) => ({
        id: `${job.id}:step:${step}`,
        job_id: job.id,
        created_at: 1_800_000_200 + step,
        level: "info",
        type: "metrics",
        message: `Step ${step}`,
        data: { step },
      }));
      await failInserts("job_events");
      await expectRetriable(await callWith(env, "POST", `/internal/jobs/${job.id}/events`, { headers: RUNNER_AUTH, json: { events } }));
      await storageBack();
      const stepEvents = async () =>
        ((await (await call("GET", `/v1/fine_tuning/jobs/${job.id}/events`, { key })).json()) as { data: { id: string }[] }).data.filter((e) =>
          e.id.includes(":step:"),
        );
      expect(await stepEvents()).toEqual([]);
      expect((await callWith(env, "POST", `/internal/jobs/${job.id}/events`, { headers: RUNNER_AUTH, json: { events } })).status).toBe(200);
      expect((await callWith(env, "POST", `/internal/jobs/${job.id}/events`, { headers: RUNNER_AUTH, json: { events } })).status).toBe(200); // delivered twice
      expect((await stepEvents()).map((e) => e.id).sort()).toEqual(events.map((e) => e.id).sort());
    });
  });

  it("usage: a refused write after a completion goes on the queue, and its consumer records it once storage is back", async () => {
    const { key, tenantId } = await tenantWithKey();
    ({ restore } = fakeRunners());
    await failInserts("usage");
    const sent: TaskMessage[] = [];
    const queue = { send: async (message: TaskMessage) => void sent.push(message), sendBatch: async () => undefined } as unknown as Queue;
    const response = await callWith({ ...env, TASKS: queue }, "POST", "/v1/completions", { key, json: { model: env.BASE_MODEL, prompt: "x" } });
    expect(response.status).toBe(200);
    expect(await count("SELECT count(*) AS n FROM usage WHERE tenant_id = ?", tenantId)).toBe(0);
    expect(sent).toEqual([{ kind: "record_usage", usage: expect.objectContaining({ tenantId, model: env.BASE_MODEL, promptTokens: 7, completionTokens: 3 }) }]);
    // The consumer retries while storage is still down, then records it.
    expect((await consumeTask(sent[0])).retryMessages).toHaveLength(1);
    await storageBack();
    expect((await consumeTask(sent[0])).explicitAcks).toHaveLength(1);
    expect(await count("SELECT sum(completion_tokens) AS n FROM usage WHERE tenant_id = ?", tenantId)).toBe(3);
  });
});
