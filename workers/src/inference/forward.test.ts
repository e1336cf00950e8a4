import { afterEach, describe, expect, it } from "vitest";
import { installFakeRunners } from "../../test/fake-runners.ts";
import type { RunnerInfo } from "../runners/registry.ts";
import { forwardToRunners } from "./forward.ts";

const runner = (url: string): RunnerInfo => ({ id: url, url, baseModel: null, basisId: null, running: 0, waiting: 0, failures: 0 }) as RunnerInfo;
const sse = () => new Response('data: {"choices":[]}\n\ndata: [DONE]\n\n', { headers: { "content-type": "text/event-stream" } });

describe("forwardToRunners", () => {
  let restore: () => void = () => {};
  afterEach(() => restore());

  it("moves on from a runner that accepts a streamed request and then sends nothing", async () => {
    const hung = (request: Request) =>
      new Promise<Response>((_, reject) => request.signal.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError"))));
    restore = installFakeRunners({ "http://hung.test": hung, "http://ok.test": sse });
    const failures: string[] = [];
    const result = await forwardToRunners(
      [runner("http://hung.test"), runner("http://ok.test")],
      { path: "/v1/completions", body: "{}", runnerSecret: "s", stream: true, requestId: "r1", headersTimeoutMs: 50 },
      {
        failed: (r, failure) => failures.push(`${r.url}: ${failure.reason} (down: ${failure.down})`),
        succeeded: () => undefined,
      },
    );
    expect(result.kind).toBe("stream");
    expect(result.runner.url).toBe("http://ok.test");
    // Slow is not dead: one failure, not out of the rotation.
    expect(failures).toEqual(["http://hung.test: http://hung.test sent no headers within 50 ms (down: false)"]);
  });

  it("reports a runner it cannot reach as down, and one answering 5xx as failed", async () => {
    const refused = () => Promise.reject(new TypeError("Network connection lost."));
    const broken = () => new Response("oops", { status: 502 });
    restore = installFakeRunners({ "http://gone.test": refused, "http://broken.test": broken, "http://ok.test": sse });
    const failures: string[] = [];
    const result = await forwardToRunners(
      [runner("http://gone.test"), runner("http://broken.test"), runner("http://ok.test")],
      { path: "/v1/completions", body: "{}", runnerSecret: "s", stream: true, requestId: "r2" },
      {
        failed: (r, failure) => failures.push(`${r.url} down: ${failure.down}`),
        succeeded: () => undefined,
      },
    );
    expect(result.runner.url).toBe("http://ok.test");
    expect(failures).toEqual(["http://gone.test down: true", "http://broken.test down: false"]);
  });
});
