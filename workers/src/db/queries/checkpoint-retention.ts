/**
 * Retiring the checkpoints a job no longer keeps. One batch drops the checkpoint rows past the
 * newest `kept` steps and turns their adapters `deleted`, which every read already skips, so they
 * stop being listed or served at once; the adapter row itself goes only after its blob is gone,
 * so a blob whose deletion failed stays findable until a later sweep deletes it. A job's final
 * adapter is not a checkpoint and is never touched here.
 */
import { and, asc, desc, eq, inArray, notInArray, sql } from "drizzle-orm";
import type { Database } from "../client.ts";
import { adapters, checkpoints } from "../schema.ts";

/** An adapter whose blob is to be deleted before its row. */
export interface RetiredAdapter {
  id: string;
  blobKey: string;
}

/** Retires the job's checkpoints past the newest `kept` (by step); returns their adapters. */
export async function retireOldCheckpoints(db: Database, jobId: string, kept: number): Promise<RetiredAdapter[]> {
  const keptSteps = db.select({ step: checkpoints.step }).from(checkpoints).where(eq(checkpoints.jobId, jobId)).orderBy(desc(checkpoints.step)).limit(kept);
  const stale = and(eq(checkpoints.jobId, jobId), notInArray(checkpoints.step, keptSteps));
  // The update reads the checkpoint rows before the delete in the same transaction removes them.
  const [retired] = await db.batch([
    db
      .update(adapters)
      .set({ status: "deleted" })
      .where(and(inArray(adapters.id, db.select({ id: checkpoints.adapterId }).from(checkpoints).where(stale)), eq(adapters.source, "checkpoint")))
      .returning({ id: adapters.id, blobKey: adapters.blobKey }),
    db.delete(checkpoints).where(stale),
  ]);
  return retired;
}

/** Retired adapters whose blobs may still exist, oldest first: the sweep's backlog. */
export async function findRetiredAdapters(db: Database, limit: number): Promise<RetiredAdapter[]> {
  return db
    .select({ id: adapters.id, blobKey: adapters.blobKey })
    .from(adapters)
    .where(sql`${adapters.status} = 'deleted'`) // a literal, as the partial index adapters_retired reads it
    .orderBy(asc(adapters.createdAt))
    .limit(limit)
    .all();
}

/** Removes the rows of retired adapters whose blobs are deleted. */
export async function removeRetiredAdapters(db: Database, ids: string[]): Promise<void> {
  if (ids.length === 0) return;
  await db.delete(adapters).where(and(inArray(adapters.id, ids), eq(adapters.status, "deleted")));
}
