import { SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { JSON_BODY_LIMIT, maxBodyBytes, UPLOAD_BODY_LIMIT } from "../src/http/policy.ts";
import { ADMIN, call, errorOf, tenantWithKey } from "./helpers.ts";

describe("request ids", () => {
  it("puts an x-request-id on every response, keeping a sane one the caller sent", async () => {
    const responses = [
      await call("GET", "/nowhere"),
      await call("GET", "/v1/webhooks"),
      await call("GET", "/openapi.json"),
      await call("POST", "/admin/tenants", { json: {} }),
    ];
    for (const response of responses) expect(response.headers.get("x-request-id"), String(response.status)).toMatch(/^[0-9a-f-]{36}$/);
    expect(new Set(responses.map((r) => r.headers.get("x-request-id"))).size).toBe(responses.length);
    const echoed = await call("GET", "/v1/webhooks", { headers: { "x-request-id": "client-trace-42" } });
    expect(echoed.headers.get("x-request-id")).toBe("client-trace-42");
    const replaced = await call("GET", "/v1/webhooks", { headers: { "x-request-id": "<script>" } });
    expect(replaced.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
  });
});

describe("CORS", () => {
  it("lets any origin call the public API with a bearer key, and exposes Retry-After and x-request-id", async () => {
    const preflight = await call("OPTIONS", "/v1/chat/completions", {
      headers: { origin: "https://app.example", "access-control-request-method": "POST", "access-control-request-headers": "authorization, content-type" },
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get("access-control-allow-origin")).toBe("*");
    expect(preflight.headers.get("access-control-allow-headers")?.toLowerCase()).toContain("authorization");
    expect(preflight.headers.get("access-control-allow-methods")).toContain("POST");
    const { key } = await tenantWithKey(["admin"]);
    const actual = await call("GET", "/v1/webhooks", { key, headers: { origin: "https://app.example" } });
    expect(actual.status).toBe(200);
    expect(actual.headers.get("access-control-allow-origin")).toBe("*");
    expect(actual.headers.get("access-control-expose-headers")?.toLowerCase()).toBe("retry-after,x-request-id");
    const refused = await call("GET", "/v1/webhooks", { headers: { origin: "https://app.example" } });
    expect(refused.status).toBe(401);
    expect(refused.headers.get("access-control-allow-origin")).toBe("*"); // a page can read why
  });

  it("gives /admin and /internal no CORS at all", async () => {
    for (const path of ["/admin/tenants", "/internal/runners"]) {
      const preflight = await call("OPTIONS", path, { headers: { origin: "https://app.example", "access-control-request-method": "POST" } });
      expect(preflight.headers.get("access-control-allow-origin"), path).toBeNull();
      const actual = await call("POST", path, { headers: { ...ADMIN, origin: "https://app.example" }, json: { name: "x" } });
      expect(actual.headers.get("access-control-allow-origin"), path).toBeNull();
    }
  });
});

describe("request body limits", () => {
  it("allows uploads more than JSON routes", () => {
    expect(maxBodyBytes("POST", "/v1/files")).toBe(UPLOAD_BODY_LIMIT);
    expect(maxBodyBytes("POST", "/v1/adapters/import")).toBe(UPLOAD_BODY_LIMIT);
    expect(maxBodyBytes("PUT", "/internal/jobs/j/adapter")).toBe(UPLOAD_BODY_LIMIT);
    expect(maxBodyBytes("POST", "/v1/chat/completions")).toBe(JSON_BODY_LIMIT);
    expect(maxBodyBytes("GET", "/v1/files")).toBe(JSON_BODY_LIMIT);
    expect(maxBodyBytes("POST", "/v1/files/x/content")).toBe(JSON_BODY_LIMIT);
  });

  it("refuses an oversized body with an OpenAI-shaped 413, by its length or while it streams", async () => {
    const { key } = await tenantWithKey(["admin"]);
    const big = JSON.stringify({ url: "https://example.com", padding: "x".repeat(JSON_BODY_LIMIT) });
    const declared = await call("POST", "/v1/webhooks", { key, headers: { "content-type": "application/json" }, body: big });
    expect(declared.status).toBe(413);
    expect(await errorOf(declared)).toMatchObject({ type: "invalid_request_error", code: "request_too_large" });
    expect(declared.headers.get("x-request-id")).toBeTruthy();

    const chunk = new TextEncoder().encode("x".repeat(256 * 1024));
    let sent = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent++ < 6) controller.enqueue(chunk);
        else controller.close();
      },
    });
    const streamed = await SELF.fetch("http://edge.test/v1/webhooks", {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: stream,
    });
    expect(streamed.status).toBe(413);

    // The same size is fine for a file upload (it fails later, for its own reasons, not as a 413).
    const upload = await call("POST", "/v1/files", { key, headers: { "content-type": "application/json" }, body: big });
    expect(upload.status).not.toBe(413);
  });
});
