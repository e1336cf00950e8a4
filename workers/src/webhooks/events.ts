/**
 * Webhook events: when something a tenant subscribes to happens, one delivery per matching
 * endpoint is recorded and queued; the queue consumer sends it (webhooks/deliver.ts), so the
 * caller never waits on a tenant's server and a failed delivery is retried with backoff.
 */
import { z } from "zod";
import { randomId } from "../auth/keys.ts";
import type { Database } from "../db/client.ts";
import { createDeliveries, listWebhooks } from "../db/queries/webhooks.ts";
import type { TaskMessage } from "../queue/messages.ts";

/** The events a tenant may subscribe to (OpenAI's names). */
export const WEBHOOK_EVENT_TYPES = ["fine_tuning.job.succeeded", "fine_tuning.job.failed", "fine_tuning.job.cancelled"] as const;
export type WebhookEventType = (typeof WEBHOOK_EVENT_TYPES)[number];

/** The body every endpoint receives, as OpenAI's webhooks send it. */
export const webhookEventSchema = z.object({
  object: z.literal("event"),
  id: z.string().describe("evt_…, the same for every endpoint that receives this event"),
  type: z.enum(WEBHOOK_EVENT_TYPES),
  created_at: z.int().describe("Unix seconds"),
  data: z.object({ id: z.string().describe("the fine-tuning job's id") }).loose(),
});
export type WebhookEvent = z.infer<typeof webhookEventSchema>;

/** Records and queues one delivery per endpoint of the tenant subscribed to `type`; returns how many. */
export async function enqueueWebhookEvent(
  env: Pick<Env, "TASKS">,
  db: Database,
  tenantId: string,
  type: WebhookEventType,
  data: { id: string } & Record<string, unknown>,
): Promise<number> {
  const endpoints = (await listWebhooks(db, tenantId)).filter((endpoint) => endpoint.events.includes(type));
  if (endpoints.length === 0) return 0;
  const event: WebhookEvent = { object: "event", id: randomId("evt_"), type, created_at: Math.floor(Date.now() / 1000), data };
  const payload = JSON.stringify(event);
  const deliveries = endpoints.map((endpoint) => ({ id: randomId("msg_"), tenantId, webhookId: endpoint.id, eventType: type, payload }));
  // Rows first: a queued message whose row is missing would be dropped by the consumer.
  await createDeliveries(db, deliveries);
  await env.TASKS.sendBatch(deliveries.map((delivery) => ({ body: { kind: "deliver_webhook", deliveryId: delivery.id } satisfies TaskMessage })));
  return deliveries.length;
}
