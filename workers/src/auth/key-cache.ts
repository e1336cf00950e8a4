/**
 * Per-isolate memory of keys recently found live, so a burst of requests with one key costs one
 * D1 lookup rather than one each (a local D1 round trip is several milliseconds, a remote one
 * tens). Only live keys are kept, for KEY_TTL_MS: a revocation takes effect at once in the
 * isolate that revoked it and within KEY_TTL_MS everywhere else. `last_used_at` is written at most
 * once per TOUCH_INTERVAL_MS per key and isolate.
 */
export const KEY_TTL_MS = 5_000;
const TOUCH_INTERVAL_MS = 60_000;
const MAX_KEYS = 10_000;

export interface LiveKey {
  id: string;
  tenantId: string;
  hash: string;
  scopes: string[];
}

const live = new Map<string, { key: LiveKey; expires: number }>(); // by hash
const touched = new Map<string, number>(); // key id → when last_used_at was last written

/** The live key with this hash if this isolate saw it within KEY_TTL_MS. */
export function cachedKey(hash: string): LiveKey | null {
  const entry = live.get(hash);
  if (entry === undefined || entry.expires <= Date.now()) return null;
  return entry.key;
}

/** Remembers a key found live. */
export function cacheKey(key: LiveKey): void {
  if (live.size >= MAX_KEYS) live.clear();
  live.set(key.hash, { key, expires: Date.now() + KEY_TTL_MS });
}

/** Forgets every remembered key (after a revocation). */
export function forgetKeys(): void {
  live.clear();
}

/** Whether `last_used_at` is due a write for this key; marks it written if so. */
export function dueForTouch(keyId: string): boolean {
  const now = Date.now();
  if ((touched.get(keyId) ?? 0) > now - TOUCH_INTERVAL_MS) return false;
  if (touched.size >= MAX_KEYS) touched.clear();
  touched.set(keyId, now);
  return true;
}
