/**
 * API keys: long random secrets shown once, stored only as their SHA-256 with a display prefix,
 * compared in constant time. A key reads `sk-pica-` then 43 base64url characters (256 bits).
 */
const KEY_PREFIX = "sk-pica-";
const DISPLAY_CHARACTERS = 12;

export type KeyScope = "inference" | "fine_tuning" | "admin";
export const KEY_SCOPES: readonly KeyScope[] = ["inference", "fine_tuning", "admin"];

/** A new key: the secret (returned to its owner once) and what is stored. */
export async function generateApiKey(): Promise<{ key: string; hash: string; prefix: string }> {
  const key = `${KEY_PREFIX}${base64Url(crypto.getRandomValues(new Uint8Array(32)))}`;
  return { key, hash: await sha256Hex(key), prefix: `${key.slice(0, KEY_PREFIX.length + DISPLAY_CHARACTERS)}…` };
}

/** Whether a presented string looks like one of our keys (cheap check before any lookup). */
export function looksLikeApiKey(value: string): boolean {
  return value.startsWith(KEY_PREFIX) && value.length === KEY_PREFIX.length + 43 && /^[A-Za-z0-9_-]+$/.test(value.slice(KEY_PREFIX.length));
}

/** Hex SHA-256 of a UTF-8 string. */
export async function sha256Hex(value: string | Uint8Array): Promise<string> {
  const bytes = typeof value === "string" ? new TextEncoder().encode(value) : value;
  return hex(new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)));
}

/** Constant-time equality of two secrets (compared through their digests, so lengths may differ). */
export async function secretsEqual(a: string, b: string): Promise<boolean> {
  const [da, db] = await Promise.all([digest(a), digest(b)]);
  return crypto.subtle.timingSafeEqual(da, db);
}

/** A random identifier with a prefix: `file-…`, `ftjob-…`, 24 base64url-safe alphanumerics. */
export function randomId(prefix: string): string {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  const bytes = crypto.getRandomValues(new Uint8Array(24));
  let id = "";
  for (const byte of bytes) id += alphabet[byte % alphabet.length]; // 256 % 62 bias is irrelevant for ids
  return `${prefix}${id}`;
}

async function digest(value: string): Promise<ArrayBuffer> {
  return crypto.subtle.digest("SHA-256", new TextEncoder().encode(value));
}

function hex(bytes: Uint8Array): string {
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Unpadded base64url of bytes. */
export function base64Url(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes))
    .replace(/\+/g, "-")
    .replace(/\//g, "_")
    .replace(/=+$/, "");
}
