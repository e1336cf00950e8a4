/**
 * The objects the edge's files, fine-tuning, adapter, key and usage routes answer (inference's
 * are in openai.ts): one contract for the edge, the typed client, the CLI and the OpenAPI
 * document. Shapes are OpenAI's where OpenAI has the object.
 */
import { z } from "zod";
import { modelObjectSchema } from "./openai.ts";
import { listPageSchema } from "./list-page.ts";
import { LINEAR_MODULES } from "./adapter-rank.ts";

const auto = <Schema extends z.ZodType>(schema: Schema) => z.union([schema, z.literal("auto")]);

/** A training file (`/v1/files`). */
export const fileObjectSchema = z.object({
  id: z.string(),
  object: z.literal("file"),
  bytes: z.int(),
  created_at: z.int(),
  expires_at: z.null(),
  filename: z.string(),
  purpose: z.string(),
  status: z.string(),
  status_details: z.null(),
});
export type FileObject = z.infer<typeof fileObjectSchema>;

/** A job's status; it only moves forward, to one of the last three. */
export const fineTuningJobStatusSchema = z.enum(["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]);

/** The modules an adapter adapts, as jobs and estimates show them (canonical order). */
const targetModulesObjectSchema = z.array(z.enum(LINEAR_MODULES)).describe("the linear modules the adapter adapts");

/** A fine-tuning job (`/v1/fine_tuning/jobs`); PiCa's rank, weight sharing and target modules are in the method's hyper-parameters. */
export const fineTuningJobSchema = z.object({
  object: z.literal("fine_tuning.job"),
  id: z.string(),
  model: z.string(),
  created_at: z.int(),
  finished_at: z.int().nullable(),
  fine_tuned_model: z.string().nullable().describe("the adapter id, once the job succeeded"),
  organization_id: z.string(),
  result_files: z.array(z.string()),
  status: fineTuningJobStatusSchema,
  validation_file: z.string().nullable(),
  training_file: z.string(),
  hyperparameters: z.object({ n_epochs: auto(z.int()), batch_size: auto(z.int()), learning_rate_multiplier: auto(z.number()) }),
  method: z.object({
    type: z.literal("supervised"),
    supervised: z.object({
      hyperparameters: z.object({
        n_epochs: auto(z.int()),
        batch_size: auto(z.int()),
        learning_rate_multiplier: auto(z.number()),
        rank: auto(z.int()),
        weight_sharing: z.boolean(),
        target_modules: targetModulesObjectSchema,
      }),
    }),
  }),
  trained_tokens: z.int().nullable(),
  error: z.object({ code: z.string(), message: z.string(), param: z.string().nullable() }).nullable(),
  seed: z.int(),
  user_provided_suffix: z.string().nullable(),
  estimated_finish: z.int().nullable(),
  estimated_tokens: z.int().nullable(),
  estimated_seconds: z.number().nullable(),
  integrations: z.array(z.unknown()),
  metadata: z.null(),
});
export type FineTuningJob = z.infer<typeof fineTuningJobSchema>;

/** `POST /v1/fine_tuning/jobs/estimate`: what a job request would train and take, resolved as creating it would. */
export const jobEstimateSchema = z.object({
  object: z.literal("fine_tuning.job.estimate"),
  model: z.string(),
  training_examples: z.int(),
  n_epochs: z.int(),
  batch_size: z.int(),
  learning_rate_multiplier: z.number(),
  rank: z.int(),
  weight_sharing: z.boolean(),
  target_modules: targetModulesObjectSchema,
  estimated_tokens: z.int(),
  estimated_seconds: z.number(),
});
export type JobEstimate = z.infer<typeof jobEstimateSchema>;

/** One event of a job (`/v1/fine_tuning/jobs/{id}/events`). */
export const fineTuningJobEventSchema = z.object({
  object: z.literal("fine_tuning.job.event"),
  id: z.string(),
  created_at: z.int(),
  level: z.enum(["info", "warn", "error"]),
  type: z.enum(["status", "message", "metrics", "checkpoint"]),
  message: z.string(),
  data: z.record(z.string(), z.unknown()).nullable(),
});
export type FineTuningJobEvent = z.infer<typeof fineTuningJobEventSchema>;

/** One checkpoint of a job (`/v1/fine_tuning/jobs/{id}/checkpoints`): an adapter usable as `model`. */
export const fineTuningCheckpointSchema = z.object({
  object: z.literal("fine_tuning.job.checkpoint"),
  id: z.string(),
  created_at: z.int(),
  fine_tuned_model_checkpoint: z.string().describe("the checkpoint's adapter id: {fine-tuned model}:ckpt-step-{n}"),
  fine_tuning_job_id: z.string(),
  metrics: z.object({ step: z.int(), train_loss: z.number().nullable(), learning_rate: z.number().nullable() }).loose(),
  step_number: z.int(),
});
export type FineTuningCheckpoint = z.infer<typeof fineTuningCheckpointSchema>;

/** An adapter (`/v1/adapters`): a fine-tuned model, a checkpoint of one, or an imported PEFT adapter. */
export const adapterObjectSchema = z.object({
  id: z.string(),
  object: z.literal("adapter"),
  created_at: z.int(),
  base_model: z.string(),
  basis_id: z.string().nullable(),
  rank: z.int().nullable(),
  weight_sharing: z.boolean().nullable(),
  status: z.string(),
  bytes: z.int(),
  sha256: z.string(),
  source: z.enum(["fine_tune", "checkpoint", "peft_import"]),
  fine_tuning_job_id: z.string().nullable(),
  import_report: z.record(z.string(), z.unknown()).nullable(),
});
export type AdapterObject = z.infer<typeof adapterObjectSchema>;

/** An API key as listed: its display prefix, never its secret. */
export const apiKeyObjectSchema = z.object({
  id: z.string(),
  object: z.literal("api_key"),
  name: z.string(),
  prefix: z.string(),
  scopes: z.array(z.string()),
  created_at: z.int(),
  last_used_at: z.int().nullable(),
  revoked_at: z.int().nullable(),
});
export type ApiKeyObject = z.infer<typeof apiKeyObjectSchema>;

/** A key as issued (`POST /v1/api_keys`): the listed fields and the secret, which no other response shows. */
export const issuedApiKeySchema = apiKeyObjectSchema.extend({ key: z.string().describe("sk-pica-…: shown only in this response") });
export type IssuedApiKey = z.infer<typeof issuedApiKeySchema>;

/** What a delete answers: the id of the deleted `object` kind. */
export function deletedObjectSchema<Kind extends string>(object: Kind) {
  return z.object({ id: z.string(), object: z.literal(object), deleted: z.literal(true) });
}
export const fileDeletedSchema = deletedObjectSchema("file");
export const adapterDeletedSchema = deletedObjectSchema("adapter");

/** The page each list answers (src/protocol/list-page.ts). */
export const modelPageSchema = listPageSchema(modelObjectSchema);
export const filePageSchema = listPageSchema(fileObjectSchema);
export const fineTuningJobPageSchema = listPageSchema(fineTuningJobSchema);
export const fineTuningJobEventPageSchema = listPageSchema(fineTuningJobEventSchema);
export const fineTuningCheckpointPageSchema = listPageSchema(fineTuningCheckpointSchema);
export const adapterPageSchema = listPageSchema(adapterObjectSchema);
export const apiKeyPageSchema = listPageSchema(apiKeyObjectSchema);

const usageResultSchema = z.object({
  num_model_requests: z.int(),
  input_tokens: z.int(),
  output_tokens: z.int(),
  total_tokens: z.int(),
});

/**
 * `GET /v1/usage`: totals and per-model sums over the whole window; `data` holds one page of
 * per-day buckets (OpenAI's usage paging: `limit` buckets, `next_page` for the `page` of the next).
 */
export const usageReportSchema = z.object({
  object: z.literal("usage"),
  start_time: z.int(),
  end_time: z.int(),
  totals: usageResultSchema,
  models: z.array(usageResultSchema.extend({ model: z.string() })),
  data: z.array(
    z.object({
      object: z.literal("bucket"),
      start_time: z.int(),
      end_time: z.int(),
      results: z.array(usageResultSchema.extend({ model: z.string() })),
    }),
  ),
  has_more: z.boolean(),
  next_page: z.string().nullable().describe("the `page` of the next buckets; null on the last page"),
});
export type UsageReport = z.infer<typeof usageReportSchema>;
