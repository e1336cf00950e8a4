/**
 * Standard Webhooks signing (https://www.standardwebhooks.com): the secret is `whsec_` + base64 of
 * random bytes; a message is signed as `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")).
 * Web Crypto does the HMAC, so this runs unchanged in workerd and Node.
 */
const SECRET_PREFIX = "whsec_";

/** A new endpoint secret: 32 random bytes, base64, with the `whsec_` prefix. */
export function generateWebhookSecret(): string {
  return `${SECRET_PREFIX}${btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))))}`;
}

/** The three headers a receiver verifies, for one message sent at `timestampSeconds`. */
export async function signWebhook(secret: string, id: string, timestampSeconds: number, body: string): Promise<Record<string, string>> {
  const keyBytes = Uint8Array.from(atob(secret.slice(SECRET_PREFIX.length)), (char) => char.charCodeAt(0));
  const key = await crypto.subtle.importKey("raw", keyBytes, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const mac = await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(`${id}.${timestampSeconds}.${body}`));
  return {
    "webhook-id": id,
    "webhook-timestamp": String(timestampSeconds),
    "webhook-signature": `v1,${btoa(String.fromCharCode(...new Uint8Array(mac)))}`,
  };
}
