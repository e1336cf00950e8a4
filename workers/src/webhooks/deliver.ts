/**
 * Sends one queued webhook delivery. A network error or a non-2xx answer throws, so the queue
 * retries the message with backoff; each attempt is recorded, and after MAX_DELIVERY_ATTEMPTS the
 * delivery is marked failed and the message is acknowledged instead.
 */
import type { Database } from "../db/client.ts";
import { getDeliveryForSending, recordAttempt } from "../db/queries/webhooks.ts";
import { signWebhook } from "./signing.ts";

/** Attempts before a delivery is given up (below the queue's max_retries, so we decide, not it). */
export const MAX_DELIVERY_ATTEMPTS = 8;
/** A receiver that has not answered within this long counts as a failed attempt. */
const DELIVERY_TIMEOUT_MS = 15_000;

export class WebhookDeliveryError extends Error {
  override readonly name = "WebhookDeliveryError";
}

/** Delivers `deliveryId` once; throws to have the queue retry it. Finished deliveries are skipped. */
export async function deliverWebhook(db: Database, deliveryId: string): Promise<void> {
  const found = await getDeliveryForSending(db, deliveryId);
  if (found === null) return console.error(`webhook delivery ${deliveryId}: no such delivery; dropped`);
  const { delivery, url, secret, disabledAt } = found;
  if (delivery.status !== "pending") return; // at-least-once queue: a redelivered message after success
  if (disabledAt !== null) {
    await recordAttempt(db, deliveryId, { attempts: delivery.attempts, httpStatus: null, error: "endpoint deleted", status: "failed" });
    return;
  }

  const attempts = delivery.attempts + 1;
  // A fresh timestamp per attempt: receivers reject old ones (replay protection), and the id stays.
  const headers = await signWebhook(secret, delivery.id, Math.floor(Date.now() / 1000), delivery.payload);
  let httpStatus: number | null = null;
  let error: string | null = null;
  try {
    const response = await fetch(url, {
      method: "POST",
      headers: { ...headers, "content-type": "application/json", "user-agent": "pica-webhooks/1" },
      body: delivery.payload,
      redirect: "manual", // a redirect is a misconfigured endpoint, not a place to send signed data
      signal: AbortSignal.timeout(DELIVERY_TIMEOUT_MS),
    });
    httpStatus = response.status;
    await response.body?.cancel();
    if (response.ok) {
      await recordAttempt(db, deliveryId, { attempts, httpStatus, error: null, status: "delivered" });
      return;
    }
    error = `endpoint answered HTTP ${response.status}`;
  } catch (cause) {
    error = `request failed: ${(cause as Error).message}`;
  }

  const final = attempts >= MAX_DELIVERY_ATTEMPTS;
  await recordAttempt(db, deliveryId, { attempts, httpStatus, error, status: final ? "failed" : "pending" });
  if (final) return console.error(`webhook delivery ${deliveryId} to ${url} failed ${attempts} times (${error}); given up`);
  throw new WebhookDeliveryError(`webhook delivery ${deliveryId} to ${url}, attempt ${attempts}: ${error}`);
}
