/**
 * The runners table: heartbeats keep a runner's row fresh (and clear its failures); failed
 * forwards count against it until too many in a row take it out of the rotation
 * (runners/registry.ts reads the rows). Runners are the platform's, not a tenant's.
 */
import { and, eq, gt, ne, sql } from "drizzle-orm";
import type { RankLimitsBody } from "../../../../src/protocol/adapter-rank.ts";
import type { TrainingFigures } from "../../../../src/protocol/training-figures.ts";
import type { Database } from "../client.ts";
import { MAX_CONSECUTIVE_FAILURES } from "../../runners/registry.ts";
import { runners } from "../schema.ts";

export interface RunnerHeartbeat {
  id: string;
  url: string;
  baseModel: string;
  basisId: string;
  compatibleBasisIds: string[] | null;
  running: number;
  waiting: number;
  residentAdapters: number;
  rankLimits: RankLimitsBody | null;
  trainingFigures: TrainingFigures | null;
}

/** Records a heartbeat: the row is created or refreshed, and its failure count starts over. */
export async function upsertRunnerHeartbeat(db: Database, heartbeat: RunnerHeartbeat) {
  const url = heartbeat.url.replace(/\/+$/, "");
  const row = { ...heartbeat, url, failures: 0, lastHeartbeat: Math.floor(Date.now() / 1000) };
  // A row kept under another id for the same URL (a listed runner's failures, or an old identity
  // of a restarted runner) would shadow this one in the registry; the heartbeat supersedes it.
  await db.batch([
    db.delete(runners).where(and(eq(runners.url, url), ne(runners.id, heartbeat.id))),
    db.insert(runners).values(row).onConflictDoUpdate({ target: runners.id, set: row }),
  ]);
}

/**
 * Counts one failed forward to the runner at `url` (a listed runner without a row gets one). A
 * runner that is `down` (it could not be reached, or its stream broke) gets at least enough
 * failures to leave the rotation at once; its next heartbeat brings it back.
 */
export async function recordRunnerFailure(db: Database, url: string, down = false) {
  const failures = down ? sql`max(${runners.failures} + 1, ${MAX_CONSECUTIVE_FAILURES})` : sql`${runners.failures} + 1`;
  const updated = await db
    .update(runners)
    .set({ failures, lastFailureAt: Math.floor(Date.now() / 1000) })
    .where(eq(runners.url, url))
    .returning({ id: runners.id });
  if (updated.length > 0) return;
  // Never heartbeated: keyed by its URL, with a heartbeat time of 0 so it reads as stale and
  // stays in rotation only as a listed runner, until its failures take it out.
  await db
    .insert(runners)
    .values({
      id: url,
      url,
      baseModel: "",
      basisId: "",
      failures: down ? MAX_CONSECUTIVE_FAILURES : 1,
      lastFailureAt: Math.floor(Date.now() / 1000),
      lastHeartbeat: 0,
    })
    .onConflictDoUpdate({ target: runners.id, set: { failures, lastFailureAt: Math.floor(Date.now() / 1000) } });
}

/** Clears the failures of the runner at `url` after a good forward (failures count in a row). */
export async function clearRunnerFailures(db: Database, url: string) {
  await db
    .update(runners)
    .set({ failures: 0 })
    .where(and(eq(runners.url, url), gt(runners.failures, 0)));
}

/** Every runner row, for the operator's view. */
export async function listRunners(db: Database) {
  return db.select().from(runners).orderBy(runners.id).all();
}
