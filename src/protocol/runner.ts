// The runner's internal API, spoken between the edge and a runner with the shared runner secret:
// training job submissions, the job state a runner reports, and the events it posts back to the
// job's callback. The edge builds requests with these schemas; the runner parses them.
import { z } from "zod";
import { fromZodError } from "../errors.ts";
import { PICA_MAX_RANK, targetModulesSchema } from "./adapter-rank.ts";

/** Job ids and adapter ids as the runner accepts them. */
export const JOB_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
const ADAPTER_ID_PATTERN = /^[A-Za-z0-9:._/-]{1,200}$/;

/**
 * Every route of a runner that has a secret (public ones included) needs it in this header as
 * `Bearer <secret>`; the runner sends it the same way on its callbacks and heartbeats to the edge.
 */
export const RUNNER_AUTH_HEADER = "authorization";
export const RUNNER_AUTH_SCHEME = "Bearer";
/** The `error.code` of a request refused for a missing or wrong runner secret. */
export const INVALID_RUNNER_SECRET_CODE = "invalid_runner_secret";

/** The headers that carry the runner secret. */
export function runnerAuthorization(secret: string): Record<string, string> {
  return { [RUNNER_AUTH_HEADER]: `${RUNNER_AUTH_SCHEME} ${secret}` };
}

/** The header of a blob's SHA-256 (64 hex digits), both ways. */
export const CONTENT_SHA256_HEADER = "x-content-sha256";

/**
 * A runner's routes. Path builders take an id already encoded for a URL (`encodeURIComponent`);
 * the runner registers the same builders with Hono's `:id` parameters.
 */
export const RUNNER_PATHS = {
  chatCompletions: "/v1/chat/completions",
  completions: "/v1/completions",
  models: "/v1/models",
  health: "/health",
  metrics: "/metrics",
  /** The control plane's routes; everything under it is internal. */
  internal: "/internal",
  adapters: "/internal/adapters",
  adapter: <Id extends string>(id: Id) => `/internal/adapters/${id}` as const,
  jobs: "/internal/jobs",
  job: <Id extends string>(id: Id) => `/internal/jobs/${id}` as const,
  cancelJob: <Id extends string>(id: Id) => `/internal/jobs/${id}/cancel` as const,
  jobAdapter: <Id extends string>(id: Id) => `/internal/jobs/${id}/adapter` as const,
} as const;

const auto = <Schema extends z.ZodType>(schema: Schema) => z.union([z.literal("auto"), schema]).optional();

/**
 * The PiCa rank of a fine-tuning job that names none (or "auto"), wherever the job is read (edge,
 * runner, trainer): the smallest rank of PiCa shared whose validation loss, over the sweep's four
 * tasks at each rank's best rate, was within 5% of the best rank's (README, Quality): r=32 at 0.406
 * (r=64 best at 0.391, r=8 0.471). 78k numbers (311 KB) an adapter on the shipped model.
 */
export const DEFAULT_ADAPTER_RANK = 32;
/**
 * The largest rank a job or import may ask for anywhere; a model's own ceiling (adapter-rank.ts:
 * min(out, in) of the targeted weights, the rows of the runner's basis) may be lower.
 */
export const MAX_ADAPTER_RANK = PICA_MAX_RANK;

/**
 * The rank a job trains when it asks for `rank` (a number, "auto" or nothing): "auto" is
 * DEFAULT_ADAPTER_RANK, or the model's ceiling where that is lower (a small model's k and v may
 * allow less); a number is taken as asked (and refused elsewhere if above the ceiling).
 */
export function requestedRank(rank: number | "auto" | undefined, ceiling = Number.POSITIVE_INFINITY): number {
  return rank === undefined || rank === "auto" ? Math.min(DEFAULT_ADAPTER_RANK, ceiling) : rank;
}

/** Fine-tuning hyper-parameters: a number in range or "auto" (resolved by the trainer's rules). */
export const hyperparametersSchema = z
  .object({
    n_epochs: auto(z.int().min(1).max(50)),
    batch_size: auto(z.int().min(1).max(256)),
    learning_rate_multiplier: auto(z.number().gt(0).max(10)),
    rank: auto(z.int().min(1).max(MAX_ADAPTER_RANK)),
    weight_sharing: z.boolean().optional(),
    target_modules: targetModulesSchema.optional(),
  })
  .strict();
export type Hyperparameters = z.infer<typeof hyperparametersSchema>;

/** Where a job's JSONL comes from: a URL the runner downloads, or the text itself. */
export const dataSourceSchema = z.union([z.object({ url: z.url({ protocol: /^https?$/ }) }).strict(), z.object({ content: z.string().min(1) }).strict()]);
export type DataSource = z.infer<typeof dataSourceSchema>;

/** `POST /internal/jobs`. */
export const trainingJobRequestSchema = z
  .object({
    id: z.string().regex(JOB_ID_PATTERN, "must be 1-64 characters of A-Z a-z 0-9 _ -"),
    training_file: dataSourceSchema,
    validation_file: dataSourceSchema.optional(),
    method: z.enum(["pica"]).default("pica"),
    hyperparameters: hyperparametersSchema.default({}),
    seed: z
      .int()
      .min(0)
      .max(2 ** 31 - 1)
      .default(0),
    /** Where the finished adapter is served on this runner; absent: only reported back. */
    adapter_id: z.string().regex(ADAPTER_ID_PATTERN, "must be 1-200 characters of A-Z a-z 0-9 : . _ / -").optional(),
    /** Base URL of the job's callbacks (see CALLBACK_PATHS); absent: the job is only polled. */
    callback_url: z.url({ protocol: /^https?$/ }).optional(),
    /** Optimiser steps between checkpoints. */
    checkpoint_every: z.int().min(1).max(100_000).default(10),
    /** Who the control plane gave the job to; sent back on every callback (PLACEMENT_HEADER). */
    placement: z.string().min(1).max(200).optional(),
    /** Trainer state to resume from (a checkpoint of the job made on another runner). */
    resume_state: z
      .object({ url: z.url({ protocol: /^https?$/ }), trained_tokens: z.int().min(0).default(0) })
      .strict()
      .optional(),
  })
  .strict();
export type TrainingJobRequest = z.output<typeof trainingJobRequestSchema>;

/** Parses a job submission; throws ApiError 400 naming the first bad field. */
export function parseTrainingJobRequest(body: unknown): TrainingJobRequest {
  const result = trainingJobRequestSchema.safeParse(body, { reportInput: true });
  if (!result.success) throw fromZodError(result.error);
  return result.data;
}

/** A job's states on a runner; `queued` also covers a job waiting to resume after a restart. */
export const jobStatusSchema = z.enum(["queued", "running", "succeeded", "failed", "cancelled"]);
export type JobStatus = z.infer<typeof jobStatusSchema>;

export const TERMINAL_JOB_STATUSES: readonly JobStatus[] = ["succeeded", "failed", "cancelled"];

/** What `GET /internal/jobs/{id}` answers. */
export const runnerJobSchema = z.object({
  id: z.string(),
  object: z.literal("runner.job"),
  status: jobStatusSchema,
  created_at: z.int(),
  started_at: z.int().nullable(),
  finished_at: z.int().nullable(),
  step: z.int(),
  total_steps: z.int().nullable(),
  epoch: z.int().nullable(),
  train_loss: z.number().nullable(),
  validation_loss: z.number().nullable(),
  validation_token_accuracy: z.number().nullable(),
  trained_tokens: z.int(),
  eta_seconds: z.number().nullable(),
  resumed_from_step: z.int().nullable(),
  hyperparameters: z.record(z.string(), z.unknown()).nullable(),
  adapter_id: z.string().nullable(),
  adapter_sha256: z.string().nullable(),
  error: z.object({ code: z.string(), message: z.string() }).nullable(),
});
export type RunnerJob = z.infer<typeof runnerJobSchema>;

/**
 * One event a runner posts about a job. `id` is deterministic (`{job}:{kind}:{n}`), so an event
 * re-sent after a retry or a resumed run replaces the first copy instead of duplicating it.
 */
export const jobEventSchema = z.object({
  id: z.string(),
  job_id: z.string(),
  created_at: z.int(),
  level: z.enum(["info", "warn", "error"]),
  type: z.enum(["status", "message", "metrics", "checkpoint"]),
  message: z.string(),
  data: z.record(z.string(), z.unknown()).nullable(),
});
export type JobEvent = z.infer<typeof jobEventSchema>;

/**
 * Callback paths under a job's `callback_url`, all sent with the runner secret as a bearer token:
 * events are JSON `{events: JobEvent[]}`; blobs are adapter safetensors with their sha256 in
 * `x-content-sha256`. A checkpoint's `state` is the trainer state another runner resumes from.
 */
/**
 * Every callback carries the job's `placement` in this header. Once the control plane has moved
 * a job to another runner, the old runner's callbacks are refused with 409 and the code
 * JOB_MOVED_CODE, and the old runner drops the job.
 */
export const PLACEMENT_HEADER = "x-pica-placement";
export const JOB_MOVED_CODE = "job_moved";

export const CALLBACK_PATHS = {
  events: "/events",
  checkpoint: <Step extends number | string>(step: Step) => `/checkpoints/${step}` as const,
  state: "/state",
  adapter: "/adapter",
} as const;

/**
 * The edge's routes that runners call, with the runner secret: a job's data files, adapter blobs
 * (their sha256 in CONTENT_SHA256_HEADER), each job's callbacks (its `callback_url`, with
 * CALLBACK_PATHS beneath) and the runner registry (HEARTBEAT_PATH in heartbeat.ts). Path builders
 * take an id already encoded for a URL; the edge registers the same builders with `:id`.
 */
export const EDGE_PATHS = {
  files: "/internal/files",
  fileContent: <Id extends string>(id: Id) => `/internal/files/${id}/content` as const,
  adapters: "/internal/adapters",
  adapterBlob: <Id extends string>(id: Id) => `/internal/adapters/${id}/blob` as const,
  jobs: "/internal/jobs",
  jobCallbacks: <Id extends string>(id: Id) => `/internal/jobs/${id}` as const,
  runners: "/internal/runners",
} as const;

/** `path` as a sub-app mounted at `base` sees it, so both ends register the protocol's own paths. */
export function pathUnder<Base extends string, Path extends string>(base: Base, path: `${Base}${Path}`): Path {
  return path.slice(base.length) as Path;
}

/**
 * PEFT interop, done by a runner because the projection needs the basis.
 *
 * `POST /internal/adapters/import-peft`: multipart/form-data with the parts `adapter_config`
 * (PEFT's adapter_config.json) and `adapter_model` (adapter_model.safetensors), optionally `rank`
 * and `sharing` (PEFT_IMPORT_OPTIONS). Answers 200 with the PiCa adapter's safetensors bytes as
 * the body, their sha256 in `x-content-sha256`, and the projection report (peftImportReportSchema)
 * as JSON in the PEFT_IMPORT_REPORT_HEADER. A LoRA adapter PiCa cannot represent is a 400.
 *
 * `POST /internal/adapters/export-peft`: the body is a PiCa adapter's safetensors bytes. Answers
 * 200 with multipart/form-data: `adapter_config` (adapter_config.json) and `adapter_model`
 * (adapter_model.safetensors), the same parts the import takes, so an export re-imports as is.
 */
export const PEFT_PATHS = { import: "/internal/adapters/import-peft", export: "/internal/adapters/export-peft" } as const;

/** The multipart part names of both PEFT routes (the files PEFT writes, without extensions). */
export const PEFT_PARTS = { config: "adapter_config", model: "adapter_model" } as const;

/** The header that carries an import's projection report. */
export const PEFT_IMPORT_REPORT_HEADER = "x-pica-import-report";

/** Optional form fields of an import: the PiCa rank (default: the runner's `--rank`) and sharing. */
export const peftImportOptionsSchema = z.object({
  rank: z.coerce.number().pipe(z.int().min(1).max(MAX_ADAPTER_RANK)).optional(),
  sharing: z.enum(["shared", "per_layer"]).default("shared"),
});
export type PeftImportOptions = z.output<typeof peftImportOptionsSchema>;

/**
 * How well a LoRA adapter survived the projection: per module, ‖ΔW − M P‖ / ‖ΔW‖ over all layers
 * (0 exact, 1 nothing kept), and the worst of them.
 */
export const peftImportReportSchema = z.object({
  rank: z.int(),
  sharing: z.enum(["shared", "per_layer"]),
  basis_id: z.string(),
  lora_r: z.int().nullable(),
  lora_alpha: z.number().nullable(),
  base_model_name_or_path: z.string().nullable(),
  projection_error: z.record(z.string(), z.number()),
  max_projection_error: z.number(),
});
export type PeftImportReport = z.infer<typeof peftImportReportSchema>;
