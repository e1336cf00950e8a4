/**
 * A runner whose basis extends a smaller one (the same first rows) serves adapters trained
 * against the smaller basis: its heartbeat names the bases it extends, and the edge routes those
 * adapters to it, and only to runners that hold their rows.
 */
import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { call, tenantWithKey } from "./helpers.ts";
import { RUNNER_A, RUNNER_B, seedAdapter, useFakeRunners } from "./inference-helpers.ts";

const SECRET = { authorization: "Bearer test-runner-secret" };
const heartbeat = (id: string, url: string, basisId: string, compatible?: string[]) =>
  call("POST", "/internal/runners/heartbeat", {
    headers: SECRET,
    json: {
      id,
      url,
      base_model: env.BASE_MODEL,
      basis_id: basisId,
      running: 0,
      waiting: 0,
      resident_adapters: 0,
      ...(compatible === undefined ? {} : { compatible_basis_ids: compatible }),
    },
  });
const chat = (model: string) => ({ model, messages: [{ role: "user", content: "hi" }], max_tokens: 2 });

describe("adapters of a basis that a runner's basis extends", () => {
  const runners = useFakeRunners();

  it("go to the runner whose basis extends theirs, never to one with another basis", async () => {
    const { tenantId, key } = await tenantWithKey();
    await seedAdapter(tenantId, "trained-on-32-rows", { basisId: "basis-r32" });
    await seedAdapter(tenantId, "trained-on-128-rows", { basisId: "basis-r128" });
    expect((await heartbeat("a", RUNNER_A, "basis-r128", ["basis-r32"])).status).toBe(200);
    expect((await heartbeat("b", RUNNER_B, "basis-other")).status).toBe(200);
    for (let i = 0; i < 3; i++) {
      expect((await call("POST", "/v1/chat/completions", { key, json: chat("trained-on-32-rows") })).status).toBe(200);
      expect((await call("POST", "/v1/chat/completions", { key, json: chat("trained-on-128-rows") })).status).toBe(200);
    }
    expect(runners[RUNNER_A].hits).toBe(6);
    expect(runners[RUNNER_B].hits).toBe(0);
    const listed = (await (await call("GET", "/internal/runners", { headers: SECRET })).json()) as { data: Record<string, unknown>[] };
    expect(listed.data.find((runner) => runner.id === "a")!.compatible_basis_ids).toEqual(["basis-r32"]);
  });

  it("find no runner once the runner that extended their basis says it no longer does", async () => {
    const { tenantId, key } = await tenantWithKey();
    await seedAdapter(tenantId, "orphan", { basisId: "basis-r32" });
    expect((await heartbeat("a", RUNNER_A, "basis-r128")).status).toBe(200);
    expect((await heartbeat("b", RUNNER_B, "basis-other")).status).toBe(200);
    const response = await call("POST", "/v1/chat/completions", { key, json: chat("orphan") });
    expect(response.status).toBe(503);
    expect(runners[RUNNER_A].hits + runners[RUNNER_B].hits).toBe(0);
  });
});
