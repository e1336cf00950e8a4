import { env } from "cloudflare:test";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { installFakeRunners } from "./fake-runners.ts";
import { call, consumeOnce, errorOf, tenantWithKey } from "./helpers.ts";
import { createdJob, RUNNER_AUTH, sha256, trainingJsonl } from "./fine-tuning-helpers.ts";
import { forgetRunners } from "./inference-helpers.ts";

/** A fake training runner that accepts jobs (like the real one: idempotent per id) and cancels. */
function trainingRunner() {
  const submitted: Record<string, any>[] = [];
  const cancelled: string[] = [];
  const handler = async (request: Request) => {
    expect(request.headers.get("authorization")).toBe("Bearer test-runner-secret");
    const path = new URL(request.url).pathname;
    if (request.method === "POST" && path === "/internal/jobs") {
      submitted.push((await request.json()) as Record<string, any>);
      return Response.json({ status: "queued" }, { status: 202 });
    }
    const cancel = /^\/internal\/jobs\/([^/]+)\/cancel$/.exec(path);
    if (request.method === "POST" && cancel) {
      cancelled.push(cancel[1]);
      return Response.json({ status: "cancelled" });
    }
    return Response.json({ error: { message: "no route" } }, { status: 404 });
  };
  return { submitted, cancelled, handler };
}

const jobRow = (id: string) => env.DB.prepare("SELECT * FROM fine_tuning_jobs WHERE id = ?").bind(id).first<Record<string, any>>();

function statusEvent(jobId: string, status: string, extra: Record<string, unknown> = {}) {
  return {
    id: `${jobId}:status:${status}`,
    job_id: jobId,
    created_at: 1_800_000_000,
    level: "info",
    type: "status",
    message: `Job ${status}`,
    data: { status, ...extra },
  };
}

beforeEach(forgetRunners);

let restore: (() => void) | null = null;
afterEach(() => {
  restore?.();
  restore = null;
});

describe("dispatching a job and the runner's callbacks", () => {
  it("dispatches once to the least loaded runner, and follows events, checkpoints, state and the adapter to a succeeded job", async () => {
    const { key, tenantId } = await tenantWithKey();
    const runnerA = trainingRunner();
    const runnerB = trainingRunner();
    restore = installFakeRunners({ "http://runner-a.test": runnerA.handler, "http://runner-b.test": runnerB.handler });
    const job = await createdJob(key, { suffix: "math", seed: 7, method: { type: "supervised", supervised: { hyperparameters: { n_epochs: 2, rank: 4 } } } });
    expect(job.status).toBe("validating_files");

    expect(await consumeOnce({ kind: "dispatch_job", jobId: job.id })).toEqual({ acked: true, retried: false });
    expect(await consumeOnce({ kind: "dispatch_job", jobId: job.id }, 2)).toEqual({ acked: true, retried: false }); // redelivered
    const submissions = [...runnerA.submitted, ...runnerB.submitted];
    expect(submissions.length).toBeGreaterThanOrEqual(1);
    // Every submission (a redelivery asks again) is the same request to the same runner.
    expect(runnerB.submitted).toHaveLength(0);
    for (const body of submissions) expect(body).toEqual(submissions[0]);
    const fineTuned = `ft:pica-base-4m:${tenantId}:math:${job.id}`;
    expect(submissions[0]).toEqual({
      id: job.id,
      training_file: { url: `http://edge.test/internal/files/${job.training_file}/content` },
      hyperparameters: { n_epochs: 2, batch_size: "auto", learning_rate_multiplier: "auto", rank: 4, weight_sharing: true },
      seed: 7,
      adapter_id: fineTuned,
      callback_url: `http://edge.test/internal/jobs/${job.id}`,
      checkpoint_every: 10,
      placement: "http://runner-a.test", // the runner's id at the edge, echoed on its callbacks
    });
    expect(await jobRow(job.id)).toMatchObject({ status: "queued", runner_id: "http://runner-a.test" });

    // The runner downloads the data with the runner secret.
    const data = await call("GET", `/internal/files/${job.training_file}/content`, { headers: RUNNER_AUTH });
    expect(await data.text()).toBe(trainingJsonl(12));

    const callback = `/internal/jobs/${job.id}`;
    const running = [
      statusEvent(job.id, "running"),
      {
        id: `${job.id}:step:10`,
        job_id: job.id,
        created_at: 1_800_000_001,
        level: "info",
        type: "metrics",
        message: "Step 10",
        data: { step: 10, train_loss: 1.25, learning_rate: 0.001, trained_tokens: 640 },
      },
    ];
    expect((await call("POST", `${callback}/events`, { headers: RUNNER_AUTH, json: { events: running } })).status).toBe(200);
    expect((await call("POST", `${callback}/events`, { headers: RUNNER_AUTH, json: { events: running } })).status).toBe(200); // a retry
    expect(await jobRow(job.id)).toMatchObject({ status: "running", started_at: 1_800_000_000, trained_tokens: 640 });
    const events = (await (await call("GET", `/v1/fine_tuning/jobs/${job.id}/events?limit=100`, { key })).json()) as Record<string, any>;
    expect(events.data.filter((event: { id: string }) => event.id === `${job.id}:step:10`)).toHaveLength(1);
    expect(events.data[0]).toMatchObject({ object: "fine_tuning.job.event", type: "status", data: { status: "running" } }); // newest first

    const checkpoint = new Uint8Array([1, 2, 3, 4, 5]);
    const put = (path: string, bytes: Uint8Array, hash: string | null, auth = RUNNER_AUTH) =>
      call("PUT", `${callback}${path}`, { headers: { ...auth, ...(hash === null ? {} : { "x-content-sha256": hash }) }, body: bytes });
    expect((await put("/checkpoints/10", checkpoint, await sha256(checkpoint))).status).toBe(200);
    expect((await put("/checkpoints/10", checkpoint, await sha256(checkpoint))).status).toBe(200); // a retry
    const checkpoints = (await (await call("GET", `/v1/fine_tuning/jobs/${job.id}/checkpoints`, { key })).json()) as Record<string, any>;
    expect(checkpoints.data).toHaveLength(1);
    expect(checkpoints.data[0]).toMatchObject({
      object: "fine_tuning.job.checkpoint",
      fine_tuned_model_checkpoint: `${fineTuned}:ckpt-step-10`,
      fine_tuning_job_id: job.id,
      step_number: 10,
      metrics: { step: 10, train_loss: 1.25, learning_rate: 0.001 },
    });
    const checkpointAdapter = (await (await call("GET", `/v1/adapters/${fineTuned}:ckpt-step-10`, { key })).json()) as Record<string, any>;
    expect(checkpointAdapter).toMatchObject({ source: "checkpoint", sha256: await sha256(checkpoint), bytes: 5, rank: 4, weight_sharing: true });

    const state = new Uint8Array([9, 9, 9]);
    expect((await put("/state", state, await sha256(state))).status).toBe(200);
    const stateKey = (await jobRow(job.id))!.state_key;
    expect(stateKey).toBe(`tenants/${tenantId}/jobs/${job.id}/state.safetensors`);
    expect(new Uint8Array(await (await env.BLOBS.get(stateKey))!.arrayBuffer())).toEqual(state);

    const adapter = new Uint8Array(Array.from({ length: 300 }, (_, i) => i % 251));
    const adapterSha = await sha256(adapter);
    expect((await put("/adapter", adapter, null)).status).toBe(400);
    const mismatch = await put("/adapter", adapter, "0".repeat(64));
    expect(mismatch.status).toBe(422);
    expect((await errorOf(mismatch)).code).toBe("sha256_mismatch");
    expect((await put("/adapter", adapter, adapterSha, { authorization: "Bearer wrong" })).status).toBe(401);
    expect((await jobRow(job.id))!.status).toBe("running");
    expect((await put("/adapter", adapter, adapterSha)).status).toBe(200);

    const finished = (await (await call("GET", `/v1/fine_tuning/jobs/${job.id}`, { key })).json()) as Record<string, any>;
    expect(finished).toMatchObject({ status: "succeeded", fine_tuned_model: fineTuned, trained_tokens: 640, error: null });
    expect(finished.finished_at).toBeGreaterThan(0);
    const row = await env.DB.prepare("SELECT * FROM adapters WHERE id = ?").bind(fineTuned).first<Record<string, any>>();
    expect(row).toMatchObject({
      tenant_id: tenantId,
      base_model: "pica-base-4m",
      sha256: adapterSha,
      bytes: 300,
      source: "fine_tune",
      source_job_id: job.id,
      status: "ready",
      rank: 4,
      sharing: "shared",
    });
    const stored = await env.BLOBS.get(row!.blob_key);
    expect(await sha256(new Uint8Array(await stored!.arrayBuffer()))).toBe(adapterSha);

    // Served to runners with its sha256, by percent-encoded id (as HttpAdapterStore asks) or raw.
    for (const path of [`/internal/adapters/${encodeURIComponent(fineTuned)}/blob`, `/internal/adapters/${fineTuned}/blob`]) {
      const blob = await call("GET", path, { headers: RUNNER_AUTH });
      expect(blob.status).toBe(200);
      expect(blob.headers.get("x-content-sha256")).toBe(adapterSha);
      expect(new Uint8Array(await blob.arrayBuffer())).toEqual(adapter);
    }
    expect((await call("GET", `/internal/adapters/${encodeURIComponent(fineTuned)}/blob`)).status).toBe(401);
    const listed = (await (await call("GET", "/v1/adapters", { key })).json()) as Record<string, any>;
    expect(listed.data.map((a: { id: string }) => a.id).sort()).toEqual([fineTuned, `${fineTuned}:ckpt-step-10`].sort());

    // The runner's own success event and a repeated adapter delivery change nothing.
    expect(
      (await call("POST", `${callback}/events`, { headers: RUNNER_AUTH, json: { events: [statusEvent(job.id, "succeeded", { trained_tokens: 700 })] } }))
        .status,
    ).toBe(200);
    expect((await put("/adapter", adapter, adapterSha)).status).toBe(200);
    expect(await jobRow(job.id)).toMatchObject({ status: "succeeded", trained_tokens: 700 });
    // A finished job is not cancellable.
    const cancel = await call("POST", `/v1/fine_tuning/jobs/${job.id}/cancel`, { key });
    expect(cancel.status).toBe(400);
    expect((await errorOf(cancel)).code).toBe("job_not_cancellable");
  });
});
