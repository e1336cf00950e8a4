import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { FAKE_PIECES, FAKE_USAGE } from "./fake-openai-runner.ts";
import { parseSseData } from "../../src/protocol/sse.ts";
import { preferredRunner, readWithin, seedAdapter, eventually, useFakeRunners } from "./inference-helpers.ts";
import { ADMIN, call, errorOf, tenantWithKey } from "./helpers.ts";

const runners = useFakeRunners();

const chat = (model: string, extra: Record<string, unknown> = {}) => ({ model, messages: [{ role: "user", content: "hi" }], ...extra });
const totalHits = () => Object.values(runners).reduce((sum, runner) => sum + runner.hits, 0);

async function usageRows(tenantId: string) {
  return (
    await env.DB.prepare("SELECT model, request_id, prompt_tokens, completion_tokens FROM usage WHERE tenant_id = ?")
      .bind(tenantId)
      .all<Record<string, unknown>>()
  ).results;
}

describe("streamed inference", () => {
  it("streams the runner's events through, always asks it for usage, and drops the usage chunk unless asked", async () => {
    const { tenantId, key } = await tenantWithKey();
    const response = await call("POST", "/v1/chat/completions", { key, json: chat(env.BASE_MODEL, { stream: true }) });
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/^text\/event-stream/);
    const requestId = response.headers.get("x-request-id");
    expect(requestId).toBeTruthy();
    const events = parseSseData(await response.text());
    expect(events.at(-1)).toBe("[DONE]");
    const chunks = events.slice(0, -1).map((data) => JSON.parse(data) as { choices: { delta: { content?: string } }[]; usage?: unknown });
    expect(chunks.map((chunk) => chunk.choices[0]?.delta.content ?? "").join("")).toBe(FAKE_PIECES.join(""));
    expect(chunks.some((chunk) => chunk.usage !== undefined)).toBe(false);
    const sent = Object.values(runners).flatMap((runner) => runner.received);
    expect(sent).toHaveLength(1);
    expect(sent[0].body.stream_options).toEqual({ include_usage: true });
    await eventually(async () => (await usageRows(tenantId)).length === 1);
    expect(await usageRows(tenantId)).toEqual([
      { model: env.BASE_MODEL, request_id: requestId, prompt_tokens: FAKE_USAGE.prompt_tokens, completion_tokens: FAKE_USAGE.completion_tokens },
    ]);
  });

  it("passes the usage chunk on when the client asks for it (text completions too)", async () => {
    const { key } = await tenantWithKey();
    const response = await call("POST", "/v1/completions", {
      key,
      json: { model: env.BASE_MODEL, prompt: "Once", stream: true, stream_options: { include_usage: true } },
    });
    expect(response.status).toBe(200);
    const events = parseSseData(await response.text());
    expect(events.at(-1)).toBe("[DONE]");
    const usageChunk = JSON.parse(events.at(-2)!) as { choices: unknown[]; usage: unknown };
    expect(usageChunk.choices).toEqual([]);
    expect(usageChunk.usage).toEqual(FAKE_USAGE);
  });

  it("passes bytes on as they come: the first chunk arrives while the runner still holds the second", async () => {
    const { key } = await tenantWithKey();
    const releases: (() => void)[] = [];
    for (const runner of Object.values(runners))
      runner.behaviour = { kind: "hold_second_chunk", release: new Promise<void>((resolve) => releases.push(resolve)) };
    const response = await call("POST", "/v1/chat/completions", { key, json: chat(env.BASE_MODEL, { stream: true }) });
    const reader = response.body!.getReader();
    const first = await readWithin(reader, 10_000);
    expect(first).toContain(`"content":"${FAKE_PIECES[0]}"`);
    expect(first).not.toContain(FAKE_PIECES[1]);
    for (const resolve of releases) resolve();
    let rest = "";
    for (let chunk = await readWithin(reader, 10_000); chunk !== ""; chunk = await readWithin(reader, 10_000)) rest += chunk;
    expect(rest).toContain(`"content":"${FAKE_PIECES[1]}"`);
    expect(rest.trimEnd().endsWith("data: [DONE]")).toBe(true);
  });

  it("ends the stream with an OpenAI-shaped error event when the runner dies mid-stream, and frees the lease", async () => {
    const { tenantId, key } = await tenantWithKey();
    expect((await call("PATCH", `/admin/tenants/${tenantId}`, { headers: ADMIN, json: { concurrent_streams: 1 } })).status).toBe(200);
    for (const runner of Object.values(runners)) runner.behaviour = { kind: "die_after_first_chunk" };
    const response = await call("POST", "/v1/chat/completions", { key, json: chat(env.BASE_MODEL, { stream: true }) });
    expect(response.status).toBe(200);
    const events = parseSseData(await response.text());
    expect(events).toHaveLength(2);
    expect(JSON.parse(events[0]).choices[0].delta.content).toBe(FAKE_PIECES[0]);
    const error = JSON.parse(events[1]) as { error: { type: string; code: string; message: string } };
    expect(error.error.type).toBe("server_error");
    expect(error.error.code).toBe("runner_failed");
    expect(events).not.toContain("[DONE]");
    // The lease went back: with a limit of one stream, the next request is admitted.
    for (const runner of Object.values(runners)) runner.behaviour = { kind: "ok" };
    await eventually(async () => (await call("POST", "/v1/chat/completions", { key, json: chat(env.BASE_MODEL) })).status === 200);
  });

  it("treats a stream that ends without [DONE] as a failed runner", async () => {
    const { key } = await tenantWithKey();
    for (const runner of Object.values(runners)) runner.behaviour = { kind: "close_after", events: 2 };
    const events = parseSseData(await (await call("POST", "/v1/completions", { key, json: { model: env.BASE_MODEL, prompt: "x", stream: true } })).text());
    expect(events).toHaveLength(3);
    expect(JSON.parse(events[2]).error.code).toBe("runner_failed");
  });

  it("answers non-streamed requests as JSON and records their usage", async () => {
    const { tenantId, key } = await tenantWithKey();
    await seedAdapter(tenantId, `ft:${env.BASE_MODEL}:${tenantId}:json:job1`);
    const response = await call("POST", "/v1/completions", {
      key,
      json: { model: env.BASE_MODEL, adapter_id: `ft:${env.BASE_MODEL}:${tenantId}:json:job1`, prompt: "Once" },
    });
    expect(response.status).toBe(200);
    const body = (await response.json()) as { object: string; choices: { text: string }[]; usage: unknown };
    expect(body.object).toBe("text_completion");
    expect(body.choices[0].text).toBe(FAKE_PIECES.join(""));
    expect(body.usage).toEqual(FAKE_USAGE);
    await eventually(async () => (await usageRows(tenantId)).length === 1);
    expect((await usageRows(tenantId))[0].model).toBe(`ft:${env.BASE_MODEL}:${tenantId}:json:job1`);
  });
});

describe("who may use which model", () => {
  it("serves the tenant's own adapter and refuses another tenant's or an unknown one with 404, never the base model", async () => {
    const owner = await tenantWithKey();
    const other = await tenantWithKey();
    const adapter = `ft:${env.BASE_MODEL}:${owner.tenantId}:mine:job1`;
    await seedAdapter(owner.tenantId, adapter);
    const own = await call("POST", "/v1/chat/completions", { key: owner.key, json: chat(adapter) });
    expect(own.status).toBe(200);
    expect(runners[preferredRunner(adapter)].received.at(-1)!.body.model).toBe(adapter);
    const hitsBefore = totalHits();
    const foreign = await call("POST", "/v1/chat/completions", { key: other.key, json: chat(adapter) });
    expect(foreign.status).toBe(404);
    expect(await errorOf(foreign)).toMatchObject({ type: "not_found_error", code: "model_not_found", param: "model" });
    const viaAdapterId = await call("POST", "/v1/chat/completions", { key: other.key, json: chat(env.BASE_MODEL, { adapter_id: adapter }) });
    expect(viaAdapterId.status).toBe(404);
    expect((await errorOf(viaAdapterId)).param).toBe("adapter_id");
    expect((await call("POST", "/v1/completions", { key: owner.key, json: { model: "ft:nope", prompt: "x" } })).status).toBe(404);
    expect(totalHits()).toBe(hitsBefore); // nothing reached a runner
  });

  it("refuses an adapter that is not ready", async () => {
    const { tenantId, key } = await tenantWithKey();
    await seedAdapter(tenantId, "imported-pending", { status: "importing" });
    expect((await call("POST", "/v1/chat/completions", { key, json: chat("imported-pending") })).status).toBe(404);
  });

  it("refuses revoked keys, and keys without the inference scope", async () => {
    const { tenantId, key, keyId } = await tenantWithKey();
    expect((await call("POST", "/v1/chat/completions", { key, json: chat(env.BASE_MODEL) })).status).toBe(200);
    expect((await call("DELETE", `/admin/tenants/${tenantId}/keys/${keyId}`, { headers: ADMIN })).status).toBe(200);
    const revoked = await call("POST", "/v1/chat/completions", { key, json: chat(env.BASE_MODEL) });
    expect(revoked.status).toBe(401);
    expect((await errorOf(revoked)).type).toBe("authentication_error");
    expect((await call("GET", "/v1/models", { key })).status).toBe(401);
    const fineTuningOnly = await tenantWithKey(["fine_tuning"]);
    expect((await call("POST", "/v1/completions", { key: fineTuningOnly.key, json: { model: env.BASE_MODEL, prompt: "x" } })).status).toBe(403);
  });

  it("lists the base model and the tenant's ready adapters only", async () => {
    const owner = await tenantWithKey();
    const other = await tenantWithKey();
    await seedAdapter(owner.tenantId, "ready-one");
    await seedAdapter(owner.tenantId, "pending-one", { status: "importing" });
    await seedAdapter(other.tenantId, "someone-elses");
    const listed = (await (await call("GET", "/v1/models", { key: owner.key })).json()) as { object: string; data: { id: string; owned_by: string }[] };
    expect(listed.object).toBe("list");
    expect(listed.data.map((model) => model.id)).toEqual([env.BASE_MODEL, "ready-one"]);
    expect(listed.data[1].owned_by).toBe(owner.tenantId);
    expect((await call("GET", "/v1/models/ready-one", { key: owner.key })).status).toBe(200);
    expect((await call("GET", "/v1/models/someone-elses", { key: owner.key })).status).toBe(404);
    expect((await call("GET", `/v1/models/${env.BASE_MODEL}`, { key: owner.key })).status).toBe(200);
  });
});

describe("bad input", () => {
  it("is a 4xx naming the field, never a 5xx, and never reaches a runner", async () => {
    const { key } = await tenantWithKey();
    const cases: [string, unknown, string | null][] = [
      ["/v1/chat/completions", { model: env.BASE_MODEL }, "messages"],
      ["/v1/chat/completions", chat(env.BASE_MODEL, { temperature: 5 }), "temperature"],
      ["/v1/chat/completions", { messages: [{ role: "user", content: "x" }] }, "model"],
      ["/v1/chat/completions", chat(env.BASE_MODEL, { messages: [{ role: "wizard", content: "x" }] }), "messages[0].role"],
      ["/v1/chat/completions", chat(env.BASE_MODEL, { stream_options: { include_usage: true } }), "stream_options"],
      ["/v1/completions", { model: env.BASE_MODEL, prompt: [1, 2, 3] }, "prompt"],
      ["/v1/completions", { model: env.BASE_MODEL, prompt: "x", max_tokens: 0 }, "max_tokens"],
      ["/v1/completions", [1, 2], null],
    ];
    for (const [path, json, param] of cases) {
      const response = await call("POST", path, { key, json });
      expect(response.status, JSON.stringify(json)).toBe(400);
      expect((await errorOf(response)).param, JSON.stringify(json)).toBe(param);
    }
    const notJson = await call("POST", "/v1/chat/completions", { key, body: "{nope", headers: { "content-type": "application/json" } });
    expect(notJson.status).toBe(400);
    expect(totalHits()).toBe(0);
  });
});
