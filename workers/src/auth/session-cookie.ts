/**
 * The console session on a request: reading, setting and clearing its cookie (HttpOnly,
 * SameSite=Strict, Secure over https), and the live key it names.
 */
import type { Context } from "hono";
import { deleteCookie, getCookie, setCookie } from "hono/cookie";
import { database } from "../db/client.ts";
import { findLiveKeyById } from "../db/queries/tenants.ts";
import type { AppEnv } from "../env.ts";
import { dueForRenewal, issueSession, readSession, SESSION_COOKIE, type Session } from "./session.ts";

/** A session and the live key it was opened with. */
export interface SignedInSession {
  session: Session;
  key: NonNullable<Awaited<ReturnType<typeof findLiveKeyById>>>;
}

/** Whether the request carries a session cookie at all (valid or not). */
export function hasSessionCookie(c: Context<AppEnv>): boolean {
  return getCookie(c, SESSION_COOKIE) !== undefined;
}

/** The request's session if its cookie is valid, unexpired and its key still live; renews it when due. */
export async function currentSession(c: Context<AppEnv>): Promise<SignedInSession | null> {
  const secret = c.env.SESSION_SECRET;
  if (!secret) return null;
  const now = Math.floor(Date.now() / 1000);
  const session = await readSession(secret, getCookie(c, SESSION_COOKIE), now);
  if (session === null) return null;
  const key = await findLiveKeyById(database(c.env.DB), session.keyId);
  if (key === null) return null;
  if (dueForRenewal(session, now)) {
    // The renewed cookie keeps the session id, so the page's CSRF token stays valid.
    const renewed = await issueSession(secret, key.id, now, session.id);
    writeSessionCookie(c, renewed.cookie, renewed.session);
  }
  return { session, key };
}

/** Opens a session for a key: sets its cookie and returns the CSRF token. */
export async function openSession(c: Context<AppEnv>, secret: string, keyId: string): Promise<string> {
  const issued = await issueSession(secret, keyId, Math.floor(Date.now() / 1000));
  writeSessionCookie(c, issued.cookie, issued.session);
  return issued.csrfToken;
}

/** Ends the session on this browser. */
export function clearSession(c: Context<AppEnv>): void {
  deleteCookie(c, SESSION_COOKIE, { path: "/", secure: isHttps(c), httpOnly: true, sameSite: "Strict" });
}

function writeSessionCookie(c: Context<AppEnv>, value: string, session: Session): void {
  setCookie(c, SESSION_COOKIE, value, {
    path: "/",
    httpOnly: true,
    sameSite: "Strict",
    secure: isHttps(c),
    expires: new Date(session.expiresAt * 1000),
  });
}

function isHttps(c: Context<AppEnv>): boolean {
  return new URL(c.req.url).protocol === "https:";
}
