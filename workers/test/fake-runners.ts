/**
 * Test doubles for runners: the worker under test runs in the same isolate as the tests, so its
 * outbound `fetch` can be routed to in-process handlers by origin. Anything else fails loudly.
 */
import { env } from "cloudflare:test";
import { vi } from "vitest";
import { INVALID_RUNNER_SECRET_CODE, runnerAuthorization, RUNNER_AUTH_HEADER } from "../../src/protocol/runner.ts";

export type RunnerHandler = (request: Request) => Response | Promise<Response>;

/** Routes fetches to `handlers` by origin until the returned function is called. */
export function installFakeRunners(handlers: Record<string, RunnerHandler>): () => void {
  const original = globalThis.fetch;
  const spy = vi.spyOn(globalThis, "fetch").mockImplementation(async (input, init) => {
    const request = new Request(input as RequestInfo, init);
    const handler = handlers[new URL(request.url).origin];
    if (handler === undefined) {
      if (new URL(request.url).origin === "http://edge.test") return original(request);
      throw new TypeError(`fetch to ${request.url}: no fake runner at this origin`);
    }
    return handler(request);
  });
  return () => spy.mockRestore();
}

/** The runner's 401 (as runner-auth.ts answers it) when `request` lacks the runner secret (the edge's by default); null when it has it. */
export function withoutRunnerSecret(request: Request, secret: string = env.RUNNER_SECRET): Response | null {
  if (request.headers.get(RUNNER_AUTH_HEADER) === runnerAuthorization(secret)[RUNNER_AUTH_HEADER]) return null;
  const error = { message: "The runner secret is wrong.", type: "authentication_error", param: null, code: INVALID_RUNNER_SECRET_CODE };
  return Response.json({ error }, { status: 401, headers: { "www-authenticate": "Bearer" } });
}
