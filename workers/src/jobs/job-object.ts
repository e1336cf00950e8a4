/** Jobs, their events and checkpoints as OpenAI's fine-tuning API shows them. */
import { LINEAR_MODULES } from "../../../src/protocol/adapter-rank.ts";
import type { FineTuningCheckpoint, FineTuningJob, FineTuningJobEvent } from "../../../src/protocol/platform-objects.ts";
import type { JobRow } from "../db/queries/fine-tuning-jobs.ts";
import type { CheckpointRow, EventRow } from "../db/queries/job-results.ts";

// The text and JSON columns below hold only what the edge wrote with the protocol's own types
// (routes/fine-tuning-jobs.ts, job-status.ts, the runner's parsed events); D1 types them loosely.
/** A job as `GET /v1/fine_tuning/jobs/{id}` returns it. */
export function publicJob(row: JobRow): FineTuningJob {
  const hyperparameters = row.hyperparameters as FineTuningJob["method"]["supervised"]["hyperparameters"];
  return {
    object: "fine_tuning.job" as const,
    id: row.id,
    model: row.model,
    created_at: row.createdAt,
    finished_at: row.finishedAt,
    // OpenAI names the model only once it exists.
    fine_tuned_model: row.status === "succeeded" ? row.fineTunedModel : null,
    organization_id: row.tenantId,
    result_files: [] as string[],
    status: row.status as FineTuningJob["status"],
    validation_file: row.validationFile,
    training_file: row.trainingFile,
    hyperparameters: {
      n_epochs: hyperparameters.n_epochs,
      batch_size: hyperparameters.batch_size,
      learning_rate_multiplier: hyperparameters.learning_rate_multiplier,
    },
    // Jobs created before target modules were selectable trained every module.
    method: {
      type: "supervised" as const,
      supervised: { hyperparameters: { ...hyperparameters, target_modules: hyperparameters.target_modules ?? [...LINEAR_MODULES] } },
    },
    trained_tokens: row.trainedTokens,
    error: row.error,
    seed: row.seed,
    user_provided_suffix: row.suffix,
    estimated_finish:
      row.startedAt !== null && row.finishedAt === null && row.estimatedSeconds !== null ? Math.round(row.startedAt + row.estimatedSeconds) : null,
    estimated_tokens: row.estimatedTokens,
    estimated_seconds: row.estimatedSeconds,
    integrations: [] as unknown[],
    metadata: null,
  };
}

/** An event as `GET /v1/fine_tuning/jobs/{id}/events` returns it. */
export function publicEvent(row: EventRow): FineTuningJobEvent {
  return {
    object: "fine_tuning.job.event" as const,
    id: row.id,
    created_at: row.createdAt,
    level: row.level as FineTuningJobEvent["level"],
    type: row.type as FineTuningJobEvent["type"],
    message: row.message,
    data: row.data,
  };
}

/** A checkpoint as `GET /v1/fine_tuning/jobs/{id}/checkpoints` returns it. */
export function publicCheckpoint(row: CheckpointRow): FineTuningCheckpoint {
  return {
    object: "fine_tuning.job.checkpoint" as const,
    id: row.id,
    created_at: row.createdAt,
    fine_tuned_model_checkpoint: row.adapterId,
    fine_tuning_job_id: row.jobId,
    metrics: row.metrics,
    step_number: row.step,
  };
}
