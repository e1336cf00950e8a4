/** Webhook endpoints and their deliveries, always scoped by tenant; a secret is read only to sign. */
import { and, asc, eq, isNull } from "drizzle-orm";
import type { Database } from "../client.ts";
import { webhookDeliveries, webhooks } from "../schema.ts";
import { keysetPage } from "./keyset-page.ts";

export interface NewWebhook {
  id: string;
  tenantId: string;
  url: string;
  secret: string;
  events: string[];
}

/** Registers an endpoint; the returned row still holds the secret, for the one creation response. */
export async function createWebhook(db: Database, webhook: NewWebhook) {
  const [row] = await db.insert(webhooks).values(webhook).returning();
  return row;
}

type WebhookRow = typeof webhooks.$inferSelect;
type DeliveryRow = typeof webhookDeliveries.$inferSelect;

/** A tenant's live endpoints, oldest first: every one an event goes to. */
export async function listWebhooks(db: Database, tenantId: string) {
  return db
    .select()
    .from(webhooks)
    .where(and(eq(webhooks.tenantId, tenantId), isNull(webhooks.disabledAt)))
    .orderBy(asc(webhooks.createdAt), asc(webhooks.id))
    .all();
}

/** One page of a tenant's live endpoints, oldest first, after the endpoint `after`. */
export async function listWebhookPage(db: Database, tenantId: string, page: { limit: number; after: WebhookRow | null }) {
  const keyset = keysetPage(webhooks, "oldest first", page.after);
  return db
    .select()
    .from(webhooks)
    .where(and(eq(webhooks.tenantId, tenantId), isNull(webhooks.disabledAt), keyset.condition))
    .orderBy(...keyset.orderBy)
    .limit(page.limit)
    .all();
}

/** One of a tenant's live endpoints; null when it has none by that id. */
export async function getWebhook(db: Database, tenantId: string, id: string) {
  const row = await db
    .select()
    .from(webhooks)
    .where(and(eq(webhooks.id, id), eq(webhooks.tenantId, tenantId), isNull(webhooks.disabledAt)))
    .get();
  return row ?? null;
}

/** Disables an endpoint (kept, so its delivery history stays readable); null when not the tenant's. */
export async function deleteWebhook(db: Database, tenantId: string, id: string) {
  const [row] = await db
    .update(webhooks)
    .set({ disabledAt: Math.floor(Date.now() / 1000) })
    .where(and(eq(webhooks.id, id), eq(webhooks.tenantId, tenantId), isNull(webhooks.disabledAt)))
    .returning();
  return row ?? null;
}

export interface NewDelivery {
  id: string;
  tenantId: string;
  webhookId: string;
  eventType: string;
  payload: string;
}

/** Records pending deliveries (one per endpoint) in one batch. */
export async function createDeliveries(db: Database, deliveries: NewDelivery[]) {
  if (deliveries.length === 0) return;
  await db.insert(webhookDeliveries).values(deliveries);
}

/** A delivery with its endpoint's URL and secret (null when the endpoint was deleted since). */
export async function getDeliveryForSending(db: Database, deliveryId: string) {
  const row = await db
    .select({ delivery: webhookDeliveries, url: webhooks.url, secret: webhooks.secret, disabledAt: webhooks.disabledAt })
    .from(webhookDeliveries)
    .innerJoin(webhooks, eq(webhooks.id, webhookDeliveries.webhookId))
    .where(eq(webhookDeliveries.id, deliveryId))
    .get();
  return row ?? null;
}

/** Records one attempt's outcome; `status` moves to delivered or failed when it is final. */
export async function recordAttempt(
  db: Database,
  deliveryId: string,
  attempt: { attempts: number; httpStatus: number | null; error: string | null; status: "pending" | "delivered" | "failed" },
) {
  await db
    .update(webhookDeliveries)
    .set({
      attempts: attempt.attempts,
      lastStatus: attempt.httpStatus,
      lastError: attempt.error,
      status: attempt.status,
      deliveredAt: attempt.status === "delivered" ? Math.floor(Date.now() / 1000) : null,
    })
    .where(eq(webhookDeliveries.id, deliveryId));
}

/** The tenant's delivery with this id to one endpoint; null when there is none. */
export async function findDelivery(db: Database, tenantId: string, webhookId: string, id: string): Promise<DeliveryRow | null> {
  const row = await db
    .select()
    .from(webhookDeliveries)
    .where(and(eq(webhookDeliveries.id, id), eq(webhookDeliveries.tenantId, tenantId), eq(webhookDeliveries.webhookId, webhookId)))
    .get();
  return row ?? null;
}

/** One page of a tenant's deliveries to one endpoint, newest first, after the delivery `after`. */
export async function listDeliveries(db: Database, tenantId: string, webhookId: string, page: { limit: number; after: DeliveryRow | null }) {
  const keyset = keysetPage(webhookDeliveries, "newest first", page.after);
  return db
    .select()
    .from(webhookDeliveries)
    .where(and(eq(webhookDeliveries.tenantId, tenantId), eq(webhookDeliveries.webhookId, webhookId), keyset.condition))
    .orderBy(...keyset.orderBy)
    .limit(page.limit)
    .all();
}
