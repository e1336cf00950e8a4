/**
 * Sends a fine-tuning job to a runner (the `dispatch_job` task). The queue delivers at least
 * once, so every step is idempotent: the job moves validating_files → queued only once, the
 * chosen runner is recorded before the request (a redelivery asks the same runner again, and the
 * runner accepts the same id and request twice as one job), and a job that is already running or
 * finished is left alone. A failure worth retrying throws, and the queue retries with backoff.
 */
import { LINEAR_MODULES, type LinearModule } from "../../../src/protocol/adapter-rank.ts";
import { CALLBACK_PATHS, EDGE_PATHS, requestedRank } from "../../../src/protocol/runner.ts";
import { database } from "../db/client.ts";
import { findTenantFile } from "../db/queries/files.ts";
import { assignRunner, findJobForRunner, moveJob, type JobRow } from "../db/queries/fine-tuning-jobs.ts";
import { clearRunnerFailures, recordRunnerFailure } from "../db/queries/runners.ts";
import { allowsRank } from "../runners/rank-limits.ts";
import { healthyRunners, type RunnerInfo } from "../runners/registry.ts";
import { finishJob } from "./job-outcomes.ts";
import { isTerminal } from "./job-status.ts";
import { cancelOnRunner, RunnerCallError, submitToRunner, type RunnerJobRequest } from "./runner-client.ts";

/** Steps between checkpoints a job asks its runner for. */
export const CHECKPOINT_EVERY_STEPS = 10;

/** Dispatches one job; throws when it should be retried later (no runner, runner unreachable). */
export async function dispatchJob(env: Env, jobId: string): Promise<void> {
  const db = database(env.DB);
  let job = await findJobForRunner(db, jobId);
  if (job === null || isTerminal(job.status) || job.status === "running") return;

  if (job.status === "validating_files") {
    const missing = await missingFile(env, job);
    if (missing !== null) {
      const message = `The ${missing.param} ${missing.id} no longer exists.`;
      await finishJob(env, job.id, "failed", { id: `${job.id}:edge:failed`, level: "error", message }, { code: "invalid_file", message, param: missing.param });
      return;
    }
    await moveJob(db, job.id, "queued", { id: `${job.id}:edge:queued`, level: "info", message: "Files validated; the job is queued for a runner" });
    job = await findJobForRunner(db, jobId);
    if (job === null || job.status !== "queued") return;
  }

  const candidates = (await healthyRunners(db, env)).filter((runner) => canTrain(runner, job!));
  const runner = candidates.find((candidate) => candidate.id === job!.runnerId) ?? leastLoaded(candidates);
  if (runner === undefined) throw new Error(`no healthy runner for ${job.model} that trains rank ${jobAdapterShape(job).rank}`);
  if ((await assignRunner(db, job.id, runner.id)) === null) return; // cancelled or started meanwhile

  try {
    await submitToRunner(runner.url, env.RUNNER_SECRET, runnerRequest(env, job, runner.id));
  } catch (error) {
    if (error instanceof RunnerCallError && !error.retryable) {
      // The runner refused the job itself (e.g. a rank above what it serves): retrying cannot help.
      console.error(`job ${job.id}: ${error.message}`);
      const message = `A runner refused the job: ${error.reason}`;
      await finishJob(env, job.id, "failed", { id: `${job.id}:edge:failed`, level: "error", message }, { code: "runner_rejected", message, param: null });
      return;
    }
    await recordRunnerFailure(db, runner.url);
    throw error;
  }
  await clearRunnerFailures(db, runner.url);
  // A cancel that landed while the request was in flight found no job on the runner yet.
  const after = await findJobForRunner(db, job.id);
  if (after?.status === "cancelled") await cancelOnRunner(runner.url, env.RUNNER_SECRET, job.id);
}

/**
 * The runner's job request; the same job on the same runner always yields the same request
 * (runners dedupe on it). `placement` is the runner's id, sent back on every callback; a job
 * moved from a lost runner resumes from the trainer state that runner last uploaded.
 */
export function runnerRequest(env: Pick<Env, "PUBLIC_URL">, job: JobRow, placement: string, resume?: { trainedTokens: number }): RunnerJobRequest {
  const base = env.PUBLIC_URL.replace(/\/+$/, "");
  return {
    id: job.id,
    training_file: { url: `${base}${EDGE_PATHS.fileContent(job.trainingFile)}` },
    ...(job.validationFile !== null ? { validation_file: { url: `${base}${EDGE_PATHS.fileContent(job.validationFile)}` } } : {}),
    hyperparameters: runnerHyperparameters(job.hyperparameters as NonNullable<RunnerJobRequest["hyperparameters"]>),
    seed: job.seed,
    adapter_id: job.fineTunedModel ?? undefined,
    callback_url: `${base}${EDGE_PATHS.jobCallbacks(job.id)}`,
    checkpoint_every: CHECKPOINT_EVERY_STEPS,
    placement,
    ...(resume !== undefined
      ? { resume_state: { url: `${base}${EDGE_PATHS.jobCallbacks(job.id)}${CALLBACK_PATHS.state}`, trained_tokens: resume.trainedTokens } }
      : {}),
  };
}

/** Whether `runner` serves the job's base model and allows its rank on its target modules (as far as it reported them). */
export function canTrain(runner: RunnerInfo, job: JobRow): boolean {
  const { rank, targetModules } = jobAdapterShape(job);
  return (runner.baseModel === null || runner.baseModel === job.model) && allowsRank(runner, rank, targetModules);
}

/**
 * The rank and target modules a job asks for (every module for jobs stored before they were
 * selectable); an "auto" rank is the smallest, since every runner lowers it to what it allows.
 */
function jobAdapterShape(job: JobRow): { rank: number; targetModules: LinearModule[] } {
  const hyperparameters = job.hyperparameters as { rank?: number | "auto"; target_modules?: LinearModule[] };
  return { rank: requestedRank(hyperparameters.rank, 1), targetModules: hyperparameters.target_modules ?? [...LINEAR_MODULES] };
}

/** A job's hyper-parameters as a runner takes them: every module is the runner's default, so a job on all of them names none. */
function runnerHyperparameters(stored: NonNullable<RunnerJobRequest["hyperparameters"]>): RunnerJobRequest["hyperparameters"] {
  const { target_modules, ...rest } = stored;
  return target_modules === undefined || target_modules.length === LINEAR_MODULES.length ? rest : { ...rest, target_modules };
}

// Fewest requests running and waiting, then fewest recent failures; ties by id, so a retried
// dispatch prefers the same runner.
export function leastLoaded(runners: RunnerInfo[]): RunnerInfo | undefined {
  return [...runners].sort((a, b) => a.running + a.waiting - (b.running + b.waiting) || a.failures - b.failures || a.id.localeCompare(b.id))[0];
}

async function missingFile(env: Env, job: JobRow): Promise<{ param: string; id: string } | null> {
  const db = database(env.DB);
  if ((await findTenantFile(db, job.tenantId, job.trainingFile)) === null) return { param: "training_file", id: job.trainingFile };
  if (job.validationFile !== null && (await findTenantFile(db, job.tenantId, job.validationFile)) === null)
    return { param: "validation_file", id: job.validationFile };
  return null;
}
