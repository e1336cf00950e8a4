/**
 * The runner secret, required on every route of a runner that has one: the OpenAI-compatible
 * API, health and metrics as much as the internal API, since anyone who reaches a runner could
 * otherwise use its compute, read its adapters or bypass the edge's keys and limits. Hono's
 * bearer check compares in constant time (through SHA-256 digests); every refusal is a 401 with
 * an OpenAI-shaped body, also for a malformed header, which the library would answer with a 400.
 */
import type { MiddlewareHandler } from "hono";
import { bearerAuth } from "hono/bearer-auth";
import { unauthorized } from "../../src/errors.ts";
import { INVALID_RUNNER_SECRET_CODE, RUNNER_AUTH_HEADER, RUNNER_AUTH_SCHEME } from "../../src/protocol/runner.ts";

/** What a bearer token may hold (RFC 6750's token68); the library refuses anything else unseen. */
const SECRET_PATTERN = /^[A-Za-z0-9._~+/-]+=*$/;
/** Shorter secrets could be guessed. */
export const MIN_SECRET_LENGTH = 16;

/** Middleware that refuses any request without `Authorization: Bearer <secret>`. */
export function runnerAuth(secret: string): MiddlewareHandler {
  assertUsableSecret(secret);
  const refusal = (message: string) => () =>
    new Response(JSON.stringify(unauthorized(message, INVALID_RUNNER_SECRET_CODE).toBody()), {
      status: 401,
      headers: { "content-type": "application/json", "www-authenticate": RUNNER_AUTH_SCHEME },
    });
  return bearerAuth({
    token: secret,
    headerName: RUNNER_AUTH_HEADER,
    prefix: RUNNER_AUTH_SCHEME,
    noAuthenticationHeader: { message: refusal("This runner needs the runner secret as a bearer token.") },
    invalidAuthenticationHeader: { message: refusal(`The ${RUNNER_AUTH_HEADER} header must be '${RUNNER_AUTH_SCHEME} <runner secret>'.`) },
    invalidToken: { message: refusal("The runner secret is wrong.") },
  });
}

/** Throws when `secret` could never be presented as a bearer token, or is too short to be secret. */
export function assertUsableSecret(secret: string): void {
  if (!SECRET_PATTERN.test(secret)) throw new Error("the runner secret may hold only A-Z a-z 0-9 . _ ~ + / - (and trailing =)");
  if (secret.length < MIN_SECRET_LENGTH) throw new Error(`the runner secret must be at least ${MIN_SECRET_LENGTH} characters, got ${secret.length}`);
}
