/**
 * The ranks a fine-tuning job may ask for, as the edge knows them before it dispatches: each
 * runner reports its model's linear shapes and its basis's rows in its heartbeat, and the shared
 * rule (src/protocol/adapter-rank.ts) turns them into a ceiling for the job's target modules.
 * Runners check the same rule again when a job reaches them.
 */
import { rankCeiling, type LinearModule, type RankCeiling } from "../../../src/protocol/adapter-rank.ts";
import type { RunnerInfo } from "./registry.ts";

/**
 * The largest rank a job on `baseModel` may ask for: the highest ceiling among the healthy runners
 * of that model that reported their limits (the job is placed on one that allows it), else among
 * every runner of that model ever reported (`known`, the last word of runners now away), else the
 * largest PiCa rank (the runner refuses a rank it cannot serve when the job reaches it).
 */
export function modelRankCeiling(healthy: RunnerInfo[], known: RunnerInfo[], baseModel: string, targetModules: readonly LinearModule[]): RankCeiling {
  for (const runners of [healthy, known]) {
    const ceilings = runners
      .filter((runner) => runner.baseModel === baseModel && runner.rankLimits !== null)
      .map((runner) => rankCeiling(runner.rankLimits, targetModules));
    if (ceilings.length > 0) return ceilings.reduce((best, ceiling) => (ceiling.rank > best.rank ? ceiling : best));
  }
  return rankCeiling(null, targetModules);
}

/** Whether `runner` can train a job of `rank` on `targetModules` (a runner that reported nothing may: it checks itself). */
export function allowsRank(runner: RunnerInfo, rank: number, targetModules: readonly LinearModule[]): boolean {
  return runner.rankLimits === null || rank <= rankCeiling(runner.rankLimits, targetModules).rank;
}
