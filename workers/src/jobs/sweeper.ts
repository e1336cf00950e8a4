/**
 * The cron sweep: a job that still waits for a runner a minute after it was created (its dispatch
 * message exhausted its retries while no runner was up, or was lost) gets a fresh dispatch task.
 * Dispatch is idempotent, so a job whose first message is merely slow is not sent twice. Running
 * jobs of lost runners move to another runner (relocation.ts). Blobs of retired checkpoints that
 * could not be deleted when they were retired are deleted (checkpoint-retention.ts).
 */
import { database } from "../db/client.ts";
import { findWaitingJobIds } from "../db/queries/fine-tuning-jobs.ts";
import type { TaskMessage } from "../queue/messages.ts";
import { sweepRetiredAdapters } from "./checkpoint-retention.ts";
import { relocateOrphanedJobs } from "./relocation.ts";

/** Jobs younger than this are left to their own dispatch message. */
export const SWEEP_AFTER_SECONDS = 60;
const MAX_PER_SWEEP = 100;

/** Re-sends dispatch tasks for waiting jobs; returns their ids. */
export async function sweepWaitingJobs(env: Env, now = Math.floor(Date.now() / 1000)): Promise<string[]> {
  const ids = await findWaitingJobIds(database(env.DB), now - SWEEP_AFTER_SECONDS, MAX_PER_SWEEP);
  if (ids.length > 0) await env.TASKS.sendBatch(ids.map((jobId) => ({ body: { kind: "dispatch_job", jobId } satisfies TaskMessage })));
  return ids;
}

/** Everything the cron does each minute; failures are logged (the next minute tries again). */
export async function sweep(env: Env): Promise<void> {
  const results = await Promise.allSettled([sweepWaitingJobs(env), relocateOrphanedJobs(env), sweepRetiredAdapters(env)]);
  for (const result of results) if (result.status === "rejected") console.error(`sweep: ${(result.reason as Error).message}`);
}
