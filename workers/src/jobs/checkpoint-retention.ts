/**
 * A job keeps its newest CHECKPOINTS_KEPT checkpoints (and always its final model): every new
 * checkpoint, and the job's success, retires the older ones. A job checkpoints every few steps,
 * so without this a long job would leave hundreds of servable adapters and their blobs behind.
 * Blob deletion is best-effort here; the cron sweep finishes whatever failed.
 */
import { database } from "../db/client.ts";
import { findRetiredAdapters, removeRetiredAdapters, retireOldCheckpoints, type RetiredAdapter } from "../db/queries/checkpoint-retention.ts";

/** Checkpoints kept per job when CHECKPOINTS_KEPT is unset or not a count. */
export const DEFAULT_CHECKPOINTS_KEPT = 3;
const MAX_CHECKPOINTS_KEPT = 1000;
/** Retired adapters one sweep deletes (D1 binds at most 100 values per statement). */
const SWEEP_BATCH = 50;

type RetentionEnv = Pick<Env, "DB" | "BLOBS"> & { CHECKPOINTS_KEPT?: string | number };

/** How many checkpoints each job keeps besides its final model. */
export function checkpointsKept(env: RetentionEnv): number {
  const configured = env.CHECKPOINTS_KEPT;
  if (configured === undefined || configured === "") return DEFAULT_CHECKPOINTS_KEPT;
  const count = Number(configured);
  if (Number.isSafeInteger(count) && count >= 0 && count <= MAX_CHECKPOINTS_KEPT) return count;
  console.error(
    `CHECKPOINTS_KEPT must be a whole number from 0 to ${MAX_CHECKPOINTS_KEPT}, got ${JSON.stringify(configured)}; keeping ${DEFAULT_CHECKPOINTS_KEPT}`,
  );
  return DEFAULT_CHECKPOINTS_KEPT;
}

/**
 * Retires the job's checkpoints beyond the newest kept ones and deletes their blobs. Never throws:
 * the checkpoint or adapter that triggered it is already recorded, and a runner told otherwise
 * would resend it. What fails is picked up by the next pruning of the job or by the sweep.
 */
export async function pruneCheckpoints(env: RetentionEnv, jobId: string): Promise<void> {
  try {
    const retired = await retireOldCheckpoints(database(env.DB), jobId, checkpointsKept(env));
    await deleteBlobsThenRows(env, retired);
  } catch (error) {
    console.error(`pruning the checkpoints of ${jobId} failed (the next checkpoint or the sweep retries): ${(error as Error).message}`);
  }
}

/** Deletes the blobs of retired adapters, then their rows; returns how many were removed. */
export async function sweepRetiredAdapters(env: RetentionEnv): Promise<number> {
  const retired = await findRetiredAdapters(database(env.DB), SWEEP_BATCH);
  return deleteBlobsThenRows(env, retired);
}

// The row outlives its blob, never the reverse: a failed blob deletion leaves the row for the sweep.
async function deleteBlobsThenRows(env: RetentionEnv, retired: RetiredAdapter[]): Promise<number> {
  if (retired.length === 0) return 0;
  try {
    await env.BLOBS.delete(retired.map((adapter) => adapter.blobKey));
  } catch (error) {
    console.error(`blobs of retired adapters ${retired.map((adapter) => adapter.id).join(", ")} not deleted (the sweep retries): ${(error as Error).message}`);
    return 0;
  }
  await removeRetiredAdapters(
    database(env.DB),
    retired.map((adapter) => adapter.id),
  );
  return retired.length;
}
