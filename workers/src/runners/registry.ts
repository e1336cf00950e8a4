/**
 * The runners the edge may use: those listed in RUNNER_URLS and those that heartbeat, minus any
 * whose heartbeat is stale or that failed too often in a row. Routing (affinity) and job placement
 * both start from this list.
 */
import type { Database } from "../db/client.ts";
import { runners } from "../db/schema.ts";

export interface RunnerInfo {
  id: string; // the URL's origin for listed runners without a heartbeat
  url: string; // origin, no trailing slash
  baseModel: string | null; // null: not known yet (listed, never heartbeated)
  running: number;
  waiting: number;
}

/** A heartbeat older than this takes a runner out of the rotation. */
export const HEARTBEAT_STALE_SECONDS = 30;
/** This many consecutive failed forwards take a runner out until its next heartbeat. */
export const MAX_CONSECUTIVE_FAILURES = 3;

export async function healthyRunners(db: Database, env: Pick<Env, "RUNNER_URLS">): Promise<RunnerInfo[]> {
  const now = Math.floor(Date.now() / 1000);
  const known = await db.select().from(runners).all();
  const byUrl = new Map<string, RunnerInfo>();
  for (const url of (env.RUNNER_URLS ?? "").split(",").map((u) => u.trim().replace(/\/+$/, "")).filter(Boolean)) {
    byUrl.set(url, { id: url, url, baseModel: null, running: 0, waiting: 0 });
  }
  for (const row of known) {
    const url = row.url.replace(/\/+$/, "");
    const stale = now - row.lastHeartbeat > HEARTBEAT_STALE_SECONDS;
    if (row.failures >= MAX_CONSECUTIVE_FAILURES || (stale && !byUrl.has(url))) {
      byUrl.delete(url);
      continue;
    }
    if (stale) continue; // listed statically: stays, with what we last knew
    byUrl.set(url, { id: row.id, url, baseModel: row.baseModel, running: row.running, waiting: row.waiting });
  }
  return [...byUrl.values()];
}
