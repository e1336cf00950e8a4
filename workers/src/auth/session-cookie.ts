/**
 * The console session on a request: reading, setting and clearing its cookie (HttpOnly,
 * SameSite=Strict, Path=/; over https also Secure and `__Host-` prefixed, so no sibling domain
 * can plant one), and the live key it names.
 */
import type { Context } from "hono";
import { deleteCookie, getCookie, setCookie } from "hono/cookie";
import { database } from "../db/client.ts";
import { findLiveKeyById } from "../db/queries/tenants.ts";
import type { AppEnv } from "../env.ts";
import { dueForRenewal, issueSession, readSession, renewSession, SESSION_COOKIE, type Session, usableSessionSecret } from "./session.ts";

/** A session and the live key it was opened with. */
export interface SignedInSession {
  session: Session;
  key: NonNullable<Awaited<ReturnType<typeof findLiveKeyById>>>;
}

/** Whether the request carries a session cookie at all (valid or not). */
export function hasSessionCookie(c: Context<AppEnv>): boolean {
  return getCookie(c, SESSION_COOKIE, prefix(c)) !== undefined;
}

/** The request's session if its cookie is valid and unexpired and its key still live. */
export async function currentSession(c: Context<AppEnv>): Promise<SignedInSession | null> {
  const secret = c.env.SESSION_SECRET;
  if (!usableSessionSecret(secret)) return null;
  const session = await readSession(secret, getCookie(c, SESSION_COOKIE, prefix(c)), nowSeconds());
  if (session === null) return null;
  const key = await findLiveKeyById(database(c.env.DB), session.keyId);
  return key === null ? null : { session, key };
}

/** Renews a session's cookie once half its life has passed (call only for a request the session's owner made). */
export async function renewIfDue(c: Context<AppEnv>, session: Session): Promise<void> {
  const now = nowSeconds();
  if (!dueForRenewal(session, now)) return;
  const renewed = await renewSession(c.env.SESSION_SECRET, session, now);
  writeSessionCookie(c, renewed.cookie, renewed.session);
}

/** Opens a session for a key: sets its cookie and returns the CSRF token. */
export async function openSession(c: Context<AppEnv>, secret: string, keyId: string): Promise<string> {
  const issued = await issueSession(secret, keyId, nowSeconds());
  writeSessionCookie(c, issued.cookie, issued.session);
  return issued.csrfToken;
}

/** Ends the session on this browser. */
export function clearSession(c: Context<AppEnv>): void {
  deleteCookie(c, SESSION_COOKIE, { path: "/", secure: isHttps(c), httpOnly: true, sameSite: "Strict", prefix: prefix(c) });
}

function writeSessionCookie(c: Context<AppEnv>, value: string, session: Session): void {
  setCookie(c, SESSION_COOKIE, value, {
    path: "/",
    httpOnly: true,
    sameSite: "Strict",
    secure: isHttps(c),
    prefix: prefix(c),
    expires: new Date(session.expiresAt * 1000),
  });
}

// Plain http only on a developer's machine (npm start); anywhere else the cookie is `__Host-`.
function prefix(c: Context<AppEnv>): "host" | undefined {
  return isHttps(c) ? "host" : undefined;
}

function isHttps(c: Context<AppEnv>): boolean {
  return new URL(c.req.url).protocol === "https:";
}

function nowSeconds(): number {
  return Math.floor(Date.now() / 1000);
}
