import { createExecutionContext, env, waitOnExecutionContext } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import worker from "../src/index.ts";
import { ADMIN, call, errorOf, tenantWithKey } from "./helpers.ts";
import { eventually, readWithin, useFakeRunners } from "./inference-helpers.ts";

const runners = useFakeRunners();

const chat = (extra: Record<string, unknown> = {}) => ({ model: env.BASE_MODEL, messages: [{ role: "user", content: "hi" }], ...extra });

async function limitedTenant(limits: { requests_per_minute?: number; concurrent_streams?: number }) {
  const tenant = await tenantWithKey();
  const patched = await call("PATCH", `/admin/tenants/${tenant.tenantId}`, { headers: ADMIN, json: limits });
  expect(patched.status).toBe(200);
  return tenant;
}

/** Makes every runner hold its second chunk until the returned function is called. */
function holdStreams(): () => void {
  const releases: (() => void)[] = [];
  for (const runner of Object.values(runners))
    runner.behaviour = { kind: "hold_second_chunk", release: new Promise<void>((resolve) => releases.push(resolve)) };
  return () => releases.forEach((release) => release());
}

describe("per-tenant rate limits", () => {
  it("refuses requests over the per-minute limit with 429, Retry-After and an OpenAI-shaped error", async () => {
    const { key } = await limitedTenant({ requests_per_minute: 2 });
    const other = await limitedTenant({ requests_per_minute: 2 });
    for (let i = 0; i < 2; i++) expect((await call("POST", "/v1/chat/completions", { key, json: chat() })).status).toBe(200);
    const refused = await call("POST", "/v1/chat/completions", { key, json: chat() });
    expect(refused.status).toBe(429);
    const retryAfter = Number(refused.headers.get("retry-after"));
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(60);
    const error = await errorOf(refused);
    expect(error).toMatchObject({ type: "rate_limit_error", code: "rate_limit_exceeded", param: null });
    expect(error.message).toContain("requests per minute");
    expect(runners["http://runner-a.test"].hits + runners["http://runner-b.test"].hits).toBe(2); // the refused one never reached a runner
    // Limits are per tenant.
    expect((await call("POST", "/v1/chat/completions", { key: other.key, json: chat() })).status).toBe(200);
  });

  it("refuses a stream over the concurrency limit until one ends", async () => {
    const { key } = await limitedTenant({ concurrent_streams: 1 });
    const release = holdStreams();
    const open = await call("POST", "/v1/chat/completions", { key, json: chat({ stream: true }) });
    expect(open.status).toBe(200);
    const refused = await call("POST", "/v1/completions", { key, json: { model: env.BASE_MODEL, prompt: "x", stream: true } });
    expect(refused.status).toBe(429);
    expect(refused.headers.get("retry-after")).toBe("1");
    expect((await errorOf(refused)).message).toContain("concurrent");
    release();
    expect(await open.text()).toContain("[DONE]");
    await eventually(async () => (await call("POST", "/v1/chat/completions", { key, json: chat() })).status === 200);
  });

  it("frees the lease, and stops the runner's stream, when the client goes away mid-stream", async () => {
    const { key } = await limitedTenant({ concurrent_streams: 1 });
    holdStreams();
    // Called directly rather than through SELF, whose transport does not pass a client's cancel
    // back to the worker's body stream; here the cancel reaches it as a disconnect would.
    const context = createExecutionContext();
    const open = await worker.fetch(
      new Request("http://edge.test/v1/chat/completions", {
        method: "POST",
        headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
        body: JSON.stringify(chat({ stream: true })),
      }),
      env,
      context,
    );
    expect(open.status).toBe(200);
    const reader = open.body!.getReader();
    expect(await readWithin(reader, 10_000)).toContain("Hel");
    expect((await call("POST", "/v1/chat/completions", { key, json: chat() })).status).toBe(429);
    await reader.cancel();
    await waitOnExecutionContext(context); // the relay ends at once, not at the runner's next token
    expect(
      Object.values(runners)
        .map((runner) => runner.cancelledStreams)
        .sort(),
    ).toEqual([0, 1]);
    for (const runner of Object.values(runners)) runner.behaviour = { kind: "ok" };
    await eventually(async () => (await call("POST", "/v1/chat/completions", { key, json: chat() })).status === 200);
  });
});
