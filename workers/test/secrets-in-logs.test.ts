/**
 * Keys and secrets never reach the logs: everything the worker writes to the console while keys
 * are issued, used, refused, revoked and while runners fail is captured, and no line may hold a
 * tenant key (or its secret part), the admin token or the runner secret.
 */
import { afterEach, describe, expect, it, vi } from "vitest";
import { ADMIN, call, tenantWithKey } from "./helpers.ts";
import { fakeRunners, forgetRunners, seedAdapter } from "./inference-helpers.ts";

let restore: (() => void) | null = null;
afterEach(() => {
  restore?.();
  restore = null;
});

describe("secrets in logs", () => {
  it("no key, admin token or runner secret appears in anything the worker logs", async () => {
    await forgetRunners();
    const lines: string[] = [];
    const methods = ["log", "info", "warn", "error", "debug"] as const;
    const spies = methods.map((method) =>
      vi
        .spyOn(console, method)
        .mockImplementation(
          (...args: unknown[]) => void lines.push(args.map((arg) => (arg instanceof Error ? `${arg.message} ${arg.stack}` : String(arg))).join(" ")),
        ),
    );
    let key = "";
    try {
      const issued = await tenantWithKey(["admin"]);
      key = issued.key;
      const { runners, restore: uninstall } = fakeRunners();
      restore = uninstall;
      await seedAdapter(issued.tenantId, `ft:pica-base-4m:${issued.tenantId}:logs:job1`);
      expect((await call("GET", "/v1/models", { key })).status).toBe(200);
      // Runners failing (the edge logs each failure) and a request that fails whole.
      for (const runner of Object.values(runners)) runner.behaviour = { kind: "status", status: 500 };
      expect((await call("POST", "/v1/completions", { key, json: { model: `ft:pica-base-4m:${issued.tenantId}:logs:job1`, prompt: "x" } })).status).toBe(503);
      for (const runner of Object.values(runners)) runner.behaviour = { kind: "die_after_first_chunk" };
      await (await call("POST", "/v1/completions", { key, json: { model: "pica-base-4m", prompt: "x", stream: true } })).text();
      // Refusals: a key one character off, a malformed body, a revoked key.
      expect((await call("GET", "/v1/models", { key: `${key.slice(0, -1)}${key.endsWith("A") ? "B" : "A"}` })).status).toBe(401);
      expect((await call("POST", "/v1/completions", { key, body: "{not json", headers: { "content-type": "application/json" } })).status).toBe(400);
      expect((await call("DELETE", `/admin/tenants/${issued.tenantId}/keys/${issued.keyId}`, { headers: ADMIN })).status).toBe(200);
      expect((await call("GET", "/v1/models", { key })).status).toBe(401);
      expect((await call("POST", "/internal/runners/heartbeat", { headers: { authorization: "Bearer test-runner-secretX" }, json: {} })).status).toBe(401);
    } finally {
      for (const spy of spies) spy.mockRestore();
    }
    expect(lines.length).toBeGreaterThan(0); // the worker did log, so the check below can fail
    for (const secret of [key, key.slice("sk-pica-".length), "test-admin-token", "test-runner-secret"]) {
      expect(lines.filter((line) => line.includes(secret))).toEqual([]);
    }
  });
});
