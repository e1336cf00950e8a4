/**
 * How a job's status follows what its runner reports: status events move it forward (never back;
 * see job-status.ts), the finished adapter makes it succeed, and every move to a final status
 * notifies the tenant's webhooks. Shared by the callback routes, the dispatcher and cancel.
 */
import { eq } from "drizzle-orm";
import type { JobEvent } from "../../../src/protocol/runner.ts";
import { sha256Hex } from "../auth/keys.ts";
import { database, type Database } from "../db/client.ts";
import { findJobForRunner, moveJob, raiseTrainedTokens, type EdgeEvent, type JobError, type JobRow } from "../db/queries/fine-tuning-jobs.ts";
import { completeJobWithAdapter, upsertRunnerEvents, type NewAdapter } from "../db/queries/job-results.ts";
import { runners } from "../db/schema.ts";
import { adapterBlobKey } from "../storage/blob-keys.ts";
import { enqueueWebhookEvent } from "../webhooks/events.ts";
import { pruneCheckpoints } from "./checkpoint-retention.ts";
import { publicJob } from "./job-object.ts";
import { isTerminal, type TerminalJobStatus } from "./job-status.ts";
import { fetchAdapterFromRunner, RunnerCallError, runnerUrl, withoutAddresses } from "./runner-client.ts";

type OutcomeEnv = Pick<Env, "DB" | "BLOBS" | "TASKS" | "RUNNER_SECRET"> & Partial<Pick<Env, "CHECKPOINTS_KEPT">>;

/** Moves a job to a final status (if it is not final yet) and notifies webhooks; the job afterwards. */
export async function finishJob(
  env: OutcomeEnv,
  jobId: string,
  status: TerminalJobStatus,
  event: EdgeEvent,
  error: JobError | null = null,
): Promise<JobRow | null> {
  const db = database(env.DB);
  const moved = await moveJob(db, jobId, status, event, { error });
  if (moved !== null) await notify(env, db, moved);
  return moved ?? (await findJobForRunner(db, jobId));
}

/** Records a runner's events and follows its status events (and trained tokens) on the job. */
export async function applyRunnerEvents(env: OutcomeEnv, job: JobRow, reported: JobEvent[]): Promise<void> {
  const db = database(env.DB);
  // Tenants read these events: a runner's message may name addresses (a download that failed).
  const events = reported.map((event) => ({ ...event, message: withoutAddresses(event.message) }));
  await upsertRunnerEvents(db, job, events);
  const tokens = Math.max(-1, ...events.map((event) => (typeof event.data?.trained_tokens === "number" ? event.data.trained_tokens : -1)));
  if (tokens >= 0) await raiseTrainedTokens(db, job.id, Math.floor(tokens));
  for (const event of events) {
    if (event.type !== "status") continue;
    const status = event.data?.status;
    const edgeEvent = { id: `${job.id}:edge:${String(status)}`, level: "info" as const, message: event.message };
    if (status === "running") {
      await moveJob(db, job.id, "running", { ...edgeEvent, message: "Fine-tuning job started" }, { startedAt: event.created_at });
    } else if (status === "failed") {
      const failure = event.data?.error as { code?: unknown; message?: unknown } | null | undefined;
      const error = {
        code: typeof failure?.code === "string" ? failure.code : "training_failed",
        message: typeof failure?.message === "string" ? withoutAddresses(failure.message) : event.message,
        param: null,
      };
      await finishJob(env, job.id, "failed", { ...edgeEvent, level: "error" }, error);
    } else if (status === "cancelled") {
      await finishJob(env, job.id, "cancelled", edgeEvent);
    } else if (status === "succeeded") {
      await recoverAdapter(env, job.id);
    }
  }
}

/** Stores a finished adapter whose sha256 the caller verified, then makes the job succeed. */
export async function storeFinishedAdapter(env: OutcomeEnv, job: JobRow, bytes: Uint8Array, sha256: string): Promise<JobRow | null> {
  const db = database(env.DB);
  const blobKey = adapterBlobKey(job.tenantId, job.id);
  // Blob first, rows after in one batch: a failure in between leaves an unreferenced blob only.
  await env.BLOBS.put(blobKey, bytes, { sha256, customMetadata: { sha256 }, httpMetadata: { contentType: "application/octet-stream" } });
  const after = await completeJobWithAdapter(
    db,
    job.id,
    await jobAdapterRow(db, job, { id: job.fineTunedModel!, blobKey, sha256, bytes: bytes.byteLength, source: "fine_tune" }),
    `${job.id}:edge:succeeded`,
  );
  if (after !== null && after.status === "succeeded" && !isTerminal(job.status)) {
    await notify(env, db, after);
    // The final model is kept; this catches up on a pruning that failed with the last checkpoint.
    await pruneCheckpoints(env, job.id);
  }
  return after;
}

// The runner reported success, so it sent the adapter first (its callbacks are ordered); if that
// delivery was lost, fetch the adapter from the runner, and fail the job only when that fails too.
async function recoverAdapter(env: OutcomeEnv, jobId: string): Promise<void> {
  const db = database(env.DB);
  const job = await findJobForRunner(db, jobId);
  if (job === null || isTerminal(job.status)) return;
  try {
    const url = job.runnerId === null ? null : await runnerUrl(db, job.runnerId);
    if (url === null) throw new Error("the runner that trained it is no longer known");
    const { bytes, sha256 } = await fetchAdapterFromRunner(url, env.RUNNER_SECRET, job.id);
    const actual = await sha256Hex(bytes);
    if (sha256 !== null && sha256 !== actual) throw new Error(`the adapter's sha256 is ${actual}, the runner states ${sha256}`);
    await storeFinishedAdapter(env, job, bytes, actual);
  } catch (error) {
    console.error(`job ${job.id}: the adapter could not be fetched from runner ${job.runnerId}: ${(error as Error).message}`);
    const reason = error instanceof RunnerCallError ? error.reason : withoutAddresses((error as Error).message);
    const message = `The job finished on its runner but its adapter could not be retrieved: ${reason}`;
    await finishJob(env, job.id, "failed", { id: `${job.id}:edge:failed`, level: "error", message }, { code: "adapter_unavailable", message, param: null });
  }
}

/**
 * The adapters row of something a job produced (its result or a checkpoint): owner, base model,
 * rank and sharing from the job, and the basis of the runner it trained on (null when unknown).
 */
export async function jobAdapterRow(
  db: Database,
  job: JobRow,
  blob: { id: string; blobKey: string; sha256: string; bytes: number; source: "fine_tune" | "checkpoint" },
): Promise<NewAdapter> {
  const hyperparameters = job.hyperparameters as { rank?: number | "auto"; weight_sharing?: boolean };
  const runner = job.runnerId === null ? undefined : await db.select({ basisId: runners.basisId }).from(runners).where(eq(runners.id, job.runnerId)).get();
  return {
    ...blob,
    tenantId: job.tenantId,
    baseModel: job.model,
    basisId: runner?.basisId || null,
    rank: typeof hyperparameters.rank === "number" ? hyperparameters.rank : null, // a number since "auto" is resolved at creation; older jobs may say "auto"
    sharing: hyperparameters.weight_sharing === false ? "per_layer" : "shared",
    sourceJobId: job.id,
  };
}

// Webhooks are best-effort here: the job's status is already recorded, and a failure to queue a
// notification must not make the runner resend a report that was stored.
async function notify(env: OutcomeEnv, db: Database, job: JobRow): Promise<void> {
  if (!isTerminal(job.status)) return;
  try {
    await enqueueWebhookEvent(env, db, job.tenantId, `fine_tuning.job.${job.status}`, publicJob(job));
  } catch (error) {
    console.error(`webhook for job ${job.id} (${job.status}) not queued: ${(error as Error).message}`);
  }
}
