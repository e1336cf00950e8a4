import { Hono } from "hono";
import { linearShapes } from "../model/weights.ts";
import { createHash } from "node:crypto";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { JOB_MOVED_CODE, PLACEMENT_HEADER, trainingJobRequestSchema, type JobEvent, type RunnerJob } from "../../src/protocol/runner.ts";
import { parseAdapter } from "../pica/adapter-format.ts";
import { computeBasis } from "../pica/basis.ts";
import { listen, type Served } from "../testing/serve-app.ts";
import { tinyModel } from "../testing/tiny-checkpoints.ts";
import { makeByteLevelTokenizerFiles } from "../tokenizer/byte-level.ts";
import { TextTokenizer } from "../tokenizer/tokenizer.ts";
import type { TrainerModel } from "../training/trainer.ts";
import { CallbackClient } from "./callbacks.ts";
import { JobConflictError, JobManager, JobRequestError } from "./job-manager.ts";

const files = makeByteLevelTokenizerFiles();
const tokenizer = TextTokenizer.fromJson(files.tokenizerJson, files.tokenizerConfig);
const WORDS = ["red", "blue", "green", "gold", "grey", "pink", "teal", "navy", "plum", "rose", "sand", "jade"];
const jsonl = (count: number) =>
  Array.from({ length: count }, (_, i) =>
    JSON.stringify({
      messages: [
        { role: "user", content: `shout ${WORDS[i % 12]}` },
        { role: "assistant", content: WORDS[i % 12].toUpperCase() },
      ],
    }),
  ).join("\n");

/** What the control plane received on a job's callback. */
interface Received {
  placements: { job: string; placement: string }[]; // the placement header of every callback, "" when absent
  events: JobEvent[];
  blobs: { path: string; sha256: string; bytes: Uint8Array; authorization: string | null }[];
  failNext: number; // answer this many next requests with 503
}

async function waitFor(what: string, check: () => boolean, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

describe("JobManager", () => {
  let model: TrainerModel;
  let directory: string;
  let callback: Served;
  const received: Received = { placements: [], events: [], blobs: [], failNext: 0 };
  const managers: JobManager[] = [];

  beforeAll(async () => {
    const { config, weights } = tinyModel("llama-gqa");
    model = { config, weights, tokenizer, basis: await computeBasis(config, weights, { rMax: 8 }) };
    directory = await mkdtemp(join(tmpdir(), "pica-jobs-"));
    const edge = new Hono();
    edge.use(async (c, next) => {
      if (c.req.path.startsWith("/callbacks/")) received.placements.push({ job: c.req.path.split("/")[2], placement: c.req.header(PLACEMENT_HEADER) ?? "" });
      // The control plane gave these jobs to another runner.
      if (c.req.path.startsWith("/callbacks/moved-"))
        return c.json({ error: { message: "moved", type: "invalid_request_error", param: null, code: JOB_MOVED_CODE } }, 409);
      if (received.failNext > 0) {
        received.failNext--;
        return c.text("unavailable", 503);
      }
      await next();
    });
    edge.post("/callbacks/:job/events", async (c) => {
      received.events.push(...((await c.req.json()) as { events: JobEvent[] }).events);
      return c.json({ ok: true });
    });
    // The trainer state a job's runner uploaded last, as the control plane serves it to the next runner.
    edge.get("/state/:job", (c) => {
      const state = received.blobs.findLast((blob) => blob.path === `/callbacks/${c.req.param("job")}/state`);
      return state === undefined ? c.text("none", 404) : c.body(new Uint8Array(state.bytes));
    });
    edge.put("/callbacks/:job/*", async (c) => {
      const bytes = new Uint8Array(await c.req.arrayBuffer());
      received.blobs.push({ path: c.req.path, sha256: c.req.header("x-content-sha256")!, bytes, authorization: c.req.header("authorization") ?? null });
      return c.json({ ok: true });
    });
    callback = await listen(edge);
  });
  afterAll(async () => {
    for (const manager of managers) await manager.shutdown();
    await callback.close();
    await rm(directory, { recursive: true, force: true });
  });

  function manager(
    published?: Map<string, Uint8Array>,
    jobsDirectory = directory,
    callbacks = new CallbackClient({ secret: "runner-secret", backoffMs: 5 }),
  ): JobManager {
    const created = new JobManager({
      model,
      directory: jobsDirectory,
      rankLimits: { linearShapes: linearShapes(model.config), basisRows: 4 },
      callbacks,
      data: { secret: "runner-secret", trustedOrigins: [], maxBytes: 2 ** 20 },
      microBatchTokens: 64,
      publishAdapter: async (id, bytes) => void published?.set(id, bytes),
    });
    managers.push(created);
    return created;
  }
  const request = (id: string, extra: Record<string, unknown> = {}) =>
    trainingJobRequestSchema.parse({
      id,
      training_file: { content: jsonl(24) },
      hyperparameters: { n_epochs: 2, batch_size: 4, rank: 4, learning_rate_multiplier: 0.5 },
      seed: 1,
      callback_url: `${callback.url}/callbacks/${id}`,
      checkpoint_every: 3,
      ...extra,
    });
  const finished = (jobs: JobManager, id: string) => waitFor(`job ${id} to finish`, () => ["succeeded", "failed", "cancelled"].includes(jobs.get(id)!.status));

  it("trains a job to an adapter, publishes it, and reports events, checkpoints and the adapter to the callback", async () => {
    const published = new Map<string, Uint8Array>();
    const jobs = manager(published);
    received.failNext = 2; // the first deliveries fail and are retried
    const accepted = await jobs.submit(request("job-a", { adapter_id: "ft:tiny:acme:a:job-a" }));
    expect(accepted.status).toBe("queued");
    await finished(jobs, "job-a");
    const job = jobs.get("job-a")!;
    expect(job).toMatchObject({ status: "succeeded", step: 12, total_steps: 12, error: null, adapter_id: "ft:tiny:acme:a:job-a" });
    expect(job.trained_tokens).toBeGreaterThan(0);
    const bytes = (await jobs.adapterBytes("job-a"))!;
    expect(createHash("sha256").update(bytes).digest("hex")).toBe(job.adapter_sha256);
    expect(published.get("ft:tiny:acme:a:job-a")).toEqual(bytes);
    expect(parseAdapter(bytes, "a").rank).toBe(4);

    await waitFor("the final status event", () => received.events.some((e) => e.id === "job-a:status:succeeded"));
    const mine = received.events.filter((e) => e.job_id === "job-a");
    expect(mine.filter((e) => e.type === "metrics" && e.id.includes(":step:")).map((e) => e.data!.step)).toEqual(Array.from({ length: 12 }, (_, i) => i + 1));
    expect(mine.filter((e) => e.type === "checkpoint").map((e) => e.data!.step)).toEqual([3, 6, 9]);
    expect(mine.at(-1)!.id).toBe("job-a:status:succeeded");
    const blobs = received.blobs.filter((b) => b.path.startsWith("/callbacks/job-a/"));
    expect(blobs.filter((b) => b.path.includes("/checkpoints/")).map((b) => b.path)).toEqual([3, 6, 9].map((s) => `/callbacks/job-a/checkpoints/${s}`));
    const adapter = blobs.find((b) => b.path === "/callbacks/job-a/adapter")!;
    expect(adapter.bytes).toEqual(bytes);
    expect(adapter.sha256).toBe(job.adapter_sha256);
    expect(adapter.authorization).toBe("Bearer runner-secret");
    for (const blob of blobs) expect(createHash("sha256").update(blob.bytes).digest("hex")).toBe(blob.sha256);
  });

  it("is idempotent for a repeated submission and refuses a different request under the same id", async () => {
    const jobs = manager();
    await jobs.start();
    const again = await jobs.submit(request("job-a", { adapter_id: "ft:tiny:acme:a:job-a" }));
    expect(again.status).toBe("succeeded");
    await expect(jobs.submit(request("job-a", { seed: 2 }))).rejects.toBeInstanceOf(JobConflictError);
    await expect(jobs.submit(request("job-big", { hyperparameters: { rank: 8 } }))).rejects.toThrow(JobRequestError);
  });

  it("fails a job with bad data, naming the lines", async () => {
    const jobs = manager();
    await jobs.submit(request("job-bad", { training_file: { content: `${jsonl(12)}\nnot json\n{"messages": []}` } }));
    await finished(jobs, "job-bad");
    const job = jobs.get("job-bad")!;
    expect(job.status).toBe("failed");
    expect(job.error!.code).toBe("invalid_training_file");
    expect(job.error!.message).toMatch(/line 13: .*line 14/);
  });

  it("cancels a running job between steps", async () => {
    const jobs = manager();
    await jobs.submit(request("job-c", { hyperparameters: { n_epochs: 50, batch_size: 4, rank: 4 } }));
    await waitFor("job-c to take steps", () => jobs.get("job-c")!.step >= 2);
    const cancelled = (await jobs.cancel("job-c"))!;
    expect(cancelled.status).toBe("cancelled");
    expect(cancelled.step).toBeLessThan(300);
    expect(await jobs.adapterBytes("job-c")).toBeNull();
    await waitFor("the cancelled event", () => received.events.some((e) => e.id === "job-c:status:cancelled"));
  });

  it("a job interrupted by a shutdown resumes from its last checkpoint and ends exactly as an uninterrupted run", async () => {
    const reference = manager();
    await reference.submit(request("job-ref"));
    await finished(reference, "job-ref");

    const first = manager();
    await first.submit(request("job-r"));
    await waitFor("a checkpoint", () => first.get("job-r")!.step >= 4);
    await first.shutdown();
    const paused: RunnerJob = first.get("job-r")!;
    expect(paused.status).toBe("queued");
    expect(await readdir(join(directory, "job-r"))).toContain("state.safetensors");

    const second = manager();
    await second.start();
    await finished(second, "job-r");
    const resumed = second.get("job-r")!;
    expect(resumed.status).toBe("succeeded");
    expect(resumed.resumed_from_step).toBeGreaterThanOrEqual(4);
    // Same tensors bit for bit (the files differ only in their provenance: the job id).
    const resumedAdapter = parseAdapter((await second.adapterBytes("job-r"))!, "resumed");
    const referenceAdapter = parseAdapter((await reference.adapterBytes("job-ref"))!, "reference");
    expect(resumedAdapter.m).toEqual(referenceAdapter.m);
    // The adapter says which base weights it was trained on: this manager's model has no quantized weight file.
    expect(resumedAdapter.provenance).toEqual({ job_id: "job-r", weights: "f32" });
  });
  it("a job moved from a lost runner resumes here from the trainer state that runner uploaded, and ends exactly as an uninterrupted run", async () => {
    const reference = manager();
    await reference.submit(request("job-ref-moved"));
    await finished(reference, "job-ref-moved");

    const lost = manager(undefined, await mkdtemp(join(tmpdir(), "pica-jobs-lost-")));
    await lost.submit(request("job-m", { placement: "runner-1" }));
    await waitFor("an uploaded trainer state", () => received.blobs.some((blob) => blob.path === "/callbacks/job-m/state"));
    await lost.shutdown(); // gone, as far as the control plane can tell

    const other = manager(undefined, await mkdtemp(join(tmpdir(), "pica-jobs-other-")));
    const before = received.placements.length;
    await other.submit(request("job-m", { placement: "runner-2", resume_state: { url: `${callback.url}/state/job-m`, trained_tokens: 50 } }));
    await finished(other, "job-m");
    const moved = other.get("job-m")!;
    expect(moved.status).toBe("succeeded");
    expect(moved.resumed_from_step).toBeGreaterThanOrEqual(3);
    expect(moved.trained_tokens).toBeGreaterThan(50);
    const movedAdapter = parseAdapter((await other.adapterBytes("job-m"))!, "moved");
    const referenceAdapter = parseAdapter((await reference.adapterBytes("job-ref-moved"))!, "reference");
    expect(movedAdapter.m).toEqual(referenceAdapter.m);
    await waitFor("the final status event", () => received.events.some((e) => e.id === "job-m:status:succeeded"));
    // Every callback says where it runs now (other tests' jobs may still be reporting their ends).
    const placements = received.placements.slice(before).filter((callback) => callback.job === "job-m");
    expect(new Set(placements.map((callback) => callback.placement))).toEqual(new Set(["runner-2"]));
  });

  it("fails a moved job whose trainer state cannot be read, saying so", async () => {
    const jobs = manager(undefined, await mkdtemp(join(tmpdir(), "pica-jobs-nostate-")));
    await jobs.submit(request("job-nostate", { resume_state: { url: `${callback.url}/state/never-uploaded` } }));
    await finished(jobs, "job-nostate");
    expect(jobs.get("job-nostate")!.error).toMatchObject({ code: "resume_state_unavailable" });
  });

  it("stops a job, quietly, when the control plane answers that it moved the job to another runner", async () => {
    // Every delivery the runner attempts, recorded as fetch is called (before it reaches the edge).
    const attempts: string[] = [];
    const callbacks = new CallbackClient({
      secret: "runner-secret",
      backoffMs: 5,
      fetch: (input, init) => {
        attempts.push(String(input));
        return fetch(input, init);
      },
    });
    const jobs = manager(undefined, directory, callbacks);
    const before = received.placements.length;
    await jobs.submit(request("moved-1", { placement: "runner-1", hyperparameters: { n_epochs: 50, batch_size: 4, rank: 4 } }));
    await finished(jobs, "moved-1");
    const job = jobs.get("moved-1")!;
    expect(job.status).toBe("cancelled");
    expect(job.error).toMatchObject({ code: "job_moved" });
    expect(job.step).toBeLessThan(100); // stopped long before its 300 steps
    // One refused delivery (its first), and nothing after it. The job's run has returned (its end
    // written, any last event queued) once the manager runs nothing, and every delivery queued for
    // it has been attempted once the callback queue is flushed: a later one would be in `attempts`.
    await waitFor("moved-1's run to return", () => jobs.stats().running === null);
    await callbacks.flushed("moved-1");
    expect(attempts.filter((url) => url.includes("/callbacks/moved-1/"))).toEqual([`${callback.url}/callbacks/moved-1/events`]);
    expect(received.placements.slice(before).filter((callback) => callback.job === "moved-1")).toEqual([{ job: "moved-1", placement: "runner-1" }]);
    // Given back later (with the control plane's state to resume from), it is accepted afresh;
    // any other different request under its id is still a conflict.
    await expect(jobs.submit(request("moved-1", { placement: "runner-1", seed: 9 }))).rejects.toBeInstanceOf(JobConflictError);
    const back = await jobs.submit(request("moved-1", { placement: "runner-1", resume_state: { url: `${callback.url}/state/moved-1` } }));
    expect(back).toMatchObject({ status: "queued", error: null });
    await finished(jobs, "moved-1");
  });
});
