import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { ADMIN, call, errorOf, tenantWithKey } from "./helpers.ts";

describe("tenants and API keys", () => {
  it("creates a tenant and a key shown once, stored only as its hash", async () => {
    const { tenantId, key, keyId } = await tenantWithKey(["admin"]);
    expect(key).toMatch(/^sk-pica-[A-Za-z0-9_-]{43}$/);
    const stored = await env.DB.prepare("SELECT * FROM api_keys WHERE id = ?").bind(keyId).first<Record<string, unknown>>();
    expect(JSON.stringify(stored)).not.toContain(key);
    expect(stored!.hash).toMatch(/^[0-9a-f]{64}$/);
    const listed = await (await call("GET", `/admin/tenants/${tenantId}/keys`, { headers: ADMIN })).text();
    expect(listed).not.toContain(key);
    expect(listed).toContain(key.slice(0, 20));
    const own = await (await call("GET", "/v1/api_keys", { key })).text();
    expect(own).not.toContain(key);
  });

  it("refuses missing, malformed, unknown and revoked keys with 401, and missing scopes with 403", async () => {
    const { key, keyId, tenantId } = await tenantWithKey(["inference"]);
    expect((await call("GET", "/v1/api_keys")).status).toBe(401);
    expect((await call("GET", "/v1/api_keys", { key: "nonsense" })).status).toBe(401);
    expect((await call("GET", "/v1/api_keys", { key: `sk-pica-${"A".repeat(43)}` })).status).toBe(401);
    const scoped = await call("GET", "/v1/api_keys", { key });
    expect(scoped.status).toBe(403);
    expect((await errorOf(scoped)).code).toBe("insufficient_scope");
    expect((await call("DELETE", `/admin/tenants/${tenantId}/keys/${keyId}`, { headers: ADMIN })).status).toBe(200);
    const revoked = await call("GET", "/v1/api_keys", { key });
    expect(revoked.status).toBe(401);
    expect((await errorOf(revoked)).type).toBe("authentication_error");
  });

  it("admin routes need the admin token; bad bodies are 400s naming the field", async () => {
    expect((await call("POST", "/admin/tenants", { json: { name: "x" } })).status).toBe(401);
    expect((await call("POST", "/admin/tenants", { headers: { authorization: "Bearer wrong" }, json: { name: "x" } })).status).toBe(401);
    const bad = await call("POST", "/admin/tenants", { headers: ADMIN, json: { name: "" } });
    expect(bad.status).toBe(400);
    expect((await errorOf(bad)).param).toBe("name");
    const scopes = await call("POST", "/admin/tenants/tenant_x/keys", { headers: ADMIN, json: { scopes: ["root"] } });
    expect(scopes.status).toBe(404);
    const { tenantId } = await tenantWithKey();
    const badScope = await call("POST", `/admin/tenants/${tenantId}/keys`, { headers: ADMIN, json: { scopes: ["root"] } });
    expect((await errorOf(badScope)).param).toBe("scopes[0]");
    expect((await call("POST", "/admin/tenants", { headers: ADMIN, body: "{not json" })).status).toBe(400);
  });
});
