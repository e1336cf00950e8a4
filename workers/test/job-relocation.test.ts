/**
 * A running job whose runner stops heartbeating moves to another runner, which resumes it from
 * the trainer state the lost runner uploaded; the lost runner's callbacks are refused from then on.
 */
import { env } from "cloudflare:test";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { relocateOrphanedJobs } from "../src/jobs/relocation.ts";
import { HEARTBEAT_STALE_SECONDS } from "../src/runners/registry.ts";
import { installFakeRunners } from "./fake-runners.ts";
import { call, consumeOnce, errorOf, tenantWithKey } from "./helpers.ts";
import { createdJob, RUNNER_AUTH, sha256 } from "./fine-tuning-helpers.ts";
import { forgetRunners, RUNNER_A, RUNNER_B } from "./inference-helpers.ts";

type Submission = Record<string, any>;

/** Two fake training runners; `accept` false makes a runner refuse submissions (503). */
function trainingRunners() {
  const submitted: Record<string, Submission[]> = { [RUNNER_A]: [], [RUNNER_B]: [] };
  const accept: Record<string, boolean> = { [RUNNER_A]: true, [RUNNER_B]: true };
  const handler = (origin: string) => async (request: Request) => {
    if (request.method === "POST" && new URL(request.url).pathname === "/internal/jobs") {
      if (!accept[origin]) return new Response("unavailable", { status: 503 });
      submitted[origin].push((await request.json()) as Submission);
      return Response.json({ status: "queued" }, { status: 202 });
    }
    return Response.json({ error: { message: "no route" } }, { status: 404 });
  };
  restore = installFakeRunners({ [RUNNER_A]: handler(RUNNER_A), [RUNNER_B]: handler(RUNNER_B) });
  return { submitted, accept };
}

const heartbeat = (id: string, url: string) =>
  call("POST", "/internal/runners/heartbeat", {
    headers: RUNNER_AUTH,
    json: { id, url, base_model: env.BASE_MODEL, basis_id: "basis-1", running: 0, waiting: 0, resident_adapters: 0 },
  });
const jobRow = (id: string) => env.DB.prepare("SELECT * FROM fine_tuning_jobs WHERE id = ?").bind(id).first<Record<string, any>>();
const callback = (jobId: string, placement: string | null, events: unknown[]) =>
  call("POST", `/internal/jobs/${jobId}/events`, {
    headers: { ...RUNNER_AUTH, ...(placement === null ? {} : { "x-pica-placement": placement }) },
    json: { events },
  });
const stepEvent = (jobId: string, step: number) => ({
  id: `${jobId}:step:${step}`,
  job_id: jobId,
  created_at: 1_800_000_000 + step,
  level: "info",
  type: "metrics",
  message: `Step ${step}`,
  data: { step },
});

/** A job running on runner A (both runners heartbeat; ties go to "runner-a"), with a trainer state uploaded. */
async function runningOnA(withState = true) {
  const { key } = await tenantWithKey();
  const runners = trainingRunners();
  expect((await heartbeat("runner-a", RUNNER_A)).status).toBe(200);
  expect((await heartbeat("runner-b", RUNNER_B)).status).toBe(200);
  const job = await createdJob(key);
  expect(await consumeOnce({ kind: "dispatch_job", jobId: job.id })).toEqual({ acked: true, retried: false });
  expect(runners.submitted[RUNNER_A].map((s) => s.placement)).toEqual(["runner-a"]);
  const running = {
    id: `${job.id}:status:running`,
    job_id: job.id,
    created_at: 1_800_000_000,
    level: "info",
    type: "status",
    message: "Job started",
    data: { status: "running", trained_tokens: 640 },
  };
  expect((await callback(job.id, "runner-a", [running, stepEvent(job.id, 1)])).status).toBe(200);
  const state = new Uint8Array([5, 4, 3, 2, 1]);
  if (withState)
    expect(
      (
        await call("PUT", `/internal/jobs/${job.id}/state`, {
          headers: { ...RUNNER_AUTH, "x-pica-placement": "runner-a", "x-content-sha256": await sha256(state) },
          body: state,
        })
      ).status,
    ).toBe(200);
  return { key, job: job as { id: string }, runners, state };
}

/** Ages runner A's heartbeat past the stale limit; runner B heartbeats now. */
async function loseRunnerA(now: number) {
  await env.DB.prepare("UPDATE runners SET last_heartbeat = ? WHERE id = 'runner-a'")
    .bind(now - HEARTBEAT_STALE_SECONDS - 5)
    .run();
  expect((await heartbeat("runner-b", RUNNER_B)).status).toBe(200);
}

let restore: (() => void) | null = null;
beforeEach(() => forgetRunners());
afterEach(() => {
  restore?.();
  restore = null;
});

describe("moving jobs off a lost runner", () => {
  it("gives the job to the other runner with the trainer state to resume from, tells the tenant, and refuses the lost runner's callbacks", async () => {
    const { key, job, runners, state } = await runningOnA();
    const now = Math.floor(Date.now() / 1000);
    expect(await relocateOrphanedJobs(env, now)).toEqual([]); // A still heartbeats: nothing moves
    await loseRunnerA(now);
    expect(await relocateOrphanedJobs(env, now)).toEqual([job.id]);

    expect(runners.submitted[RUNNER_B]).toEqual([
      expect.objectContaining({
        id: job.id,
        placement: "runner-b",
        resume_state: { url: `http://edge.test/internal/jobs/${job.id}/state`, trained_tokens: 640 },
      }),
    ]);
    expect(await jobRow(job.id)).toMatchObject({ status: "running", runner_id: "runner-b" });
    const events = (await (await call("GET", `/v1/fine_tuning/jobs/${job.id}/events`, { key })).json()) as { data: { level: string; message: string }[] };
    expect(events.data[0]).toMatchObject({ level: "warn", message: expect.stringMatching(/another runner from its last checkpoint/) });

    // The new runner reads the state the lost one uploaded; only it may report from now on.
    const served = await call("GET", `/internal/jobs/${job.id}/state`, { headers: { ...RUNNER_AUTH, "x-pica-placement": "runner-b" } });
    expect(new Uint8Array(await served.arrayBuffer())).toEqual(state);
    const stale = await callback(job.id, "runner-a", [stepEvent(job.id, 2)]);
    expect(stale.status).toBe(409);
    expect((await errorOf(stale)).code).toBe("job_moved");
    expect((await callback(job.id, "runner-b", [stepEvent(job.id, 2)])).status).toBe(200);
    expect((await call("GET", `/internal/jobs/${job.id}/state`, { headers: RUNNER_AUTH })).status).toBe(200); // no placement: not judged

    // Moved once: a second sweep leaves it where it is.
    expect(await relocateOrphanedJobs(env, now)).toEqual([]);
  });

  it("restarts a job from the beginning when its lost runner uploaded no state", async () => {
    const { job, runners } = await runningOnA(false);
    const now = Math.floor(Date.now() / 1000);
    await loseRunnerA(now);
    expect(await relocateOrphanedJobs(env, now)).toEqual([job.id]);
    expect(runners.submitted[RUNNER_B][0].resume_state).toBeUndefined();
  });

  it("keeps the job where it is when no other runner is up, or the other one refuses it, and tries again later", async () => {
    const { job, runners } = await runningOnA();
    const now = Math.floor(Date.now() / 1000);
    await env.DB.prepare("UPDATE runners SET last_heartbeat = ?")
      .bind(now - HEARTBEAT_STALE_SECONDS - 5)
      .run();
    expect(await relocateOrphanedJobs(env, now)).toEqual([]); // both silent: nowhere to go
    expect(await jobRow(job.id)).toMatchObject({ runner_id: "runner-a" });
    await loseRunnerA(now);
    runners.accept[RUNNER_B] = false;
    expect(await relocateOrphanedJobs(env, now)).toEqual([]);
    expect(await jobRow(job.id)).toMatchObject({ status: "running", runner_id: "runner-a" });
    runners.accept[RUNNER_B] = true;
    expect(await relocateOrphanedJobs(env, now)).toEqual([job.id]);
    expect(await jobRow(job.id)).toMatchObject({ runner_id: "runner-b" });
  });

  it("never judges runners that do not heartbeat", async () => {
    const { key } = await tenantWithKey();
    const runners = trainingRunners();
    const job = await createdJob(key);
    expect(await consumeOnce({ kind: "dispatch_job", jobId: job.id })).toEqual({ acked: true, retried: false });
    const placement = [...runners.submitted[RUNNER_A], ...runners.submitted[RUNNER_B]][0].placement as string;
    const running = {
      id: `${job.id}:status:running`,
      job_id: job.id,
      created_at: 1_800_000_000,
      level: "info",
      type: "status",
      message: "Job started",
      data: { status: "running" },
    };
    expect((await callback(job.id, placement, [running])).status).toBe(200);
    expect((await heartbeat("runner-b", RUNNER_B)).status).toBe(200); // a live runner it could move to
    expect(await relocateOrphanedJobs(env)).toEqual([]);
    expect(await jobRow(job.id)).toMatchObject({ status: "running", runner_id: placement });
  });
});
