/**
 * Faults injected into a running cluster (stack/cluster.ts, two runners), each with what a tenant
 * saw and whether the platform survived it. Shared by the fault tests, which assert on the
 * observations, and `npm run bench -- chaos`, which counts them.
 *
 *   - a runner killed (SIGKILL) in the middle of a stream;
 *   - a runner killed in the middle of a training job, then started again at once, or only after
 *     the edge has moved the job to the other runner;
 *   - one flipped byte in an adapter's stored blob (the local R2 files under wrangler's state).
 */
import { createHash } from "node:crypto";
import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { classifyTask, toChatJsonl } from "../bench/quality-tasks.ts";
import { corpusPrompt } from "../bench/load.ts";
import { Rng } from "../gpu-runner/random.ts";
import { BASE_MODEL_ID } from "../src/constants.ts";
import { PicaClient, type FineTuningJob, type JobEvent } from "../src/client/pica-client.ts";
import { readSseData, SSE_DONE } from "../src/protocol/sse.ts";
import { RUNNER_PATHS, runnerAuthorization } from "../src/protocol/runner.ts";
import type { Cluster, ClusterRunner } from "./cluster.ts";

export interface FaultContext {
  cluster: Cluster;
  dataDir: string; // the cluster's data directory (wrangler's local R2 lives under it)
  key: string; // a tenant key with the inference and fine_tuning scopes
  log?: (message: string) => void;
}

/** What every fault reports. */
export interface FaultOutcome {
  fault: string;
  survived: boolean;
  detail: string;
}

/** A streamed completion read to its end: its text events, an error event if one came, [DONE]. */
export interface StreamRead {
  status: number;
  textEvents: number;
  error: { type: string; code: string | null; message: string } | null;
  done: boolean;
}

const SECOND = 1000;

// ---------------------------------------------------------------------------------------------
// A runner killed mid-stream

export interface MidStreamOutcome extends FaultOutcome {
  killed: string | null; // the runner that was serving the stream
  stream: StreamRead;
  markedDown: boolean; // the edge took the killed runner out of the rotation
  next: StreamRead; // the next request for the same adapter
  backInRotation: boolean; // after a restart, the killed runner heartbeats its way back
}

/** Kills the runner serving a stream for `adapter` after its first tokens, then restarts it. */
export async function killRunnerMidStream(context: FaultContext, adapter: string): Promise<MidStreamOutcome> {
  const { cluster } = context;
  const prompt = corpusPrompt(new Rng(5), 32);
  let killed: ClusterRunner | null = null;
  const stream = await streamCompletion(context, { model: adapter, prompt, max_tokens: 400 }, async (textEvents) => {
    if (textEvents !== 3 || killed !== null) return;
    killed = await servingRunner(cluster);
    context.log?.(`killing ${killed?.url ?? "(no runner was serving)"} mid-stream`);
    await killed?.kill();
  });
  const victim = killed as ClusterRunner | null;
  const markedDown =
    victim !== null &&
    (await eventually(
      () => inRotation(cluster, victim.url),
      (listed) => listed === false,
      10 * SECOND,
    )) === false;
  const next = await streamCompletion(context, { model: adapter, prompt, max_tokens: 8 });
  let backInRotation = false;
  if (victim !== null) {
    await victim.start();
    backInRotation =
      (await eventually(
        () => inRotation(cluster, victim.url),
        (listed) => listed === true,
        30 * SECOND,
      )) === true;
  }
  const survived =
    victim !== null && stream.error?.code === "runner_failed" && !stream.done && markedDown && next.status === 200 && next.done && backInRotation;
  return {
    fault: "runner killed mid-stream",
    survived,
    detail: `error event ${stream.error?.code ?? "none"} after ${stream.textEvents} tokens; marked down ${markedDown}; next request ${next.status}${next.done ? " [DONE]" : ""}; back in rotation ${backInRotation}`,
    killed: victim?.url ?? null,
    stream,
    markedDown,
    next,
    backInRotation,
  };
}

// ---------------------------------------------------------------------------------------------
// A runner killed mid-training

export interface MidTrainingOutcome extends FaultOutcome {
  jobId: string;
  killedAtStep: number | null; // the step the edge had last heard of
  resumedFromStep: number | null; // from the runner's "resumed" event
  job: FineTuningJob;
  totalSteps: number | null;
  stepEvents: number[]; // data.step of every metrics event with a step, in event order
  duplicateEventIds: number;
  adapterAnswers: boolean; // the fine-tuned model serves a request afterwards
  moved: boolean; // the edge gave the job to the other runner (when the killed one stayed down)
  oldCopyStopped: boolean | null; // the killed runner, started again afterwards, dropped its copy
}

/**
 * Starts a small job and kills its runner after the first checkpoint. With `restart`, the runner
 * starts again at once and resumes the job from its own disk. Without, it stays down: the cron
 * sweep (triggered here as Cloudflare's scheduler would) gives the job to the other runner, which
 * resumes it from the trainer state the edge kept; the killed runner is started again only after
 * the job has finished, and must then drop its stale copy when the edge refuses its callbacks.
 */
export async function killRunnerMidTraining(context: FaultContext, options: { restart: boolean }): Promise<MidTrainingOutcome> {
  const client = new PicaClient({ baseUrl: context.cluster.edgeUrl, apiKey: context.key });
  const task = classifyTask({ train: 64, eval: 0 }, 41);
  const file = await client.uploadFile("chaos.jsonl", toChatJsonl(task.train));
  const created = await client.createJob({
    model: BASE_MODEL_ID,
    training_file: file.id,
    suffix: "chaos",
    seed: 3,
    hyperparameters: { n_epochs: 3, batch_size: 4, rank: 8 },
  });
  context.log?.(`created ${created.id}; waiting for its first checkpoint`);
  const checkpointed = await eventually(
    () => checkpointCount(context, created.id),
    (count) => count > 0,
    180 * SECOND,
  );
  if (checkpointed === 0) throw new Error(`${created.id} made no checkpoint within 180 s`);
  const owner = await jobRunner(context.cluster, created.id);
  if (owner === null) throw new Error(`no runner says it runs ${created.id}`);
  // The runner's own step: the edge's events may trail it by a checkpoint or more.
  const killedAtStep = (await runnerJob(context.cluster, owner, created.id))?.step ?? latestStep(await allEvents(client, created.id));
  context.log?.(`killing ${owner.url} at step ${killedAtStep}${options.restart ? "" : " for good"}`);
  await owner.kill();
  let moved = false;
  if (options.restart) {
    await new Promise((resolve) => setTimeout(resolve, SECOND));
    await owner.start();
  } else {
    const movedEvent = (events: JobEvent[]) => events.some((event) => /another runner/.test(event.message));
    moved = movedEvent(
      await eventually(
        async () => {
          await fetch(`${context.cluster.edgeUrl}/cdn-cgi/handler/scheduled`).then((response) => response.body?.cancel());
          return allEvents(client, created.id);
        },
        movedEvent,
        180 * SECOND,
        2 * SECOND,
      ), // the cron, every 2 s instead of every minute
    );
    context.log?.(moved ? "the edge moved the job to the other runner" : "the job was not moved");
  }
  const job = await eventually(
    () => client.retrieveJob(created.id),
    (j) => ["succeeded", "failed", "cancelled"].includes(j.status),
    300 * SECOND,
  );
  let oldCopyStopped: boolean | null = null;
  if (!options.restart) {
    await owner.start();
    const copy = await eventually(
      () => runnerJob(context.cluster, owner, created.id),
      (state) => state?.status === "cancelled",
      60 * SECOND,
    );
    oldCopyStopped = copy?.status === "cancelled" && copy.error?.code === "job_moved";
  }
  const events = (await allEvents(client, created.id)).reverse(); // oldest first
  const stepEvents = events.filter((event) => event.type === "metrics" && typeof event.data?.step === "number").map((event) => event.data!.step as number);
  const totalSteps = (events.find((event) => typeof event.data?.total_steps === "number")?.data?.total_steps as number | undefined) ?? null;
  const resumed = events.find((event) => typeof event.data?.resumed_from_step === "number");
  const resumedFromStep = (resumed?.data?.resumed_from_step as number | undefined) ?? null;
  const duplicateEventIds = events.length - new Set(events.map((event) => event.id)).size;
  let adapterAnswers = false;
  if (job.fine_tuned_model !== null) adapterAnswers = (await streamCompletion(context, { model: job.fine_tuned_model, prompt: "I feel", max_tokens: 4 })).done;
  const everyStepOnce = totalSteps !== null && stepEvents.length === totalSteps && stepEvents.every((step, i) => step === i + 1);
  const survived =
    job.status === "succeeded" &&
    resumedFromStep !== null &&
    resumedFromStep > 0 &&
    everyStepOnce &&
    duplicateEventIds === 0 &&
    adapterAnswers &&
    (options.restart || (moved && oldCopyStopped === true));
  return {
    fault: options.restart ? "runner killed mid-training, restarted" : "runner killed mid-training, never back while it ran",
    survived,
    detail: `killed at step ${killedAtStep}, ${options.restart ? "" : `moved ${moved}, `}resumed from step ${resumedFromStep}; job ${job.status}; ${stepEvents.length}/${totalSteps} step events${everyStepOnce ? ", each once in order" : ""}; ${duplicateEventIds} duplicate ids; adapter answers ${adapterAnswers}${oldCopyStopped === null ? "" : `; the old runner dropped its copy ${oldCopyStopped}`}`,
    jobId: created.id,
    killedAtStep,
    resumedFromStep,
    job,
    totalSteps,
    stepEvents,
    duplicateEventIds,
    adapterAnswers,
    moved,
    oldCopyStopped,
  };
}

// ---------------------------------------------------------------------------------------------
// A corrupted adapter blob

export interface CorruptBlobOutcome extends FaultOutcome {
  status: number;
  error: { type: string; code: string | null; message: string } | null;
  othersServed: boolean; // another adapter still serves afterwards
}

/** Flips one byte of `adapter`'s stored blob (no runner may hold it yet), then asks for it. */
export async function corruptAdapterBlob(context: FaultContext, adapter: string, healthy: string): Promise<CorruptBlobOutcome> {
  const client = new PicaClient({ baseUrl: context.cluster.edgeUrl, apiKey: context.key });
  const { sha256 } = (await client.retrieveAdapter(adapter)) as { sha256: string };
  const path = await fileWithSha256(join(context.dataDir, "wrangler"), sha256);
  if (path === null) throw new Error(`no stored blob has the sha256 ${sha256} of ${adapter}`);
  const bytes = await readFile(path);
  bytes[bytes.length >> 1] ^= 0x01;
  await writeFile(path, bytes);
  context.log?.(`flipped one byte of ${path}`);
  const response = await fetch(`${context.cluster.edgeUrl}/v1/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${context.key}`, "content-type": "application/json" },
    body: JSON.stringify({ model: adapter, prompt: "Hello", max_tokens: 4 }),
  });
  const body = (await response.json().catch(() => null)) as { error?: { type: string; code: string | null; message: string } } | null;
  const error = body?.error ?? null;
  const othersServed = (await streamCompletion(context, { model: healthy, prompt: "Hello", max_tokens: 4 })).done;
  const survived = response.status === 422 && error !== null && /sha256/.test(error.message) && othersServed;
  return {
    fault: "corrupted adapter blob",
    survived,
    detail: `${response.status} ${error?.code ?? ""}: ${error?.message.slice(0, 160) ?? "(no error)"}; other adapters served ${othersServed}`,
    status: response.status,
    error,
    othersServed,
  };
}

// ---------------------------------------------------------------------------------------------
// Helpers

/** Streams a text completion through the edge, calling `onText` after each text event. */
async function streamCompletion(
  context: FaultContext,
  body: { model: string; prompt: string; max_tokens: number },
  onText?: (textEvents: number) => Promise<void>,
): Promise<StreamRead> {
  const response = await fetch(`${context.cluster.edgeUrl}/v1/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${context.key}`, "content-type": "application/json" },
    body: JSON.stringify({ ...body, temperature: 0, stream: true }),
    signal: AbortSignal.timeout(120 * SECOND),
  });
  const read: StreamRead = { status: response.status, textEvents: 0, error: null, done: false };
  if (response.status !== 200 || response.body === null) {
    read.error = ((await response.json().catch(() => null)) as { error?: StreamRead["error"] } | null)?.error ?? null;
    return read;
  }
  for await (const data of readSseData(response.body)) {
    if (data === SSE_DONE) read.done = true;
    else {
      const event = JSON.parse(data) as { choices?: { text?: string }[]; error?: StreamRead["error"] };
      if (event.error !== undefined) read.error = event.error;
      else if ((event.choices?.[0]?.text ?? "") !== "") {
        read.textEvents++;
        await onText?.(read.textEvents);
      }
    }
  }
  return read;
}

/** The runner with a request running right now, if any. */
async function servingRunner(cluster: Cluster): Promise<ClusterRunner | null> {
  for (const runner of cluster.runners) {
    const health = await fetch(`${runner.url}${RUNNER_PATHS.health}`, { headers: runnerAuthorization(cluster.secrets.RUNNER_SECRET) }).then(
      (r) => r.json() as Promise<{ running?: number }>,
      () => null,
    );
    if ((health?.running ?? 0) > 0) return runner;
  }
  return null;
}

/** The runner that holds the job, running. */
async function jobRunner(cluster: Cluster, jobId: string): Promise<ClusterRunner | null> {
  for (const runner of cluster.runners) {
    const response = await fetch(`${runner.url}${RUNNER_PATHS.job(jobId)}`, { headers: runnerAuthorization(cluster.secrets.RUNNER_SECRET) }).catch(() => null);
    if (response?.status === 200 && ((await response.json()) as { status: string }).status === "running") return runner;
    await response?.body?.cancel();
  }
  return null;
}

/** A runner's own record of a job (null: unreachable or unknown there). */
async function runnerJob(
  cluster: Cluster,
  runner: ClusterRunner,
  jobId: string,
): Promise<{ status: string; step: number; error: { code: string } | null } | null> {
  const response = await fetch(`${runner.url}${RUNNER_PATHS.job(jobId)}`, { headers: runnerAuthorization(cluster.secrets.RUNNER_SECRET) }).catch(() => null);
  if (response?.status !== 200) return null;
  return (await response.json()) as { status: string; step: number; error: { code: string } | null };
}

/** Whether the edge routes to the runner at `url` now (null: it has no row for it). */
async function inRotation(cluster: Cluster, url: string): Promise<boolean | null> {
  const listed = (await (await fetch(`${cluster.edgeUrl}/internal/runners`, { headers: runnerAuthorization(cluster.secrets.RUNNER_SECRET) })).json()) as {
    data: { url: string; in_rotation: boolean }[];
  };
  return listed.data.find((row) => row.url === url)?.in_rotation ?? null;
}

async function checkpointCount(context: FaultContext, jobId: string): Promise<number> {
  const page = (await (
    await fetch(`${context.cluster.edgeUrl}/v1/fine_tuning/jobs/${jobId}/checkpoints`, { headers: { authorization: `Bearer ${context.key}` } })
  ).json()) as { data: unknown[] };
  return page.data.length;
}

/** Every event of a job, newest first (all pages). */
async function allEvents(client: PicaClient, jobId: string): Promise<JobEvent[]> {
  const events: JobEvent[] = [];
  for (let after: string | undefined; ; ) {
    const page = await client.jobEvents(jobId, 100, after);
    events.push(...page.data);
    if (!page.has_more || page.data.length === 0) return events;
    after = page.data.at(-1)!.id;
  }
}

function latestStep(eventsNewestFirst: JobEvent[]): number | null {
  const latest = eventsNewestFirst.find((event) => typeof event.data?.step === "number");
  return (latest?.data?.step as number | undefined) ?? null;
}

/** Finds the file under `directory` whose content has this sha256. */
async function fileWithSha256(directory: string, sha256: string): Promise<string | null> {
  for (const entry of await readdir(directory, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile()) continue;
    const path = join(entry.parentPath, entry.name);
    if (
      createHash("sha256")
        .update(await readFile(path))
        .digest("hex") === sha256
    )
      return path;
  }
  return null;
}

/** Polls `read` until `done` holds or `timeoutMs` passes; returns the last value read. */
async function eventually<T>(read: () => Promise<T>, done: (value: T) => boolean, timeoutMs: number, intervalMs = 250): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (done(value) || Date.now() > deadline) return value;
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}
