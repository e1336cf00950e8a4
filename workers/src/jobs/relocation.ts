/**
 * Jobs whose runner is gone: a running job on a runner that has not heartbeated for
 * HEARTBEAT_STALE_SECONDS (after heartbeating before: runners without heartbeats are never
 * judged) is given to another healthy runner, which resumes it from the trainer state the lost
 * runner last uploaded (from the start when it uploaded none). The move is recorded as an event;
 * if the lost runner comes back and resumes the job from its own disk, its callbacks carry the
 * old placement and are refused with `job_moved`, and it stops the job.
 */
import { database } from "../db/client.ts";
import { findRunningJobs, moveRunningJob } from "../db/queries/fine-tuning-jobs.ts";
import { runners } from "../db/schema.ts";
import { healthyFromRows, HEARTBEAT_STALE_SECONDS } from "../runners/registry.ts";
import { canTrain, leastLoaded, runnerRequest } from "./dispatcher.ts";
import { submitToRunner } from "./runner-client.ts";

const MAX_PER_SWEEP = 20;

/** Moves the running jobs of lost runners; returns the ids of the jobs moved. */
export async function relocateOrphanedJobs(env: Env, now = Math.floor(Date.now() / 1000)): Promise<string[]> {
  const db = database(env.DB);
  const running = await findRunningJobs(db, MAX_PER_SWEEP * 5);
  if (running.length === 0) return [];
  const rows = await db.select().from(runners).all();
  const byId = new Map(rows.map((row) => [row.id, row]));
  const fresh = (lastHeartbeat: number) => now - lastHeartbeat <= HEARTBEAT_STALE_SECONDS;
  const live = healthyFromRows(rows, env).filter((runner) => fresh(byId.get(runner.id)?.lastHeartbeat ?? 0));
  const moved: string[] = [];
  for (const job of running) {
    if (moved.length === MAX_PER_SWEEP) break;
    const lost = job.runnerId === null ? undefined : byId.get(job.runnerId);
    if (lost === undefined || lost.lastHeartbeat === 0 || fresh(lost.lastHeartbeat)) continue;
    const target = leastLoaded(live.filter((runner) => runner.id !== lost.id && runner.url !== lost.url && canTrain(runner, job)));
    if (target === undefined) continue;
    const from = job.stateKey !== null ? "from its last checkpoint" : "from the start (no checkpoint was made)";
    const event = {
      id: `${job.id}:edge:moved:${now}`,
      level: "warn" as const,
      message: `Its runner stopped answering; the job continues on another runner ${from}`,
    };
    if (!(await moveRunningJob(db, job.id, lost.id, target.id, event))) continue;
    try {
      await submitToRunner(
        target.url,
        env.RUNNER_SECRET,
        runnerRequest(env, job, target.id, job.stateKey !== null ? { trainedTokens: job.trainedTokens ?? 0 } : undefined),
      );
      moved.push(job.id);
    } catch (error) {
      // Back to the lost runner's name, so that the next sweep tries again.
      await moveRunningJob(db, job.id, target.id, lost.id, {
        id: `${event.id}:undone`,
        level: "warn",
        message: "The other runner could not take the job; trying again shortly",
      });
      console.error(`moving ${job.id} to ${target.url} failed: ${(error as Error).message}`);
    }
  }
  return moved;
}
