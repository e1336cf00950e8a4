/**
 * Property-based hostile input against the edge's public and admin routes (the generator in
 * test/hostile-requests.ts: bodies with any field replaced or added, arbitrary, broken, deeply
 * nested and oversized JSON, odd query strings and path ids, garbage uploads, missing or forged
 * credentials). The answer is always a success or an OpenAI-shaped 4xx, never a 5xx. Runners are
 * fakes, so a valid request has somewhere to go. The chaos benchmark sends 10,000 of the same
 * requests to the running stack.
 */
import { SELF } from "cloudflare:test";
import fc from "fast-check";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { brokenPromise, hostileRequest, requestInit } from "../../test/hostile-requests.ts";
import { ADMIN, call, tenantWithKey } from "./helpers.ts";
import { fakeRunners, forgetRunners } from "./inference-helpers.ts";

describe("hostile input to the edge", () => {
  let key: string;
  let restore: () => void;
  beforeAll(async () => {
    ({ key } = await tenantWithKey(["admin"]));
    ({ restore } = fakeRunners());
  });
  beforeEach(async () => {
    await forgetRunners();
  });
  afterAll(() => restore());

  it("any hostile request is a success or an OpenAI-shaped 4xx", async () => {
    const adminToken = ADMIN.authorization.slice("Bearer ".length);
    await fc.assert(
      fc.asyncProperty(hostileRequest, async (request) => {
        const response = await SELF.fetch(`http://edge.test${request.path}`, requestInit(request, { key, adminToken }));
        expect(await brokenPromise(response), `${request.method} ${request.path.slice(0, 100)} ${(request.body ?? "").slice(0, 200)}`).toBeNull();
      }),
      { numRuns: 600 },
    );
  }, 240_000);

  it("the checker itself refuses a 5xx and a 4xx that is not OpenAI-shaped", async () => {
    expect(await brokenPromise(new Response("boom", { status: 500 }))).toMatch(/^500/);
    expect(await brokenPromise(new Response("nope", { status: 400 }))).toMatch(/not OpenAI-shaped|without an OpenAI-shaped error/);
    expect(await brokenPromise(Response.json({ error: { message: "m", type: "invalid_request_error" } }, { status: 400 }))).toBeNull();
  });

  it("a model id with CR/LF or other characters no id has is a 404 naming the field, never a 5xx", async () => {
    for (const id of ["a\r\nb", "ft:x\r\nSet-Cookie: y=1", "a\u0000b", "../../etc/passwd"]) {
      for (const [path, body, param] of [
        ["/v1/completions", { model: id, prompt: "hi" }, "model"],
        ["/v1/chat/completions", { model: id, messages: [{ role: "user", content: "hi" }] }, "model"],
        ["/v1/completions", { model: "x", adapter_id: id, prompt: "hi" }, "adapter_id"],
      ] as const) {
        const response = await call("POST", path, { key, json: body });
        expect(response.status, `${path} ${JSON.stringify(id)}`).toBe(404);
        expect(((await response.json()) as { error: Record<string, unknown> }).error).toMatchObject({ param, code: "model_not_found" });
      }
    }
  }, 60_000);

  it("an empty change to a tenant's limits is a 400, not a failed update", async () => {
    const { tenantId } = await tenantWithKey();
    const response = await call("PATCH", `/admin/tenants/${tenantId}`, { headers: ADMIN, json: {} });
    expect(response.status).toBe(400);
    expect(((await response.json()) as { error: { code: string } }).error.code).toBe("nothing_to_change");
  });
});
