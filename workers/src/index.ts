/**
 * The edge worker: wires the error handler, CORS and body limits, and one sub-app per resource;
 * exports the queue consumer, the cron sweep and the rate-limiter Durable Object. Nothing else
 * lives here.
 */
import { Hono } from "hono";
import { HTTPException } from "hono/http-exception";
import { ApiError, notFound, serverError } from "../../src/errors.ts";
import { CONSOLE_PATHS } from "../../src/protocol/console.ts";
import { EDGE_PATHS } from "../../src/protocol/runner.ts";
import type { AppEnv } from "./env.ts";
import { limitBodies, publicCors, requestIds } from "./http/policy.ts";
import { sweep } from "./jobs/sweeper.ts";
import { consumeTasks } from "./queue/consumer.ts";
import { guardedStorage, isStorageFailure, storageUnavailable } from "./storage/storage-errors.ts";
import type { TaskMessage } from "./queue/messages.ts";
import { adapterTransferRoutes } from "./routes/adapter-transfer.ts";
import { adapterRoutes } from "./routes/adapters.ts";
import { adminRoutes } from "./routes/admin.ts";
import { consoleRoutes } from "./routes/console.ts";
import { docsRoutes } from "./routes/docs.ts";
import { fileRoutes } from "./routes/files.ts";
import { fineTuningJobRoutes } from "./routes/fine-tuning-jobs.ts";
import { inferenceRoutes } from "./routes/inference.ts";
import { internalAdapterRoutes, internalFileRoutes } from "./routes/internal-blobs.ts";
import { jobCallbackRoutes } from "./routes/job-callbacks.ts";
import { keyRoutes } from "./routes/keys.ts";
import { modelRoutes } from "./routes/models.ts";
import { runnerRoutes } from "./routes/runners.ts";
import { usageRoutes } from "./routes/usage.ts";
import { webhookRoutes } from "./routes/webhooks.ts";

/** The wired app; exported so tests can compare its routes with the API description. */
export const app = new Hono<AppEnv>();

app.onError((error, c) => {
  if (error instanceof HTTPException) return error.getResponse();
  const api = error instanceof ApiError ? error : isStorageFailure(error) ? storageUnavailable() : serverError();
  if (!(error instanceof ApiError)) console.error(`${c.req.method} ${c.req.path}: ${(error as Error).stack ?? error}`);
  if (api.retryAfterSeconds !== null) c.header("Retry-After", String(api.retryAfterSeconds));
  return c.json(api.toBody(), api.status as 400);
});
app.notFound((c) => c.json(notFound(`Unknown route ${c.req.method} ${c.req.path}`).toBody(), 404));

app.use("*", requestIds(), limitBodies());
app.use("/v1/*", publicCors());
app.use("/openapi.json", publicCors());

app.route("/", docsRoutes);
app.route(CONSOLE_PATHS.root, consoleRoutes);
app.route("/admin", adminRoutes);
app.route("/v1/api_keys", keyRoutes);
app.route("/v1", inferenceRoutes);
app.route("/v1/models", modelRoutes);
app.route("/v1/usage", usageRoutes);
app.route(EDGE_PATHS.runners, runnerRoutes);
app.route("/v1/webhooks", webhookRoutes);
app.route("/v1/adapters", adapterTransferRoutes);
app.route("/v1/adapters", adapterRoutes);
app.route("/v1/files", fileRoutes);
app.route("/v1/fine_tuning/jobs", fineTuningJobRoutes);
app.route(EDGE_PATHS.files, internalFileRoutes);
app.route(EDGE_PATHS.adapters, internalAdapterRoutes);
app.route(EDGE_PATHS.jobs, jobCallbackRoutes);

export { TenantLimiter } from "./limits/tenant-limiter.ts";

export default {
  fetch: (request, env, ctx) => app.fetch(request, guardedStorage(env), ctx),
  queue: (batch, env) => consumeTasks(batch, guardedStorage(env)),
  scheduled: (_controller, env, ctx) => ctx.waitUntil(sweep(guardedStorage(env))),
} satisfies ExportedHandler<Env, TaskMessage>;
