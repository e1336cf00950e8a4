/**
 * Fine-tuning jobs and their status moves. Tenant reads go through the tenant; the dispatcher and
 * the runner's callbacks read by id (they act on jobs the edge itself created). Every status move
 * is a conditional update (see jobs/job-status.ts), written in one batch with the event that
 * records it, so a retried callback or a redelivered message changes nothing twice.
 */
import { and, eq, inArray, lt, or, sql } from "drizzle-orm";
import { predecessorsOf, type JobStatus } from "../../jobs/job-status.ts";
import type { Database } from "../client.ts";
import { conditionalBatch } from "../conditional-batch.ts";
import { fineTuningJobs, jobEvents } from "../schema.ts";
import { keysetPage } from "./keyset-page.ts";

export type JobRow = typeof fineTuningJobs.$inferSelect;
export type NewJob = typeof fineTuningJobs.$inferInsert;
export type JobError = NonNullable<JobRow["error"]>;

/** An event the edge itself records about a job (the runner's arrive through job-events.ts). */
export interface EdgeEvent {
  id: string;
  level: "info" | "warn" | "error";
  message: string;
}

/** Creates a job with its first event. */
export async function createJob(db: Database, job: NewJob, event: EdgeEvent): Promise<JobRow> {
  const [[row]] = await db.batch([db.insert(fineTuningJobs).values(job).returning(), insertEdgeEvent(db, job.id, job.tenantId, event)]);
  return row;
}

/** The tenant's job with this id, or null (also for another tenant's job). */
export async function findTenantJob(db: Database, tenantId: string, id: string): Promise<JobRow | null> {
  return (
    (await db
      .select()
      .from(fineTuningJobs)
      .where(and(eq(fineTuningJobs.id, id), eq(fineTuningJobs.tenantId, tenantId)))
      .get()) ?? null
  );
}

/** A job by id alone: for the dispatcher and the runner's callbacks only. */
export async function findJobForRunner(db: Database, id: string): Promise<JobRow | null> {
  return (await db.select().from(fineTuningJobs).where(eq(fineTuningJobs.id, id)).get()) ?? null;
}

/** Ids of jobs still waiting for a runner (validating_files or queued) created before `before`. */
export async function findWaitingJobIds(db: Database, before: number, limit: number): Promise<string[]> {
  const rows = await db
    .select({ id: fineTuningJobs.id })
    .from(fineTuningJobs)
    .where(and(inArray(fineTuningJobs.status, ["validating_files", "queued"]), lt(fineTuningJobs.createdAt, before)))
    .orderBy(fineTuningJobs.createdAt)
    .limit(limit)
    .all();
  return rows.map((row) => row.id);
}

/** One page of the tenant's jobs, newest first, after the job `after` (a cursor row). */
export async function listTenantJobs(db: Database, tenantId: string, page: { limit: number; after: JobRow | null }): Promise<JobRow[]> {
  const keyset = keysetPage(fineTuningJobs, "newest first", page.after);
  return db
    .select()
    .from(fineTuningJobs)
    .where(and(eq(fineTuningJobs.tenantId, tenantId), keyset.condition))
    .orderBy(...keyset.orderBy)
    .limit(page.limit)
    .all();
}

/** What else changes with a status move. */
export interface StatusChange {
  error?: JobError | null;
  trainedTokens?: number;
  startedAt?: number;
}

/**
 * Moves the job to `target` if it may (see predecessorsOf) and records `event` with it; returns
 * the updated row, or null when the job was already there or past it.
 */
export async function moveJob(db: Database, jobId: string, target: JobStatus, event: EdgeEvent, change: StatusChange = {}): Promise<JobRow | null> {
  const now = Math.floor(Date.now() / 1000);
  const terminal = target === "succeeded" || target === "failed" || target === "cancelled";
  const update = db
    .update(fineTuningJobs)
    .set({
      status: target,
      ...(change.error !== undefined ? { error: change.error } : {}),
      ...(change.trainedTokens !== undefined ? { trainedTokens: change.trainedTokens } : {}),
      ...(target === "running" ? { startedAt: change.startedAt ?? now } : {}),
      ...(terminal ? { finishedAt: now } : {}),
    })
    .where(and(eq(fineTuningJobs.id, jobId), inArray(fineTuningJobs.status, predecessorsOf(target))));
  // The event is written only if the move happened, in the same transaction.
  const [moved] = await conditionalBatch(db, [update, edgeEventIf(jobId, target, event)]);
  return moved === 0 ? null : findJobForRunner(db, jobId);
}

/** Records the runner a queued job was sent to; null when the job is no longer queued. */
export async function assignRunner(db: Database, jobId: string, runnerId: string): Promise<JobRow | null> {
  const [row] = await db
    .update(fineTuningJobs)
    .set({ runnerId })
    .where(and(eq(fineTuningJobs.id, jobId), eq(fineTuningJobs.status, "queued")))
    .returning();
  return row ?? null;
}

/**
 * Gives a running job to another runner (only if it still runs on `from`), with `event`, in one
 * transaction; false when the job finished or moved meanwhile.
 */
export async function moveRunningJob(db: Database, jobId: string, from: string, to: string, event: EdgeEvent): Promise<boolean> {
  const update = db
    .update(fineTuningJobs)
    .set({ runnerId: to })
    .where(and(eq(fineTuningJobs.id, jobId), eq(fineTuningJobs.status, "running"), eq(fineTuningJobs.runnerId, from)));
  const record = {
    sql: `INSERT INTO job_events (id, job_id, tenant_id, level, type, message, data)
      SELECT ?, id, tenant_id, ?, 'message', ?, ? FROM fine_tuning_jobs WHERE id = ? AND status = 'running' AND runner_id = ?
      ON CONFLICT (id) DO NOTHING`,
    params: [event.id, event.level, event.message, JSON.stringify({ runner_moved: true }), jobId, to],
  };
  const [moved] = await conditionalBatch(db, [update, record]);
  return moved > 0;
}

/** Running jobs with the runner they run on, oldest first. */
export async function findRunningJobs(db: Database, limit: number): Promise<JobRow[]> {
  return db.select().from(fineTuningJobs).where(eq(fineTuningJobs.status, "running")).orderBy(fineTuningJobs.createdAt).limit(limit).all();
}

/** Records where the job's latest trainer state is. */
export async function setJobStateKey(db: Database, jobId: string, stateKey: string): Promise<void> {
  await db.update(fineTuningJobs).set({ stateKey }).where(eq(fineTuningJobs.id, jobId));
}

/** Raises the job's trained tokens to `tokens` (never lowers them: events may arrive late). */
export async function raiseTrainedTokens(db: Database, jobId: string, tokens: number): Promise<void> {
  await db
    .update(fineTuningJobs)
    .set({ trainedTokens: tokens })
    .where(and(eq(fineTuningJobs.id, jobId), or(sql`${fineTuningJobs.trainedTokens} IS NULL`, lt(fineTuningJobs.trainedTokens, tokens))));
}

/** The insert of an edge event (duplicates by id are ignored). */
export function insertEdgeEvent(db: Database, jobId: string, tenantId: string, event: EdgeEvent) {
  return db
    .insert(jobEvents)
    .values({ id: event.id, jobId, tenantId, level: event.level, type: "message", message: event.message, data: null })
    .onConflictDoNothing();
}

/** An edge event written only if the job is in `status` when it runs (INSERT … SELECT). */
export function edgeEventIf(jobId: string, status: JobStatus, event: EdgeEvent) {
  return {
    sql: `INSERT INTO job_events (id, job_id, tenant_id, level, type, message, data)
      SELECT ?, id, tenant_id, ?, 'status', ?, ? FROM fine_tuning_jobs WHERE id = ? AND status = ?
      ON CONFLICT (id) DO NOTHING`,
    params: [event.id, event.level, event.message, JSON.stringify({ status }), jobId, status],
  };
}
