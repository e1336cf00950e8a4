/**
 * Console sessions: an API key presented once at sign-in is exchanged for a signed cookie naming
 * the key (never the key itself). A session lasts SESSION_SECONDS from its last renewal and is
 * renewed while in use, but never beyond MAX_SESSION_SECONDS from sign-in. Every request that
 * rides on the cookie looks the key up again, so a revoked key ends its sessions at once. The
 * cookie is HttpOnly and SameSite=Strict; on top of that, every call made with it must carry the
 * session's CSRF token (an HMAC of the session id) in a header or, for the console's own forms, a
 * field.
 */
import { base64Url, secretsEqual } from "./keys.ts";

/** How long a session lasts without use; it is renewed once half of that has passed. */
export const SESSION_SECONDS = 60 * 60;
/** How long a session lasts at most, however it is used: then the key must be given again. */
export const MAX_SESSION_SECONDS = 12 * 60 * 60;
/** The shortest SESSION_SECRET accepted: anything shorter could be guessed, and sessions forged. */
export const MIN_SESSION_SECRET_LENGTH = 32;

/** The session cookie's name (`__Host-` prefixed over https). */
export const SESSION_COOKIE = "pica_session";

const VERSION = "v2";

/** A session as its cookie names it. */
export interface Session {
  id: string;
  keyId: string;
  issuedAt: number; // unix seconds, when the key was given
  expiresAt: number; // unix seconds
}

/** Whether a configured secret is fit to sign sessions with. */
export function usableSessionSecret(secret: string | undefined): secret is string {
  return secret !== undefined && secret.length >= MIN_SESSION_SECRET_LENGTH;
}

/** A new session for a key: the cookie value and the CSRF token its pages carry. */
export async function issueSession(secret: string, keyId: string, nowSeconds: number): Promise<{ session: Session; cookie: string; csrfToken: string }> {
  const id = base64Url(crypto.getRandomValues(new Uint8Array(18)));
  return sealed(secret, { id, keyId, issuedAt: nowSeconds, expiresAt: nowSeconds + SESSION_SECONDS });
}

/** The same session (id, key, sign-in time, CSRF token) valid for longer, within its absolute limit. */
export async function renewSession(secret: string, session: Session, nowSeconds: number): Promise<{ session: Session; cookie: string; csrfToken: string }> {
  return sealed(secret, { ...session, expiresAt: Math.min(nowSeconds + SESSION_SECONDS, session.issuedAt + MAX_SESSION_SECONDS) });
}

/** The session a cookie value names, if its signature holds and it has not expired. */
export async function readSession(secret: string, cookie: string | undefined, nowSeconds: number): Promise<Session | null> {
  if (!cookie || cookie.length > 512) return null;
  const parts = cookie.split(".");
  if (parts.length !== 6 || parts[0] !== VERSION) return null;
  const [, id, keyId, issued, expires, signature] = parts;
  const issuedAt = Number(issued);
  const expiresAt = Number(expires);
  if (!Number.isSafeInteger(issuedAt) || !Number.isSafeInteger(expiresAt)) return null;
  if (expiresAt <= nowSeconds || expiresAt > issuedAt + MAX_SESSION_SECONDS) return null;
  if (!(await secretsEqual(signature, await sign(secret, payload({ id, keyId, issuedAt, expiresAt }))))) return null;
  return { id, keyId, issuedAt, expiresAt };
}

/** Whether a session should be renewed (half its life has passed, and its absolute limit allows more). */
export function dueForRenewal(session: Session, nowSeconds: number): boolean {
  return session.expiresAt - nowSeconds < SESSION_SECONDS / 2 && session.expiresAt < session.issuedAt + MAX_SESSION_SECONDS;
}

/** The CSRF token of a session. */
export async function csrfToken(secret: string, session: Session): Promise<string> {
  return sign(secret, `csrf.${session.id}`);
}

/** Whether a presented CSRF token is the session's (constant time). */
export async function csrfTokenValid(secret: string, session: Session, presented: string | undefined): Promise<boolean> {
  return presented !== undefined && presented !== "" && secretsEqual(presented, await csrfToken(secret, session));
}

function payload(session: Session): string {
  return `${VERSION}.${session.id}.${session.keyId}.${session.issuedAt}.${session.expiresAt}`;
}

async function sealed(secret: string, session: Session) {
  const text = payload(session);
  return { session, cookie: `${text}.${await sign(secret, text)}`, csrfToken: await csrfToken(secret, session) };
}

async function sign(secret: string, text: string): Promise<string> {
  const key = await crypto.subtle.importKey("raw", new TextEncoder().encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return base64Url(new Uint8Array(await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(text))));
}
