/**
 * Test doubles for runners: the worker under test runs in the same isolate as the tests, so its
 * outbound `fetch` can be routed to in-process handlers by origin. Anything else fails loudly.
 */
import { vi } from "vitest";

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
