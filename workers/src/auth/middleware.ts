/**
 * Who may call what: tenant API keys (with scopes, or a console session opened with one) on the public API, the admin token on /admin,
 * the runner secret on /internal. Every secret is compared in constant time, and none is ever
 * echoed back or logged.
 */
import type { Context, MiddlewareHandler } from "hono";
import { forbidden, unauthorized } from "../../../src/errors.ts";
import { CSRF_HEADER, INVALID_CSRF_TOKEN_CODE } from "../../../src/protocol/console.ts";
import { INVALID_RUNNER_SECRET_CODE, RUNNER_AUTH_HEADER } from "../../../src/protocol/runner.ts";
import { database } from "../db/client.ts";
import { findLiveKeyByHash, touchApiKey } from "../db/queries/tenants.ts";
import type { AppEnv } from "../env.ts";
import { cachedKey, cacheKey, dueForTouch, type LiveKey } from "./key-cache.ts";
import { looksLikeApiKey, secretsEqual, sha256Hex, type KeyScope } from "./keys.ts";
import { csrfTokenValid } from "./session.ts";
import { currentSession, hasSessionCookie, renewIfDue } from "./session-cookie.ts";

/** The bearer token of a request, or null. */
function bearer(header: string | undefined): string | null {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header ?? "");
  return match ? match[1] : null;
}

/**
 * A tenant API key with `scope` (or the tenant admin scope, which covers every scope): as a
 * bearer token, or through a console session cookie with its CSRF token in CSRF_HEADER.
 */
export function requireKey(scope: KeyScope): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const usesSession = c.req.header("authorization") === undefined && hasSessionCookie(c);
    const key = usesSession ? await sessionKey(c) : await bearerKey(c);
    if (!key.scopes.includes(scope) && !key.scopes.includes("admin")) {
      throw forbidden(`This API key lacks the '${scope}' scope.`, null, "insufficient_scope");
    }
    c.set("caller", { tenantId: key.tenantId, keyId: key.id, scopes: key.scopes as KeyScope[] });
    if (dueForTouch(key.id)) c.executionCtx.waitUntil(touchApiKey(database(c.env.DB), key.id).catch(() => undefined));
    await next();
  };
}

async function bearerKey(c: Context<AppEnv>): Promise<LiveKey> {
  const presented = bearer(c.req.header("authorization"));
  if (presented === null) {
    throw unauthorized("You didn't provide an API key. Provide it in the Authorization header as 'Bearer YOUR_KEY'.", "missing_api_key");
  }
  const hash = looksLikeApiKey(presented) ? await sha256Hex(presented) : null;
  const key = hash === null ? null : (cachedKey(hash) ?? (await findLiveKeyByHash(database(c.env.DB), hash)));
  if (key === null || !(await secretsEqual(key.hash, hash!))) {
    throw unauthorized("Incorrect or revoked API key provided.");
  }
  cacheKey(key);
  return key;
}

async function sessionKey(c: Context<AppEnv>): Promise<LiveKey> {
  const signedIn = await currentSession(c);
  if (signedIn === null) throw unauthorized("The console session has ended (expired, signed out or its key revoked); sign in again.", "session_expired");
  if (!(await csrfTokenValid(c.env.SESSION_SECRET, signedIn.session, c.req.header(CSRF_HEADER)))) {
    throw forbidden(`A request made with a console session must carry the session's CSRF token in '${CSRF_HEADER}'.`, null, INVALID_CSRF_TOKEN_CODE);
  }
  await renewIfDue(c, signedIn.session); // only for its owner's requests: a request without the token keeps nothing alive
  return signedIn.key;
}

/** The platform operator's admin token. */
export function requireAdmin(): MiddlewareHandler<AppEnv> {
  return requireSecret((env) => env.ADMIN_TOKEN, "Admin routes need the admin token as a bearer token.", "invalid_admin_token");
}

/** The shared runner secret (runners calling back, and the edge calling runners). */
export function requireRunner(): MiddlewareHandler<AppEnv> {
  return requireSecret((env) => env.RUNNER_SECRET, "Internal routes need the runner secret as a bearer token.", INVALID_RUNNER_SECRET_CODE, RUNNER_AUTH_HEADER);
}

/** A bearer token equal to a configured secret; an unset secret refuses everyone. */
function requireSecret(secretOf: (env: Env) => string | undefined, message: string, code: string, header = "authorization"): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const presented = bearer(c.req.header(header));
    const secret = secretOf(c.env);
    if (presented === null || !secret || !(await secretsEqual(presented, secret))) throw unauthorized(message, code);
    await next();
  };
}
