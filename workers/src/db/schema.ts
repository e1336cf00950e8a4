/**
 * The control plane's D1 tables (drizzle). Every tenant-owned row carries `tenant_id`, and every
 * query of one goes through a function that takes the tenant (workers/src/db/queries). Times are
 * Unix seconds, as OpenAI's API reports them; JSON columns hold objects the API returns as is.
 */
import { sql } from "drizzle-orm";
import { index, integer, real, sqliteTable, text, uniqueIndex } from "drizzle-orm/sqlite-core";
import type { RankLimitsBody } from "../../../src/protocol/adapter-rank.ts";
import type { TrainingFigures } from "../../../src/protocol/training-figures.ts";
import type { FineTuningCheckpoint } from "../../../src/protocol/platform-objects.ts";

const createdAt = () => integer("created_at").notNull().default(sql`(unixepoch())`);

export const tenants = sqliteTable("tenants", {
  id: text("id").primaryKey(), // "tenant_…", also the tenant part of fine-tuned model ids
  name: text("name").notNull(),
  requestsPerMinute: integer("requests_per_minute").notNull().default(600),
  concurrentStreams: integer("concurrent_streams").notNull().default(16),
  createdAt: createdAt(),
});

export const apiKeys = sqliteTable(
  "api_keys",
  {
    id: text("id").primaryKey(), // "key_…"
    tenantId: text("tenant_id")
      .notNull()
      .references(() => tenants.id),
    name: text("name").notNull(),
    prefix: text("prefix").notNull(), // shown to people: "sk-pica-AbCd…"
    hash: text("hash").notNull(), // SHA-256 of the whole key, hex; the key itself is never stored
    scopes: text("scopes", { mode: "json" }).$type<string[]>().notNull(),
    createdAt: createdAt(),
    lastUsedAt: integer("last_used_at"),
    revokedAt: integer("revoked_at"),
  },
  (t) => [uniqueIndex("api_keys_hash").on(t.hash), index("api_keys_tenant").on(t.tenantId)],
);

export const files = sqliteTable(
  "files",
  {
    id: text("id").primaryKey(), // "file-…"
    tenantId: text("tenant_id")
      .notNull()
      .references(() => tenants.id),
    purpose: text("purpose").notNull(),
    filename: text("filename").notNull(),
    bytes: integer("bytes").notNull(),
    examples: integer("examples").notNull(),
    estimatedTokens: integer("estimated_tokens").notNull(),
    blobKey: text("blob_key").notNull(), // R2
    status: text("status").notNull().default("processed"),
    createdAt: createdAt(),
  },
  (t) => [index("files_tenant").on(t.tenantId, t.createdAt)],
);

export const adapters = sqliteTable(
  "adapters",
  {
    id: text("id").primaryKey(), // the model id: "ft:{base}:{tenant}:{suffix}:{job}" or an import's
    tenantId: text("tenant_id")
      .notNull()
      .references(() => tenants.id),
    baseModel: text("base_model").notNull(),
    basisId: text("basis_id"),
    rank: integer("rank"),
    sharing: text("sharing"),
    status: text("status").notNull().default("ready"), // "ready", or "deleted": retired, its blob awaiting the sweep
    blobKey: text("blob_key").notNull(), // R2
    sha256: text("sha256").notNull(),
    bytes: integer("bytes").notNull(),
    sourceJobId: text("source_job_id"),
    source: text("source").notNull(), // "fine_tune" | "checkpoint" | "peft_import"
    importReport: text("import_report", { mode: "json" }).$type<Record<string, unknown>>(),
    createdAt: createdAt(),
  },
  (t) => [
    index("adapters_tenant").on(t.tenantId, t.createdAt),
    // Only retired rows: what the cron sweep reads every minute.
    index("adapters_retired").on(t.createdAt).where(sql`status = 'deleted'`),
  ],
);

export const fineTuningJobs = sqliteTable(
  "fine_tuning_jobs",
  {
    id: text("id").primaryKey(), // "ftjob-…"
    tenantId: text("tenant_id")
      .notNull()
      .references(() => tenants.id),
    model: text("model").notNull(),
    trainingFile: text("training_file").notNull(),
    validationFile: text("validation_file"),
    suffix: text("suffix"),
    seed: integer("seed").notNull(),
    hyperparameters: text("hyperparameters", { mode: "json" }).$type<Record<string, unknown>>().notNull(),
    status: text("status").notNull(), // validating_files → queued → running → succeeded | failed | cancelled
    runnerId: text("runner_id"),
    fineTunedModel: text("fine_tuned_model"),
    trainedTokens: integer("trained_tokens"),
    estimatedTokens: integer("estimated_tokens"),
    estimatedSeconds: real("estimated_seconds"),
    error: text("error", { mode: "json" }).$type<{ code: string; message: string; param: string | null }>(),
    stateKey: text("state_key"), // R2: the trainer state another runner resumes from
    createdAt: createdAt(),
    startedAt: integer("started_at"),
    finishedAt: integer("finished_at"),
  },
  (t) => [index("jobs_tenant").on(t.tenantId, t.createdAt)],
);

export const jobEvents = sqliteTable(
  "job_events",
  {
    sequence: integer("sequence").primaryKey({ autoIncrement: true }), // cursor order
    id: text("id").notNull(), // the runner's stable event id, or one of ours
    jobId: text("job_id")
      .notNull()
      .references(() => fineTuningJobs.id),
    tenantId: text("tenant_id").notNull(),
    level: text("level").notNull(),
    type: text("type").notNull(),
    message: text("message").notNull(),
    data: text("data", { mode: "json" }).$type<Record<string, unknown> | null>(),
    createdAt: createdAt(),
  },
  (t) => [uniqueIndex("job_events_id").on(t.id), index("job_events_job").on(t.jobId, t.sequence)],
);

export const checkpoints = sqliteTable(
  "checkpoints",
  {
    id: text("id").primaryKey(), // "ftckpt-…"
    jobId: text("job_id")
      .notNull()
      .references(() => fineTuningJobs.id),
    tenantId: text("tenant_id").notNull(),
    step: integer("step").notNull(),
    metrics: text("metrics", { mode: "json" }).$type<FineTuningCheckpoint["metrics"]>().notNull(),
    adapterId: text("adapter_id").notNull(), // "{fine-tuned id}:ckpt-step-{n}"
    createdAt: createdAt(),
  },
  (t) => [uniqueIndex("checkpoints_job_step").on(t.jobId, t.step)],
);

export const usage = sqliteTable(
  "usage",
  {
    id: integer("id").primaryKey({ autoIncrement: true }),
    tenantId: text("tenant_id").notNull(),
    model: text("model").notNull(),
    requestId: text("request_id").notNull(),
    promptTokens: integer("prompt_tokens").notNull(),
    completionTokens: integer("completion_tokens").notNull(),
    createdAt: createdAt(),
  },
  (t) => [index("usage_tenant").on(t.tenantId, t.createdAt)],
);

export const runners = sqliteTable("runners", {
  id: text("id").primaryKey(),
  url: text("url").notNull(),
  baseModel: text("base_model").notNull(),
  basisId: text("basis_id").notNull(),
  // The smaller bases its basis extends (adapters trained against them are served by it too).
  compatibleBasisIds: text("compatible_basis_ids", { mode: "json" }).$type<string[]>(),
  running: integer("running").notNull().default(0),
  waiting: integer("waiting").notNull().default(0),
  residentAdapters: integer("resident_adapters").notNull().default(0),
  failures: integer("failures").notNull().default(0), // consecutive failed forwards
  lastFailureAt: integer("last_failure_at"), // when the latest of them happened
  lastHeartbeat: integer("last_heartbeat").notNull(),
  // What bounds the ranks it trains and serves (its model's linear shapes, its basis's rows), as
  // its heartbeat reports them; null: not reported (listed, or an older runner).
  rankLimits: text("rank_limits", { mode: "json" }).$type<RankLimitsBody>(),
  // Its tokenizer's template tokens and its measured training rate, for estimates; null: not reported.
  trainingFigures: text("training_figures", { mode: "json" }).$type<TrainingFigures>(),
});

export const webhooks = sqliteTable(
  "webhooks",
  {
    id: text("id").primaryKey(), // "wh_…"
    tenantId: text("tenant_id")
      .notNull()
      .references(() => tenants.id),
    url: text("url").notNull(),
    secret: text("secret").notNull(), // "whsec_…" (Standard Webhooks); shown once at creation
    events: text("events", { mode: "json" }).$type<string[]>().notNull(),
    createdAt: createdAt(),
    disabledAt: integer("disabled_at"),
  },
  (t) => [index("webhooks_tenant").on(t.tenantId)],
);

export const webhookDeliveries = sqliteTable(
  "webhook_deliveries",
  {
    id: text("id").primaryKey(), // "msg_…", sent as `webhook-id`: the same on every retry
    tenantId: text("tenant_id").notNull(),
    webhookId: text("webhook_id")
      .notNull()
      .references(() => webhooks.id, { onDelete: "cascade" }),
    eventType: text("event_type").notNull(),
    payload: text("payload").notNull(), // the exact JSON body, so every retry signs the same bytes
    status: text("status").notNull().default("pending"), // pending → delivered | failed
    attempts: integer("attempts").notNull().default(0),
    lastStatus: integer("last_status"), // HTTP status of the last attempt; null: network error
    lastError: text("last_error"),
    createdAt: createdAt(),
    deliveredAt: integer("delivered_at"),
  },
  (t) => [index("webhook_deliveries_webhook").on(t.webhookId, t.createdAt)],
);
