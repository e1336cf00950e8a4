/**
 * `/v1/fine_tuning/jobs` (fine-tuning key): create a job on one of the tenant's files (estimated
 * up front, dispatched through the TASKS queue), list, retrieve, cancel, and read its events and
 * checkpoints; estimate one before creating it. Shapes are OpenAI's; PiCa's `rank`,
 * `weight_sharing` and `target_modules` ride along in the hyper-parameters. A rank above what the
 * base model's runners allow for the target modules (runners/rank-limits.ts) is refused here,
 * before the job exists.
 */
import { Hono, type Context } from "hono";
import { z } from "zod";
import { BASE_MODEL_ID, fineTunedModelId, validateSuffix } from "../../../src/constants.ts";
import { badRequest, notFound } from "../../../src/errors.ts";
import type { ListPage } from "../../../src/protocol/list-page.ts";
import type { FineTuningCheckpoint, FineTuningJob, FineTuningJobEvent, JobEstimate } from "../../../src/protocol/platform-objects.ts";
import { canonicalModules, LINEAR_MODULES, rankRefusal } from "../../../src/protocol/adapter-rank.ts";
import { hyperparametersSchema, requestedRank, type Hyperparameters } from "../../../src/protocol/runner.ts";
import { jsonBody } from "../../../src/request-body.ts";
import { randomId } from "../auth/keys.ts";
import { requireKey } from "../auth/middleware.ts";
import { database } from "../db/client.ts";
import { createJob, findTenantJob, listTenantJobs, type JobRow } from "../db/queries/fine-tuning-jobs.ts";
import { findJobCheckpoint, findJobEvent, listJobCheckpoints, listJobEvents } from "../db/queries/job-results.ts";
import type { AppEnv } from "../env.ts";
import { estimateJob } from "../jobs/estimate.ts";
import { publicCheckpoint, publicEvent, publicJob } from "../jobs/job-object.ts";
import { finishJob } from "../jobs/job-outcomes.ts";
import { isTerminal } from "../jobs/job-status.ts";
import { cancelOnRunner, runnerUrl } from "../jobs/runner-client.ts";
import { listRunners } from "../db/queries/runners.ts";
import { modelRankCeiling } from "../runners/rank-limits.ts";
import { modelTrainingFigures } from "../runners/training-figures.ts";
import { healthyFromRows, reportedFromRows } from "../runners/registry.ts";
import type { TaskMessage } from "../queue/messages.ts";
import { fileOr404 } from "./files.ts";
import { cursorRow, listPage, listQuerySchema } from "./list-page.ts";
import { parse } from "./parse.ts";

/** The runner's default, stated on the job so its object says what will be trained (the rank: requestedRank). */
export const DEFAULT_WEIGHT_SHARING = true;

/** The body of `POST /v1/fine_tuning/jobs`. */
export const createJobSchema = z
  .object({
    model: z.string().min(1).max(200),
    training_file: z.string().min(1).max(200),
    validation_file: z.string().min(1).max(200).nullable().optional(),
    suffix: z.string().nullable().optional(),
    seed: z
      .int()
      .min(0)
      .max(2 ** 31 - 1)
      .nullable()
      .optional(),
    hyperparameters: hyperparametersSchema.optional(), // OpenAI's legacy place for them
    method: z
      .object({
        type: z.literal("supervised"),
        supervised: z.object({ hyperparameters: hyperparametersSchema.optional() }).strict().optional(),
      })
      .strict()
      .optional(),
  })
  .strict();

/** The queries of the job lists: pages of jobs, of one job's events, of its checkpoints. */
export const jobsQuerySchema = listQuerySchema("jobs");
export const jobEventsQuerySchema = listQuerySchema("events");
export const jobCheckpointsQuerySchema = listQuerySchema("checkpoints");

export const fineTuningJobRoutes = new Hono<AppEnv>();
fineTuningJobRoutes.use(requireKey("fine_tuning"));

/** A job request checked against the tenant's files and estimated: what creating it would store. */
async function planJob(c: Context<AppEnv>) {
  const body = parse(createJobSchema, await jsonBody(c));
  const tenantId = c.get("caller").tenantId;
  const baseModel = c.env.BASE_MODEL || BASE_MODEL_ID;
  if (body.model !== baseModel) {
    throw badRequest(`Model ${JSON.stringify(body.model)} is not available for fine-tuning; use '${baseModel}'.`, "model", "model_not_available");
  }
  if (body.hyperparameters !== undefined && body.method?.supervised?.hyperparameters !== undefined) {
    throw badRequest(
      "Give hyper-parameters in 'method.supervised.hyperparameters' or in the legacy 'hyperparameters', not both.",
      "hyperparameters",
      "invalid_value",
    );
  }
  const suffix = validateSuffix(body.suffix ?? "");
  const training = await fileOr404(c.env.DB, tenantId, body.training_file, "training_file");
  const validation = body.validation_file == null ? null : await fileOr404(c.env.DB, tenantId, body.validation_file, "validation_file");
  const requested: Hyperparameters = body.method?.supervised?.hyperparameters ?? body.hyperparameters ?? {};
  const paramPrefix = body.hyperparameters !== undefined ? "hyperparameters" : "method.supervised.hyperparameters";
  const targetModules = canonicalModules(requested.target_modules ?? LINEAR_MODULES);
  const rows = await listRunners(database(c.env.DB));
  const ceiling = modelRankCeiling(healthyFromRows(rows, c.env), reportedFromRows(rows), baseModel, targetModules);
  if (typeof requested.rank === "number") {
    const refusal = rankRefusal(requested.rank, ceiling, baseModel);
    if (refusal !== null) throw badRequest(`Invalid value for '${paramPrefix}.rank': ${refusal}.`, `${paramPrefix}.rank`, "invalid_value");
  }
  const estimate = estimateJob(training, requested, paramPrefix, { rate: modelTrainingFigures(rows, baseModel).rate, validationFile: validation !== null });
  return { body, tenantId, baseModel, suffix, training, validation, requested, targetModules, rank: requestedRank(requested.rank, ceiling.rank), estimate };
}

// The estimate a job would get, without creating it (the console shows it before launching).
fineTuningJobRoutes.post("/estimate", async (c) => {
  const { baseModel, training, requested, targetModules, rank, estimate } = await planJob(c);
  return c.json({
    object: "fine_tuning.job.estimate",
    model: baseModel,
    training_examples: training.examples,
    n_epochs: estimate.nEpochs,
    batch_size: estimate.batchSize,
    learning_rate_multiplier: estimate.learningRateMultiplier,
    rank,
    weight_sharing: requested.weight_sharing ?? DEFAULT_WEIGHT_SHARING,
    target_modules: targetModules,
    estimated_tokens: estimate.estimatedTokens,
    estimated_seconds: estimate.estimatedSeconds,
  } satisfies JobEstimate);
});

fineTuningJobRoutes.post("/", async (c) => {
  const { body, tenantId, baseModel, suffix, training, validation, requested, targetModules, rank, estimate } = await planJob(c);
  const id = randomId("ftjob-");
  const db = database(c.env.DB);
  const job = await createJob(
    db,
    {
      id,
      tenantId,
      model: baseModel,
      trainingFile: training.id,
      validationFile: validation?.id ?? null,
      suffix: body.suffix ?? null,
      seed: body.seed ?? crypto.getRandomValues(new Uint32Array(1))[0] >>> 1,
      hyperparameters: {
        n_epochs: requested.n_epochs ?? "auto",
        batch_size: requested.batch_size ?? "auto",
        learning_rate_multiplier: requested.learning_rate_multiplier ?? "auto",
        rank, // "auto" resolved here, so the job, the runner and the adapter say the same rank
        weight_sharing: requested.weight_sharing ?? DEFAULT_WEIGHT_SHARING,
        target_modules: targetModules,
      },
      status: "validating_files",
      fineTunedModel: fineTunedModelId({ base: baseModel, tenant: tenantId, suffix, jobId: id }),
      estimatedTokens: estimate.estimatedTokens,
      estimatedSeconds: estimate.estimatedSeconds,
    },
    {
      id: `${id}:edge:created`,
      level: "info",
      message: `Created fine-tuning job ${id}: about ${estimate.estimatedTokens} training tokens over ${estimate.nEpochs} epoch${estimate.nEpochs === 1 ? "" : "s"}, about ${estimate.estimatedSeconds} s`,
    },
  );
  try {
    await c.env.TASKS.send({ kind: "dispatch_job", jobId: id } satisfies TaskMessage);
  } catch (error) {
    // The job is stored: the cron sweep dispatches jobs still waiting a minute after creation.
    console.error(`dispatch of ${id} not queued (the sweep will send it): ${(error as Error).message}`);
  }
  return c.json(publicJob(job), 200);
});

fineTuningJobRoutes.get("/", async (c) => {
  const query = parse(jobsQuerySchema, c.req.query());
  const tenantId = c.get("caller").tenantId;
  const db = database(c.env.DB);
  const after = await cursorRow(query.after, "fine-tuning job", (id) => findTenantJob(db, tenantId, id));
  const rows = await listTenantJobs(db, tenantId, { limit: query.limit + 1, after });
  return c.json(listPage(rows.map(publicJob), query.limit) satisfies ListPage<FineTuningJob>);
});

fineTuningJobRoutes.get("/:id", async (c) => c.json(publicJob(await jobOr404(c.env.DB, c.get("caller").tenantId, c.req.param("id")))));

fineTuningJobRoutes.post("/:id/cancel", async (c) => {
  const job = await jobOr404(c.env.DB, c.get("caller").tenantId, c.req.param("id"));
  if (job.status === "cancelled") return c.json(publicJob(job));
  if (isTerminal(job.status)) throw badRequest(`Job ${job.id} has already ${job.status} and cannot be cancelled.`, "fine_tuning_job_id", "job_not_cancellable");
  const db = database(c.env.DB);
  const cancelled = await finishJob(c.env, job.id, "cancelled", { id: `${job.id}:edge:cancelled`, level: "info", message: "The job was cancelled" });
  if (cancelled?.status !== "cancelled") return c.json(publicJob(cancelled ?? job)); // finished meanwhile
  if (job.runnerId !== null) {
    const url = await runnerUrl(db, job.runnerId);
    // The job is cancelled here whatever the runner says; a runner that missed this stops at
    // the latest when its callbacks are refused.
    if (url !== null)
      await cancelOnRunner(url, c.env.RUNNER_SECRET, job.id).catch((error: Error) => console.error(`cancel of ${job.id} on ${url}: ${error.message}`));
  }
  return c.json(publicJob(cancelled));
});

fineTuningJobRoutes.get("/:id/events", async (c) => {
  const job = await jobOr404(c.env.DB, c.get("caller").tenantId, c.req.param("id"));
  const query = parse(jobEventsQuerySchema, c.req.query());
  const db = database(c.env.DB);
  const after = await cursorRow(query.after, `event of job ${job.id}`, (id) => findJobEvent(db, job.id, id));
  const rows = await listJobEvents(db, job.id, { limit: query.limit + 1, afterSequence: after?.sequence ?? null });
  return c.json(listPage(rows.map(publicEvent), query.limit) satisfies ListPage<FineTuningJobEvent>);
});

// The checkpoints the job keeps (see jobs/checkpoint-retention.ts), newest step first.
fineTuningJobRoutes.get("/:id/checkpoints", async (c) => {
  const job = await jobOr404(c.env.DB, c.get("caller").tenantId, c.req.param("id"));
  const query = parse(jobCheckpointsQuerySchema, c.req.query());
  const db = database(c.env.DB);
  const after = await cursorRow(query.after, `checkpoint of job ${job.id}`, (id) => findJobCheckpoint(db, job.id, id));
  const rows = await listJobCheckpoints(db, job.id, { limit: query.limit + 1, afterStep: after?.step ?? null });
  return c.json(listPage(rows.map(publicCheckpoint), query.limit) satisfies ListPage<FineTuningCheckpoint>);
});

/** The tenant's job, or a 404 (another tenant's job is as unknown as a missing one). */
async function jobOr404(d1: D1Database, tenantId: string, id: string): Promise<JobRow> {
  const row = await findTenantJob(database(d1), tenantId, id);
  if (row === null) throw notFound(`No fine-tuning job ${id}.`, "fine_tuning_job_id", "fine_tuning_job_not_found");
  return row;
}
