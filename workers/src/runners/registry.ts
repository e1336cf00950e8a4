/**
 * The runners the edge may use: those listed in RUNNER_URLS and those that heartbeat, minus any
 * whose heartbeat is stale or that failed too often in a row. Routing (affinity) and job placement
 * both start from this list.
 */
import { rankLimitsOf, type RankLimits } from "../../../src/protocol/adapter-rank.ts";
import type { Database } from "../db/client.ts";
import { runners } from "../db/schema.ts";

export interface RunnerInfo {
  id: string; // the URL's origin for listed runners without a heartbeat
  url: string; // origin, no trailing slash
  baseModel: string | null; // null: not known yet (listed, never heartbeated)
  basisId: string | null; // null: not known yet
  compatibleBasisIds: string[]; // the smaller bases its basis extends
  failures: number; // consecutive failed forwards
  running: number;
  waiting: number;
  rankLimits: RankLimits | null; // null: not reported (listed, or an older runner)
}

/** A heartbeat older than this takes a runner out of the rotation. */
export const HEARTBEAT_STALE_SECONDS = 30;
/**
 * This many consecutive failed forwards take a runner out until its next heartbeat, or until
 * PROBE_AFTER_SECONDS have passed since its last failure: then it is tried again (a listed runner
 * that never heartbeats would otherwise stay out for good after a restart).
 */
export const MAX_CONSECUTIVE_FAILURES = 3;
export const PROBE_AFTER_SECONDS = 30;

export async function healthyRunners(db: Database, env: Pick<Env, "RUNNER_URLS">): Promise<RunnerInfo[]> {
  return healthyFromRows(await db.select().from(runners).all(), env);
}

/** The same choice from runner rows already read (e.g. in a batch with other lookups). */
export function healthyFromRows(known: (typeof runners.$inferSelect)[], env: Pick<Env, "RUNNER_URLS">): RunnerInfo[] {
  const now = Math.floor(Date.now() / 1000);
  const byUrl = new Map<string, RunnerInfo>();
  for (const url of (env.RUNNER_URLS ?? "")
    .split(",")
    .map((u) => u.trim().replace(/\/+$/, ""))
    .filter(Boolean)) {
    byUrl.set(url, { id: url, url, baseModel: null, basisId: null, compatibleBasisIds: [], failures: 0, running: 0, waiting: 0, rankLimits: null });
  }
  for (const row of known) {
    const url = row.url.replace(/\/+$/, "");
    const stale = now - row.lastHeartbeat > HEARTBEAT_STALE_SECONDS;
    const failing = row.failures >= MAX_CONSECUTIVE_FAILURES && now - (row.lastFailureAt ?? 0) < PROBE_AFTER_SECONDS;
    if (failing || (stale && !byUrl.has(url))) {
      byUrl.delete(url);
      continue;
    }
    if (stale) {
      const listed = byUrl.get(url); // listed statically: stays, with what we last knew
      if (listed !== undefined) listed.failures = row.failures;
      continue;
    }
    byUrl.set(url, runnerInfo(row));
  }
  return [...byUrl.values()];
}

/**
 * Whether `runner` serves adapters trained against basis `basisId`: its own basis, one its basis
 * extends, or one not known yet (a listed runner that has not heartbeated is given the benefit of
 * the doubt; it refuses an adapter of another basis itself).
 */
export function servesBasis(runner: RunnerInfo, basisId: string | null): boolean {
  return basisId === null || runner.basisId === null || runner.basisId === basisId || runner.compatibleBasisIds.includes(basisId);
}

/** Every runner that ever heartbeated, healthy or not, as last reported (what a job's rank is checked against when none is up). */
export function reportedFromRows(known: (typeof runners.$inferSelect)[]): RunnerInfo[] {
  return known.filter((row) => row.baseModel !== "").map(runnerInfo);
}

function runnerInfo(row: typeof runners.$inferSelect): RunnerInfo {
  return {
    id: row.id,
    url: row.url.replace(/\/+$/, ""),
    baseModel: row.baseModel,
    basisId: row.basisId,
    compatibleBasisIds: row.compatibleBasisIds ?? [],
    failures: row.failures,
    running: row.running,
    waiting: row.waiting,
    rankLimits: row.rankLimits === null ? null : rankLimitsOf(row.rankLimits),
  };
}
