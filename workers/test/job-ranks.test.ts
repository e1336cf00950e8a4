/**
 * A job's rank and target modules are checked at the edge, before the job exists: the rank
 * against what the base model's runners report in their heartbeats (min(out, in) of every
 * targeted weight, the rows of the runner's basis, at most 256), the modules against the seven
 * linear modules. A job goes only to a runner that allows its rank.
 */
import { env } from "cloudflare:test";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { MAX_CONSECUTIVE_FAILURES } from "../src/runners/registry.ts";
import { installFakeRunners } from "./fake-runners.ts";
import { call, consumeOnce, errorOf, tenantWithKey } from "./helpers.ts";
import { RUNNER_AUTH, uploadedFile } from "./fine-tuning-helpers.ts";
import { forgetRunners, RUNNER_A, RUNNER_B } from "./inference-helpers.ts";

/** The shipped model's linear shapes: hidden 256, 2 KV heads of 64, intermediate 704. */
const SHIPPED_SHAPES = {
  q_proj: [256, 256],
  k_proj: [128, 256],
  v_proj: [128, 256],
  o_proj: [256, 256],
  gate_proj: [704, 256],
  up_proj: [704, 256],
  down_proj: [256, 704],
};

const heartbeat = (id: string, url: string, rankLimits: unknown) =>
  call("POST", "/internal/runners/heartbeat", {
    headers: RUNNER_AUTH,
    json: { id, url, base_model: env.BASE_MODEL, basis_id: "basis-1", running: 0, waiting: 0, resident_adapters: 0, rank_limits: rankLimits },
  });

const jobCount = async (tenantId: string) =>
  (await env.DB.prepare("SELECT count(*) AS n FROM fine_tuning_jobs WHERE tenant_id = ?").bind(tenantId).first<{ n: number }>())!.n;

async function createJob(key: string, file: string, hyperparameters: Record<string, unknown>, legacy = false): Promise<Response> {
  const json = legacy
    ? { model: env.BASE_MODEL, training_file: file, hyperparameters }
    : { model: env.BASE_MODEL, training_file: file, method: { type: "supervised", supervised: { hyperparameters } } };
  return call("POST", "/v1/fine_tuning/jobs", { key, json });
}

/** Fake runners that record the jobs submitted to them. */
function trainingRunners() {
  const submitted: Record<string, Record<string, any>[]> = { [RUNNER_A]: [], [RUNNER_B]: [] };
  const handler = (origin: string) => async (request: Request) => {
    if (request.method === "POST" && new URL(request.url).pathname === "/internal/jobs") {
      submitted[origin].push((await request.json()) as Record<string, any>);
      return Response.json({ status: "queued" }, { status: 202 });
    }
    return Response.json({ error: { message: "no route" } }, { status: 404 });
  };
  restore = installFakeRunners({ [RUNNER_A]: handler(RUNNER_A), [RUNNER_B]: handler(RUNNER_B) });
  return submitted;
}

let restore: (() => void) | null = null;
beforeEach(forgetRunners);
afterEach(() => {
  restore?.();
  restore = null;
});

describe("the ranks a job may ask for", () => {
  it("refuses a rank above what the shipped model's runner allows before the job exists, and accepts the ceiling", async () => {
    const { key, tenantId } = await tenantWithKey();
    const file = await uploadedFile(key);
    expect((await heartbeat("runner-a", RUNNER_A, { linear_shapes: SHIPPED_SHAPES, basis_rows: 128 })).status).toBe(200);

    const above = await createJob(key, file, { rank: 129 });
    expect(above.status).toBe(400);
    const error = await errorOf(above);
    expect(error).toMatchObject({ param: "method.supervised.hyperparameters.rank", code: "invalid_value", type: "invalid_request_error" });
    expect(error.message).toBe(
      "Invalid value for 'method.supervised.hyperparameters.rank': rank 129 is above 128, the largest rank pica-base-4m allows for these target modules " +
        "(min(out, in) of k_proj, whose weight is [128, 256]).",
    );
    const legacy = await createJob(key, file, { rank: 129 }, true);
    expect(await errorOf(legacy)).toMatchObject({ param: "hyperparameters.rank" });
    // Without k/v the weights allow 256, but the basis has 128 rows.
    const subset = await createJob(key, file, { rank: 200, target_modules: ["q_proj", "up_proj", "down_proj"] });
    expect((await errorOf(subset)).message).toContain("(the rows of the runner's PiCa basis, 128)");
    const estimate = await call("POST", "/v1/fine_tuning/jobs/estimate", {
      key,
      json: { model: env.BASE_MODEL, training_file: file, hyperparameters: { rank: 129 } },
    });
    expect(await errorOf(estimate)).toMatchObject({ param: "hyperparameters.rank" });
    expect(await jobCount(tenantId)).toBe(0); // nothing stored, nothing dispatched

    const atCeiling = await createJob(key, file, { rank: 128 });
    expect(atCeiling.status).toBe(200);
    expect(((await atCeiling.json()) as Record<string, any>).method.supervised.hyperparameters.rank).toBe(128);
    expect(await jobCount(tenantId)).toBe(1);
  });

  it("without any runner's report allows up to 256, PiCa's largest rank; the schema refuses more", async () => {
    const { key } = await tenantWithKey();
    const file = await uploadedFile(key);
    expect((await createJob(key, file, { rank: 256 })).status).toBe(200);
    const above = await createJob(key, file, { rank: 257 });
    expect(above.status).toBe(400);
    expect(await errorOf(above)).toMatchObject({ param: "method.supervised.hyperparameters.rank", code: "invalid_value" });
  });

  it("takes the best of the model's runners, and places the job on one that allows its rank", async () => {
    const { key } = await tenantWithKey();
    const file = await uploadedFile(key);
    const submitted = trainingRunners();
    // Runner A keeps a basis of 64 rows (--r-max 64), runner B the model's 128.
    expect((await heartbeat("runner-a", RUNNER_A, { linear_shapes: SHIPPED_SHAPES, basis_rows: 64 })).status).toBe(200);
    expect((await heartbeat("runner-b", RUNNER_B, { linear_shapes: SHIPPED_SHAPES, basis_rows: 128 })).status).toBe(200);
    expect((await createJob(key, file, { rank: 129 })).status).toBe(400);
    const response = await createJob(key, file, { rank: 100 });
    expect(response.status).toBe(200);
    const job = (await response.json()) as Record<string, any>;
    expect(await consumeOnce({ kind: "dispatch_job", jobId: job.id })).toEqual({ acked: true, retried: false });
    expect(submitted[RUNNER_A]).toEqual([]);
    expect(submitted[RUNNER_B].map((s) => [s.id, s.hyperparameters.rank])).toEqual([[job.id, 100]]);
  });

  it("keeps a job queued while no healthy runner allows its rank", async () => {
    const { key } = await tenantWithKey();
    const file = await uploadedFile(key);
    const submitted = trainingRunners();
    expect((await heartbeat("runner-a", RUNNER_A, { linear_shapes: SHIPPED_SHAPES, basis_rows: 32 })).status).toBe(200);
    expect((await heartbeat("runner-b", RUNNER_B, { linear_shapes: SHIPPED_SHAPES, basis_rows: 64 })).status).toBe(200);
    const job = (await (await createJob(key, file, { rank: 48 })).json()) as Record<string, any>;
    // Runner B fails and leaves the rotation: A's basis has 32 rows, so the dispatch waits for a runner that allows 48.
    await env.DB.prepare("UPDATE runners SET failures = ?, last_failure_at = ? WHERE id = 'runner-b'")
      .bind(MAX_CONSECUTIVE_FAILURES, Math.floor(Date.now() / 1000))
      .run();
    expect(await consumeOnce({ kind: "dispatch_job", jobId: job.id })).toEqual({ acked: false, retried: true });
    expect(submitted[RUNNER_A]).toEqual([]);
  });

  it("a runner's heartbeat carries its limits, listed for the operator", async () => {
    expect((await heartbeat("runner-a", RUNNER_A, { linear_shapes: SHIPPED_SHAPES, basis_rows: 64 })).status).toBe(200);
    const listed = (await (await call("GET", "/internal/runners", { headers: RUNNER_AUTH })).json()) as { data: Record<string, any>[] };
    expect(listed.data.find((runner) => runner.id === "runner-a")!.rank_limits).toEqual({ linear_shapes: SHIPPED_SHAPES, basis_rows: 64 });
    expect(listed.data.find((runner) => runner.id === "runner-a")!.rank_limits.linear_shapes.k_proj).toEqual([128, 256]);
    const bad = await heartbeat("runner-a", RUNNER_A, { linear_shapes: { ...SHIPPED_SHAPES, k_proj: [0, 256] }, basis_rows: 64 });
    expect(bad.status).toBe(400);
    expect((await errorOf(bad)).param).toBe("rank_limits.linear_shapes.k_proj[0]");
  });
});

describe("target modules", () => {
  it("refuses an unknown module, an empty list and a module listed twice, naming the field", async () => {
    const { key, tenantId } = await tenantWithKey();
    const file = await uploadedFile(key);
    const unknown = await createJob(key, file, { target_modules: ["q_proj", "qkv_proj"] });
    expect(unknown.status).toBe(400);
    expect(await errorOf(unknown)).toMatchObject({ param: "method.supervised.hyperparameters.target_modules[1]", code: "invalid_value" });
    const empty = await errorOf(await createJob(key, file, { target_modules: [] }));
    expect(empty).toMatchObject({ param: "method.supervised.hyperparameters.target_modules", code: "invalid_value" });
    expect(empty.message).toContain("at least one module");
    const twice = await createJob(key, file, { target_modules: ["v_proj", "v_proj"] });
    expect((await errorOf(twice)).message).toContain("listed twice");
    expect(await jobCount(tenantId)).toBe(0);
  });

  it("shows the modules on the job and its estimate, and sends a subset to the runner (all seven by default)", async () => {
    const { key } = await tenantWithKey();
    const file = await uploadedFile(key);
    const submitted = trainingRunners();
    const paper = ["v_proj", "q_proj", "k_proj", "up_proj", "down_proj"];
    const estimate = (await (
      await call("POST", "/v1/fine_tuning/jobs/estimate", {
        key,
        json: { model: env.BASE_MODEL, training_file: file, method: { type: "supervised", supervised: { hyperparameters: { target_modules: paper } } } },
      })
    ).json()) as Record<string, any>;
    expect(estimate.target_modules).toEqual(["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]);
    const subset = (await (await createJob(key, file, { rank: 4, target_modules: paper })).json()) as Record<string, any>;
    expect(subset.method.supervised.hyperparameters.target_modules).toEqual(["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]);
    const all = (await (await createJob(key, file, { rank: 4 })).json()) as Record<string, any>;
    expect(all.method.supervised.hyperparameters.target_modules).toEqual(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]);
    const read = (await (await call("GET", `/v1/fine_tuning/jobs/${subset.id}`, { key })).json()) as Record<string, any>;
    expect(read.method.supervised.hyperparameters.target_modules).toEqual(subset.method.supervised.hyperparameters.target_modules);

    for (const job of [subset, all]) expect(await consumeOnce({ kind: "dispatch_job", jobId: job.id })).toEqual({ acked: true, retried: false });
    const sent = [...submitted[RUNNER_A], ...submitted[RUNNER_B]];
    expect(sent.find((s) => s.id === subset.id)!.hyperparameters.target_modules).toEqual(["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]);
    expect(sent.find((s) => s.id === all.id)!.hyperparameters).not.toHaveProperty("target_modules");
  });
});
