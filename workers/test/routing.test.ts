import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { call, errorOf, tenantWithKey } from "./helpers.ts";
import { MAX_CONSECUTIVE_FAILURES } from "../src/runners/registry.ts";
import { parseSseData } from "../../src/protocol/sse.ts";
import { eventually, otherRunner, preferredRunner, RUNNER_A, RUNNER_B, seedAdapter, useFakeRunners } from "./inference-helpers.ts";

const RUNNER_C = "http://runner-c.test";
const SECRET = { authorization: "Bearer test-runner-secret" };

const runners = useFakeRunners([RUNNER_C]);

const chat = (model: string, extra: Record<string, unknown> = {}) => ({ model, messages: [{ role: "user", content: "hi" }], ...extra });

async function failures(url: string): Promise<number | null> {
  const row = await env.DB.prepare("SELECT failures FROM runners WHERE url = ?").bind(url).first<{ failures: number }>();
  return row?.failures ?? null;
}

/** A tenant with `count` adapters, whose preferred runners cover both listed runners. */
async function tenantWithAdapters(count: number) {
  const tenant = await tenantWithKey();
  // Ids hash to runners at random (the tenant id is random), so pick half for each runner.
  const ids: string[] = [];
  const perRunner = new Map<string, number>();
  for (let i = 0; ids.length < count; i++) {
    const id = `ft:${env.BASE_MODEL}:${tenant.tenantId}:a${i}:job${i}`;
    const runner = preferredRunner(id);
    if ((perRunner.get(runner) ?? 0) >= count / 2) continue;
    perRunner.set(runner, (perRunner.get(runner) ?? 0) + 1);
    ids.push(id);
  }
  for (const id of ids) await seedAdapter(tenant.tenantId, id);
  return { ...tenant, ids };
}

function heartbeat(overrides: Record<string, unknown> = {}) {
  return { id: "runner-c", url: RUNNER_C, base_model: env.BASE_MODEL, basis_id: "basis-1", running: 0, waiting: 0, resident_adapters: 0, ...overrides };
}

describe("routing by adapter affinity", () => {
  it("sends the same adapter to the same runner every time, and spreads adapters over both", async () => {
    const { key, ids } = await tenantWithAdapters(8);
    for (let round = 0; round < 3; round++) {
      for (const id of ids) expect((await call("POST", "/v1/chat/completions", { key, json: chat(id, { stream: round === 1 }) })).status).toBe(200);
    }
    for (const id of ids) {
      const servedBy = Object.values(runners).filter((runner) => runner.received.some((request) => request.body.model === id));
      expect(servedBy.map((runner) => runner.origin)).toEqual([preferredRunner(id)]);
      expect(servedBy[0].received.filter((request) => request.body.model === id)).toHaveLength(3);
    }
    expect(runners[RUNNER_A].hits).toBeGreaterThan(0);
    expect(runners[RUNNER_B].hits).toBeGreaterThan(0);
    expect(runners[RUNNER_C].hits).toBe(0); // neither listed nor heartbeating
  });
});

describe("failover", () => {
  it("retries the next runner when one fails before the first byte, and counts the failure", async () => {
    const { key, ids } = await tenantWithAdapters(1);
    const preferred = preferredRunner(ids[0]);
    const fallback = otherRunner(preferred);
    // Soft failures count one each; a runner that cannot be reached is down: out at once.
    for (const [behaviour, stream, expected] of [
      [{ kind: "status", status: 503 }, false, 1],
      [{ kind: "close_after", events: 0 }, true, 2], // a 200 whose stream ends before its first byte
      [{ kind: "network_error" }, true, MAX_CONSECUTIVE_FAILURES],
    ] as const) {
      runners[preferred].behaviour = behaviour;
      const fallbackHits = runners[fallback].hits;
      const response = await call("POST", "/v1/chat/completions", { key, json: chat(ids[0], { stream }) });
      expect(response.status).toBe(200);
      expect(await response.text()).toContain("Hel");
      expect(runners[fallback].hits).toBe(fallbackHits + 1);
      await eventually(async () => (await failures(preferred)) === expected); // recorded after the response
    }
    expect(await failures(fallback)).toBeNull();
  });

  it("takes a runner out after three failures in a row; a heartbeat brings it back", async () => {
    const { key, ids } = await tenantWithAdapters(1);
    const preferred = preferredRunner(ids[0]);
    runners[preferred].behaviour = { kind: "status", status: 502 };
    for (let i = 0; i < 3; i++) expect((await call("POST", "/v1/completions", { key, json: { model: ids[0], prompt: "x" } })).status).toBe(200);
    await eventually(async () => (await failures(preferred)) === 3);
    const tried = runners[preferred].hits;
    runners[preferred].behaviour = { kind: "ok" };
    expect((await call("POST", "/v1/completions", { key, json: { model: ids[0], prompt: "x" } })).status).toBe(200);
    expect(runners[preferred].hits).toBe(tried); // out of the rotation: not even tried
    const beat = await call("POST", "/internal/runners/heartbeat", { headers: SECRET, json: heartbeat({ id: "preferred", url: preferred }) });
    expect(beat.status).toBe(200);
    expect(await failures(preferred)).toBe(0);
    expect((await call("POST", "/v1/completions", { key, json: { model: ids[0], prompt: "x" } })).status).toBe(200);
    expect(runners[preferred].hits).toBe(tried + 1);
  });

  it("takes a runner that dies mid-stream out at once: the client gets an error event, the next request for that adapter goes to the other runner", async () => {
    const { key, ids } = await tenantWithAdapters(1);
    const preferred = preferredRunner(ids[0]);
    const fallback = otherRunner(preferred);
    runners[preferred].behaviour = { kind: "die_after_first_chunk" };
    const events = parseSseData(await (await call("POST", "/v1/chat/completions", { key, json: chat(ids[0], { stream: true }) })).text());
    expect(events).toHaveLength(2);
    expect(JSON.parse(events[1]).error.code).toBe("runner_failed");
    await eventually(async () => (await failures(preferred)) === MAX_CONSECUTIVE_FAILURES);
    const listed = (await (await call("GET", "/internal/runners", { headers: SECRET })).json()) as { data: { url: string; in_rotation: boolean }[] };
    expect(listed.data.find((row) => row.url === preferred)?.in_rotation).toBe(false);
    const preferredHits = runners[preferred].hits;
    const fallbackHits = runners[fallback].hits;
    const next = await call("POST", "/v1/chat/completions", { key, json: chat(ids[0], { stream: true }) });
    expect(next.status).toBe(200);
    expect(parseSseData(await next.text()).at(-1)).toBe("[DONE]");
    expect(runners[preferred].hits).toBe(preferredHits); // not even tried
    expect(runners[fallback].hits).toBe(fallbackHits + 1);
  });

  it("passes a runner's 4xx through without trying another runner", async () => {
    const { key, ids } = await tenantWithAdapters(1);
    const preferred = preferredRunner(ids[0]);
    runners[preferred].behaviour = {
      kind: "status",
      status: 429,
      headers: { "retry-after": "3" },
      body: { error: { message: "queue full", type: "rate_limit_error", param: null, code: "queue_full" } },
    };
    const response = await call("POST", "/v1/chat/completions", { key, json: chat(ids[0], { stream: true }) });
    expect(response.status).toBe(429);
    expect(response.headers.get("retry-after")).toBe("3");
    expect((await errorOf(response)).code).toBe("queue_full");
    expect(runners[otherRunner(preferred)].hits).toBe(0);
    expect(await failures(preferred)).toBeNull();
  });

  it("answers 503 (OpenAI-shaped) when every runner fails", async () => {
    const { key } = await tenantWithKey();
    for (const runner of Object.values(runners)) runner.behaviour = { kind: "status", status: 500 };
    const response = await call("POST", "/v1/chat/completions", { key, json: chat(env.BASE_MODEL) });
    expect(response.status).toBe(503);
    expect(await errorOf(response)).toMatchObject({ type: "server_error", code: "runner_unavailable" });
    expect(runners[RUNNER_A].hits + runners[RUNNER_B].hits).toBe(2);
  });
});

describe("runner heartbeats", () => {
  it("need the runner secret and a valid body", async () => {
    expect((await call("POST", "/internal/runners/heartbeat", { json: heartbeat() })).status).toBe(401);
    expect((await call("POST", "/internal/runners/heartbeat", { headers: { authorization: "Bearer nope" }, json: heartbeat() })).status).toBe(401);
    const bad = await call("POST", "/internal/runners/heartbeat", { headers: SECRET, json: heartbeat({ running: -1 }) });
    expect(bad.status).toBe(400);
    expect((await errorOf(bad)).param).toBe("running");
    const badUrl = await call("POST", "/internal/runners/heartbeat", { headers: SECRET, json: heartbeat({ url: "ftp://x" }) });
    expect((await errorOf(badUrl)).param).toBe("url");
  });

  it("bring a new runner into the rotation and record what it reports", async () => {
    expect(
      (await call("POST", "/internal/runners/heartbeat", { headers: SECRET, json: heartbeat({ running: 2, waiting: 1, resident_adapters: 5 }) })).status,
    ).toBe(200);
    const listed = (await (await call("GET", "/internal/runners", { headers: SECRET })).json()) as { data: Record<string, unknown>[] };
    expect(listed.data).toEqual([
      expect.objectContaining({
        id: "runner-c",
        url: RUNNER_C,
        base_model: env.BASE_MODEL,
        basis_id: "basis-1",
        running: 2,
        waiting: 1,
        resident_adapters: 5,
        failures: 0,
        in_rotation: true,
      }),
    ]);
    // Some adapter now prefers runner C, and goes there.
    const { key, ids } = await tenantWithAdapters(12);
    const onC = ids.filter((id) => preferredRunner(id, [RUNNER_A, RUNNER_B, RUNNER_C]) === RUNNER_C);
    expect(onC.length).toBeGreaterThan(0);
    for (const id of onC) expect((await call("POST", "/v1/chat/completions", { key, json: chat(id) })).status).toBe(200);
    expect(runners[RUNNER_C].hits).toBe(onC.length);
  });

  it("route only to runners with the adapter's base model and basis", async () => {
    const tenant = await tenantWithKey();
    expect((await call("POST", "/internal/runners/heartbeat", { headers: SECRET, json: heartbeat() })).status).toBe(200);
    await seedAdapter(tenant.tenantId, "other-base", { baseModel: "some-other-base", basisId: "basis-9" });
    const noRunner = await call("POST", "/v1/chat/completions", { key: tenant.key, json: chat("other-base") });
    // The listed runners' base model is unknown (no heartbeat), so they may try; runner C says it serves another base.
    expect(noRunner.status).toBe(200);
    expect(runners[RUNNER_C].hits).toBe(0);
    await call("POST", "/internal/runners/heartbeat", {
      headers: SECRET,
      json: heartbeat({ id: "a", url: RUNNER_A, base_model: "some-other-base", basis_id: "basis-2" }),
    });
    await call("POST", "/internal/runners/heartbeat", {
      headers: SECRET,
      json: heartbeat({ id: "b", url: RUNNER_B, base_model: "some-other-base", basis_id: "basis-9" }),
    });
    const before = runners[RUNNER_B].hits;
    for (let i = 0; i < 3; i++) expect((await call("POST", "/v1/chat/completions", { key: tenant.key, json: chat("other-base") })).status).toBe(200);
    expect(runners[RUNNER_B].hits).toBe(before + 3);
    const base = await call("POST", "/v1/chat/completions", { key: tenant.key, json: chat(env.BASE_MODEL) });
    expect(base.status).toBe(200); // only runner C serves the base model now
    expect(runners[RUNNER_C].hits).toBe(1);
  });
});
