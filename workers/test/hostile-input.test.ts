/**
 * Property-based hostile input against the edge's public routes: bodies with any field replaced by
 * anything, arbitrary JSON and broken JSON, odd query strings. The answer is always a success or
 * an OpenAI-shaped 4xx, never a 5xx. Runners are fakes, so a valid request has somewhere to go.
 */
import fc from "fast-check";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { ADMIN, call, tenantWithKey } from "./helpers.ts";
import { fakeRunners, forgetRunners } from "./inference-helpers.ts";

const anyValue = fc.oneof(
  fc.string({ unit: "grapheme", maxLength: 40 }),
  fc.string({ minLength: 2_000, maxLength: 5_000 }),
  fc.integer(),
  fc.constantFrom(-1, 0, 1, 2 ** 31, -(2 ** 53), 1e308, 0.5),
  fc.boolean(),
  fc.constant(null),
  fc.array(fc.oneof(fc.string({ maxLength: 10 }), fc.integer()), { maxLength: 4 }),
  fc.dictionary(fc.string({ maxLength: 8 }), fc.oneof(fc.string({ maxLength: 8 }), fc.integer()), { maxKeys: 3 }),
);

/** Routes with a valid body each; a property replaces one field of it. */
const ROUTES: { path: string; auth: "key" | "admin"; body: Record<string, unknown> }[] = [
  { path: "/v1/chat/completions", auth: "key", body: { model: "pica-base-4m", messages: [{ role: "user", content: "hi" }], max_tokens: 2 } },
  { path: "/v1/completions", auth: "key", body: { model: "pica-base-4m", prompt: "hi", max_tokens: 2 } },
  { path: "/v1/fine_tuning/jobs", auth: "key", body: { model: "pica-base-4m", training_file: "file-x", suffix: "s", hyperparameters: { n_epochs: 1 } } },
  { path: "/v1/webhooks", auth: "key", body: { url: "https://hooks.example/x", events: ["fine_tuning.job.succeeded"] } },
  { path: "/v1/api_keys", auth: "key", body: { name: "k", scopes: ["inference"] } },
  { path: "/admin/tenants", auth: "admin", body: { name: "t", requests_per_minute: 100 } },
];

describe("hostile input to the edge", () => {
  let key: string;
  let restore: () => void;
  beforeAll(async () => {
    ({ key } = await tenantWithKey(["admin"]));
  });
  beforeEach(async () => {
    await forgetRunners();
  });
  beforeAll(() => ({ restore } = fakeRunners()));
  afterAll(() => restore());

  async function expectNoServerError(response: Response, what: string): Promise<void> {
    expect(response.status, what).toBeLessThan(500);
    if (response.status >= 400) {
      const body = (await response.json()) as { error?: { message?: unknown; type?: unknown } };
      expect(typeof body.error?.message, what).toBe("string");
      expect(typeof body.error?.type, what).toBe("string");
    } else {
      await response.body?.cancel();
    }
  }

  it("a valid body with one field replaced by anything is a success or an OpenAI-shaped 4xx", async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...ROUTES), fc.string({ maxLength: 20 }), anyValue, fc.boolean(), fc.nat(), async (route, field, value, known, index) => {
        const keys = Object.keys(route.body);
        const name = known ? keys[index % keys.length] : field; // a field the route knows, or any name
        const body = { ...route.body, [name]: value };
        const auth = route.auth === "admin" ? { headers: ADMIN } : { key };
        await expectNoServerError(await call("POST", route.path, { ...auth, json: body }), `${route.path} ${JSON.stringify(body).slice(0, 200)}`);
      }),
      { numRuns: 250 },
    );
  }, 120_000);

  it("arbitrary JSON, broken JSON and deep nesting are 4xx on every body route", async () => {
    const nested = "[".repeat(3_000) + "]".repeat(3_000);
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...ROUTES), fc.oneof(fc.json(), fc.string({ maxLength: 100 }), fc.constant(nested)), async (route, body) => {
        const auth = route.auth === "admin" ? { headers: { ...ADMIN, "content-type": "application/json" } } : { key, headers: { "content-type": "application/json" } };
        const response = await call("POST", route.path, { ...auth, body });
        await expectNoServerError(response, `${route.path} ${body.slice(0, 100)}`);
      }),
      { numRuns: 150 },
    );
  }, 120_000);

  it("an empty change to a tenant's limits is a 400, not a failed update", async () => {
    const { tenantId } = await tenantWithKey();
    const response = await call("PATCH", `/admin/tenants/${tenantId}`, { headers: ADMIN, json: {} });
    expect(response.status).toBe(400);
    expect(((await response.json()) as { error: { code: string } }).error.code).toBe("nothing_to_change");
  });

  it("odd query strings on list routes are a success or a 4xx", async () => {
    const paths = ["/v1/files", "/v1/fine_tuning/jobs", "/v1/adapters", "/v1/usage", "/v1/webhooks", "/v1/fine_tuning/jobs/ftjob-x/events"];
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...paths), fc.dictionary(fc.constantFrom("limit", "after", "start_time", "end_time", "purpose", "x"), fc.oneof(fc.string({ maxLength: 30 }), fc.integer().map(String))), async (path, query) => {
        const response = await call("GET", `${path}?${new URLSearchParams(query)}`, { key });
        await expectNoServerError(response, `${path}?${new URLSearchParams(query)}`);
      }),
      { numRuns: 150 },
    );
  }, 120_000);
});
