/**
 * A tenant's webhook endpoints (admin-scoped key): register, list (cursor pages, oldest first),
 * retrieve, delete, and the deliveries of one (cursor pages, newest first). The signing secret is
 * in the creation response and nowhere else.
 */
import { Hono } from "hono";
import { z } from "zod";
import { notFound } from "../../../src/errors.ts";
import { type ListPage, listPageSchema } from "../../../src/protocol/list-page.ts";
import { deletedObjectSchema } from "../../../src/protocol/platform-objects.ts";
import { jsonBody } from "../../../src/request-body.ts";
import { randomId } from "../auth/keys.ts";
import { requireKey } from "../auth/middleware.ts";
import { database } from "../db/client.ts";
import { createWebhook, deleteWebhook, findDelivery, getWebhook, listDeliveries, listWebhookPage } from "../db/queries/webhooks.ts";
import type { webhookDeliveries, webhooks } from "../db/schema.ts";
import type { AppEnv } from "../env.ts";
import { WEBHOOK_EVENT_TYPES } from "../webhooks/events.ts";
import { generateWebhookSecret } from "../webhooks/signing.ts";
import { cursorRow, listPage, listQuerySchema } from "./list-page.ts";
import { parse } from "./parse.ts";

// Plain http only where nothing leaves the machine or the test network; real endpoints get https.
const PLAIN_HTTP_HOSTS = /^(localhost|127\.0\.0\.1|\[::1\]|.+\.localhost|.+\.test)$/;

/** The body of `POST /v1/webhooks`. */
export const webhookRequestSchema = z
  .object({
    url: z
      .url({ protocol: /^https?$/ })
      .max(2048)
      .refine(secureOrLocal, "must use https (http only for localhost)"),
    events: z
      .array(z.enum(WEBHOOK_EVENT_TYPES))
      .min(1)
      .default([...WEBHOOK_EVENT_TYPES]),
  })
  .strict();

// zod runs this refinement even when the URL check failed, so it must not assume a URL.
function secureOrLocal(value: string): boolean {
  if (!URL.canParse(value)) return true; // already reported by the URL check
  const url = new URL(value);
  return url.protocol === "https:" || PLAIN_HTTP_HOSTS.test(url.hostname);
}

/** An endpoint as the API shows it; its secret only in the creation response. */
export const webhookObjectSchema = z.object({
  id: z.string(),
  object: z.literal("webhook_endpoint"),
  url: z.string(),
  events: z.array(z.enum(WEBHOOK_EVENT_TYPES)),
  created_at: z.int(),
  secret: z.string().optional().describe("whsec_…: only in the creation response"),
});

/** One delivery of an event to an endpoint, with its latest attempt. */
export const webhookDeliverySchema = z.object({
  id: z.string().describe("msg_…, the webhook-id header"),
  object: z.literal("webhook_delivery"),
  event_type: z.enum(WEBHOOK_EVENT_TYPES),
  status: z.enum(["pending", "delivered", "failed"]),
  attempts: z.int(),
  last_status: z.int().nullable(),
  last_error: z.string().nullable(),
  created_at: z.int(),
  delivered_at: z.int().nullable(),
});

export type WebhookObject = z.infer<typeof webhookObjectSchema>;
export type WebhookDelivery = z.infer<typeof webhookDeliverySchema>;
export const webhookPageSchema = listPageSchema(webhookObjectSchema);
export const webhookDeliveryPageSchema = listPageSchema(webhookDeliverySchema);
export const webhookDeletedSchema = deletedObjectSchema("webhook_endpoint.deleted");

/** The queries of the endpoint list and of an endpoint's deliveries. */
export const webhooksQuerySchema = listQuerySchema("webhooks");
export const deliveriesQuerySchema = listQuerySchema("deliveries");

export const webhookRoutes = new Hono<AppEnv>();
webhookRoutes.use(requireKey("admin"));

webhookRoutes.post("/", async (c) => {
  const body = parse(webhookRequestSchema, await jsonBody(c));
  const row = await createWebhook(database(c.env.DB), {
    id: randomId("wh_"),
    tenantId: c.get("caller").tenantId,
    url: body.url,
    secret: generateWebhookSecret(),
    events: [...new Set(body.events)],
  });
  return c.json({ ...publicWebhook(row), secret: row.secret } satisfies WebhookObject, 201);
});

webhookRoutes.get("/", async (c) => {
  const query = parse(webhooksQuerySchema, c.req.query());
  const db = database(c.env.DB);
  const tenantId = c.get("caller").tenantId;
  const after = await cursorRow(query.after, "webhook endpoint", (id) => getWebhook(db, tenantId, id));
  const rows = await listWebhookPage(db, tenantId, { limit: query.limit + 1, after });
  return c.json(listPage(rows.map(publicWebhook), query.limit) satisfies ListPage<WebhookObject>);
});

webhookRoutes.get("/:webhook", async (c) => c.json(publicWebhook(await webhookOr404(c.env.DB, c.get("caller").tenantId, c.req.param("webhook")))));

webhookRoutes.get("/:webhook/deliveries", async (c) => {
  const endpoint = await webhookOr404(c.env.DB, c.get("caller").tenantId, c.req.param("webhook"));
  const query = parse(deliveriesQuerySchema, c.req.query());
  const db = database(c.env.DB);
  const after = await cursorRow(query.after, `delivery to ${endpoint.id}`, (id) => findDelivery(db, endpoint.tenantId, endpoint.id, id));
  const rows = await listDeliveries(db, endpoint.tenantId, endpoint.id, { limit: query.limit + 1, after });
  return c.json(listPage(rows.map(publicDelivery), query.limit) satisfies ListPage<WebhookDelivery>);
});

webhookRoutes.delete("/:webhook", async (c) => {
  const row = await deleteWebhook(database(c.env.DB), c.get("caller").tenantId, c.req.param("webhook"));
  if (row === null) throw webhookNotFound(c.req.param("webhook"));
  return c.json({ id: row.id, object: "webhook_endpoint.deleted", deleted: true } satisfies z.infer<typeof webhookDeletedSchema>);
});

async function webhookOr404(d1: D1Database, tenantId: string, id: string) {
  const row = await getWebhook(database(d1), tenantId, id);
  if (row === null) throw webhookNotFound(id);
  return row;
}

function webhookNotFound(id: string) {
  return notFound(`No webhook endpoint ${JSON.stringify(id)}.`, "webhook_id", "webhook_not_found");
}

// The event and status columns hold only values the edge wrote from WEBHOOK_EVENT_TYPES and the delivery states.

/** An endpoint as listed: never its secret. */
function publicWebhook(row: typeof webhooks.$inferSelect): WebhookObject {
  return { id: row.id, object: "webhook_endpoint" as const, url: row.url, events: row.events as WebhookObject["events"], created_at: row.createdAt };
}

function publicDelivery(row: typeof webhookDeliveries.$inferSelect): WebhookDelivery {
  return {
    id: row.id,
    object: "webhook_delivery" as const,
    event_type: row.eventType as WebhookDelivery["event_type"],
    status: row.status as WebhookDelivery["status"],
    attempts: row.attempts,
    last_status: row.lastStatus,
    last_error: row.lastError,
    created_at: row.createdAt,
    delivered_at: row.deliveredAt,
  };
}
