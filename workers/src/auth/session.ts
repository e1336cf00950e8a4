/**
 * Console sessions: an API key presented once at sign-in is exchanged for a signed cookie naming
 * the key (never the key itself), valid for SESSION_SECONDS. Every request that rides on the
 * cookie looks the key up again, so a revoked key ends its sessions at once. The cookie is
 * HttpOnly and SameSite=Strict; on top of that, every call made with it must carry the session's
 * CSRF token (an HMAC of the session id) in a header or, for the console's own forms, a field.
 */
import { base64Url, secretsEqual } from "./keys.ts";

/** How long a session lasts without use; a session is renewed once half of that has passed. */
export const SESSION_SECONDS = 60 * 60;
/** The session cookie's name. */
export const SESSION_COOKIE = "pica_session";

const VERSION = "v1";

/** A session as its cookie names it. */
export interface Session {
  id: string;
  keyId: string;
  expiresAt: number; // unix seconds
}

/** A new session for a key (or a renewal of session `id`): the cookie value and the CSRF token its pages carry. */
export async function issueSession(
  secret: string,
  keyId: string,
  nowSeconds: number,
  id = base64Url(crypto.getRandomValues(new Uint8Array(18))),
): Promise<{ session: Session; cookie: string; csrfToken: string }> {
  const session: Session = { id, keyId, expiresAt: nowSeconds + SESSION_SECONDS };
  const payload = `${VERSION}.${session.id}.${session.keyId}.${session.expiresAt}`;
  return { session, cookie: `${payload}.${await sign(secret, payload)}`, csrfToken: await csrfToken(secret, session) };
}

/** The session a cookie value names, if its signature holds and it has not expired. */
export async function readSession(secret: string, cookie: string | undefined, nowSeconds: number): Promise<Session | null> {
  if (!cookie || cookie.length > 512) return null;
  const parts = cookie.split(".");
  if (parts.length !== 5 || parts[0] !== VERSION) return null;
  const [, id, keyId, expires, signature] = parts;
  const expiresAt = Number(expires);
  if (!Number.isSafeInteger(expiresAt) || expiresAt <= nowSeconds) return null;
  if (!(await secretsEqual(signature, await sign(secret, `${VERSION}.${id}.${keyId}.${expires}`)))) return null;
  return { id, keyId, expiresAt };
}

/** Whether a session should be renewed (half its life has passed). */
export function dueForRenewal(session: Session, nowSeconds: number): boolean {
  return session.expiresAt - nowSeconds < SESSION_SECONDS / 2;
}

/** The CSRF token of a session. */
export async function csrfToken(secret: string, session: Session): Promise<string> {
  return sign(secret, `csrf.${session.id}`);
}

/** Whether a presented CSRF token is the session's (constant time). */
export async function csrfTokenValid(secret: string, session: Session, presented: string | undefined): Promise<boolean> {
  return presented !== undefined && presented !== "" && secretsEqual(presented, await csrfToken(secret, session));
}

async function sign(secret: string, payload: string): Promise<string> {
  const key = await crypto.subtle.importKey("raw", new TextEncoder().encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return base64Url(new Uint8Array(await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(payload))));
}
