/**
 * The edge worker: wires the error handler, CORS and body limits, and one sub-app per resource;
 * exports the queue consumer and the rate-limiter Durable Object. Nothing else lives here.
 */
import { Hono } from "hono";
import { HTTPException } from "hono/http-exception";
import { ApiError, notFound, serverError } from "../../src/errors.ts";
import type { AppEnv } from "./env.ts";
import { consumeTasks } from "./queue/consumer.ts";
import type { TaskMessage } from "./queue/messages.ts";
import { adminRoutes } from "./routes/admin.ts";
import { keyRoutes } from "./routes/keys.ts";

const app = new Hono<AppEnv>();

app.onError((error, c) => {
  if (error instanceof HTTPException) return error.getResponse();
  const api = error instanceof ApiError ? error : serverError();
  if (!(error instanceof ApiError)) console.error(`${c.req.method} ${c.req.path}: ${(error as Error).stack ?? error}`);
  if (api.retryAfterSeconds !== null) c.header("Retry-After", String(api.retryAfterSeconds));
  return c.json(api.toBody(), api.status as 400);
});
app.notFound((c) => c.json(notFound(`Unknown route ${c.req.method} ${c.req.path}`).toBody(), 404));

app.route("/admin", adminRoutes);
app.route("/v1/api_keys", keyRoutes);

export { TenantLimiter } from "./limits/tenant-limiter.ts";

export default {
  fetch: app.fetch,
  queue: consumeTasks,
} satisfies ExportedHandler<Env, TaskMessage>;
