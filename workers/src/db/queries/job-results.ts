/**
 * What a runner reports about a job: its events (upserted by the runner's stable ids), its
 * checkpoints (each also a servable adapter) and its finished adapter. The blobs are in R2 before
 * any of these rows is written, and each report is one D1 batch, so a failure leaves no half state.
 */
import { and, desc, eq, inArray, lt } from "drizzle-orm";
import type { JobEvent } from "../../../../src/protocol/runner.ts";
import type { Database } from "../client.ts";
import { adapters, checkpoints, fineTuningJobs, jobEvents } from "../schema.ts";
import { predecessorsOf } from "../../jobs/job-status.ts";
import { conditionalBatch } from "../conditional-batch.ts";
import { edgeEventIf, findJobForRunner, type JobRow } from "./fine-tuning-jobs.ts";

export type EventRow = typeof jobEvents.$inferSelect;
export type CheckpointRow = typeof checkpoints.$inferSelect;
export type NewAdapter = typeof adapters.$inferInsert;

/** Upserts the runner's events by id; an id already used by another job is left alone. */
export async function upsertRunnerEvents(db: Database, job: Pick<JobRow, "id" | "tenantId">, events: JobEvent[]): Promise<void> {
  if (events.length === 0) return;
  const writes = events.map((event) =>
    db
      .insert(jobEvents)
      .values({
        id: event.id,
        jobId: job.id,
        tenantId: job.tenantId,
        level: event.level,
        type: event.type,
        message: event.message,
        data: event.data,
        createdAt: event.created_at,
      })
      .onConflictDoUpdate({
        target: jobEvents.id,
        set: { level: event.level, type: event.type, message: event.message, data: event.data },
        setWhere: eq(jobEvents.jobId, job.id),
      }),
  );
  await db.batch(writes as [(typeof writes)[0], ...typeof writes]);
}

/** The event with this id of this job, or null. */
export async function findJobEvent(db: Database, jobId: string, id: string): Promise<EventRow | null> {
  return (
    (await db
      .select()
      .from(jobEvents)
      .where(and(eq(jobEvents.jobId, jobId), eq(jobEvents.id, id)))
      .get()) ?? null
  );
}

/** One page of a job's events, newest first, before the event `after` (its sequence number). */
export async function listJobEvents(db: Database, jobId: string, page: { limit: number; afterSequence: number | null }): Promise<EventRow[]> {
  const conditions = [eq(jobEvents.jobId, jobId)];
  if (page.afterSequence !== null) conditions.push(lt(jobEvents.sequence, page.afterSequence));
  return db
    .select()
    .from(jobEvents)
    .where(and(...conditions))
    .orderBy(desc(jobEvents.sequence))
    .limit(page.limit)
    .all();
}

/** Records a checkpoint and its adapter (blob already stored); a repeated step changes nothing. */
export async function recordCheckpoint(db: Database, checkpoint: typeof checkpoints.$inferInsert, adapter: NewAdapter): Promise<void> {
  await db.batch([db.insert(adapters).values(adapter).onConflictDoNothing(), db.insert(checkpoints).values(checkpoint).onConflictDoNothing()]);
}

/** One page of a job's checkpoints, newest step first, below the step of `after`. */
export async function listJobCheckpoints(db: Database, jobId: string, page: { limit: number; afterStep: number | null }): Promise<CheckpointRow[]> {
  const conditions = [eq(checkpoints.jobId, jobId)];
  if (page.afterStep !== null) conditions.push(lt(checkpoints.step, page.afterStep));
  return db
    .select()
    .from(checkpoints)
    .where(and(...conditions))
    .orderBy(desc(checkpoints.step))
    .limit(page.limit)
    .all();
}

/** The checkpoint with this id of this job, or null. */
export async function findJobCheckpoint(db: Database, jobId: string, id: string): Promise<CheckpointRow | null> {
  return (
    (await db
      .select()
      .from(checkpoints)
      .where(and(eq(checkpoints.jobId, jobId), eq(checkpoints.id, id)))
      .get()) ?? null
  );
}

/**
 * Finishes a job with its adapter (blob already stored): the job moves to succeeded only from an
 * unfinished status, and the adapter row and the event are written only if the job is then
 * succeeded, all in one transaction. Returns the job as it is afterwards.
 */
export async function completeJobWithAdapter(db: Database, jobId: string, adapter: NewAdapter, eventId: string): Promise<JobRow | null> {
  const now = Math.floor(Date.now() / 1000);
  await conditionalBatch(db, [
    db
      .update(fineTuningJobs)
      .set({ status: "succeeded", finishedAt: now })
      .where(and(eq(fineTuningJobs.id, jobId), inArray(fineTuningJobs.status, predecessorsOf("succeeded")))),
    {
      sql: `INSERT INTO adapters (id, tenant_id, base_model, basis_id, rank, sharing, status, blob_key, sha256, bytes, source_job_id, source)
        SELECT ?, tenant_id, ?, ?, ?, ?, 'ready', ?, ?, ?, id, ? FROM fine_tuning_jobs WHERE id = ? AND status = 'succeeded'
        ON CONFLICT (id) DO NOTHING`,
      params: [
        adapter.id,
        adapter.baseModel,
        adapter.basisId ?? null,
        adapter.rank ?? null,
        adapter.sharing ?? null,
        adapter.blobKey,
        adapter.sha256,
        adapter.bytes,
        adapter.source,
        jobId,
      ],
    },
    edgeEventIf(jobId, "succeeded", { id: eventId, level: "info", message: `The fine-tuned model ${adapter.id} is ready` }),
  ]);
  return findJobForRunner(db, jobId);
}
