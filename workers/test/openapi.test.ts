import { Validator } from "@cfworker/json-schema";
import { describe, expect, it } from "vitest";
import { app } from "../src/index.ts";
import { OPERATIONS } from "../src/openapi/operations.ts";
import { call, tenantWithKey } from "./helpers.ts";

type Document = {
  openapi: string;
  security: unknown[];
  paths: Record<string, Record<string, { requestBody?: { content: Record<string, { schema: { $ref: string } }> }; responses: Record<string, unknown> }>>;
  components: { schemas: Record<string, unknown>; securitySchemes: Record<string, { scheme: string }> };
};

async function fetchDocument(): Promise<Document> {
  const response = await call("GET", "/openapi.json");
  expect(response.status).toBe(200);
  return (await response.json()) as Document;
}

/** A validator for one of the document's request schemas, with its references resolved in place. */
function requestValidator(document: Document, path: string, method: string): Validator {
  const ref = document.paths[path][method].requestBody!.content["application/json"].schema.$ref;
  const defs = JSON.parse(JSON.stringify(document.components.schemas).replaceAll('"#/components/schemas/', '"#/$defs/')) as Record<string, unknown>;
  return new Validator({ $ref: ref.replace("#/components/schemas/", "#/$defs/"), $defs: defs }, "2020-12", false);
}

// `/v1/files/:id` and `/v1/files/{file_id}` both read `/v1/files/{}`.
const normalise = (path: string) =>
  path
    .replace(/:\w+(\{[^}]*\})?/g, "{}")
    .replace(/\{\w+\}/g, "{}")
    .replace(/\/$/, "");

describe("the OpenAPI document", () => {
  it("describes every mounted public route, with bearer security and the error schema", async () => {
    const document = await fetchDocument();
    expect(document.openapi).toBe("3.1.0");
    expect(document.security).toEqual([{ bearerAuth: [] }]);
    expect(document.components.securitySchemes.bearerAuth.scheme).toBe("bearer");
    expect(document.components.schemas.Error).toMatchObject({ properties: { error: { required: ["message", "type", "param", "code"] } } });

    const documented = new Set(
      Object.entries(document.paths).flatMap(([path, methods]) => Object.keys(methods).map((method) => `${method.toUpperCase()} ${normalise(path)}`)),
    );
    const mounted = new Set(
      app.routes.filter((route) => route.method !== "ALL" && route.path.startsWith("/v1/")).map((route) => `${route.method} ${normalise(route.path)}`),
    );
    expect(mounted.size).toBeGreaterThan(10);
    expect(
      [...mounted].filter((route) => !documented.has(route)),
      "mounted, not documented",
    ).toEqual([]);
    expect(
      [...documented].filter((route) => !mounted.has(route)),
      "documented, not mounted",
    ).toEqual([]);
    for (const [path, methods] of Object.entries(document.paths)) {
      for (const [method, operation] of Object.entries(methods)) {
        expect(operation.responses["401"], `${method} ${path}`).toEqual({ $ref: "#/components/responses/401" });
        const success = Object.entries(operation.responses).filter(([status]) => status.startsWith("2"));
        expect(success, `${method} ${path}`).toHaveLength(1);
        const content = (success[0][1] as { content: Record<string, { schema?: unknown }> }).content;
        if (content["application/json"] !== undefined) expect(content["application/json"].schema, `${method} ${path}`).toBeDefined();
      }
    }
  });

  it("asks each operation for the scope it documents, and refuses a key with another", async () => {
    const scopes = ["inference", "fine_tuning", "admin"] as const;
    const keys = Object.fromEntries(await Promise.all(scopes.map(async (scope) => [scope, (await tenantWithKey([scope])).key] as const)));
    const other = { inference: "fine_tuning", fine_tuning: "inference", admin: "inference" } as const;
    for (const operation of OPERATIONS) {
      const name = `${operation.method} ${operation.path}`;
      // Unknown ids and empty bodies: the scope is checked first, and nothing is changed.
      const path = operation.path.replace(/\{\w+\}/g, "nothing-by-this-id");
      const body = operation.request?.contentType === "application/json" ? { json: {} } : {};
      const refused = await call(operation.method.toUpperCase(), path, { key: keys[other[operation.scope]], ...body });
      expect(refused.status, `${name} with a ${other[operation.scope]} key`).toBe(403);
      const allowed = await call(operation.method.toUpperCase(), path, { key: keys[operation.scope], ...body });
      expect([401, 403], `${name} with a ${operation.scope} key: ${allowed.status}`).not.toContain(allowed.status);
    }
  }, 120_000);

  it("has request schemas that reject what the routes reject, and accept what they accept", async () => {
    const document = await fetchDocument();
    const { key } = await tenantWithKey(["admin"]);
    const cases: [string, unknown][] = [
      ["/v1/webhooks", { url: "https://example.com/hooks" }],
      ["/v1/webhooks", { url: "https://example.com/hooks", events: ["fine_tuning.job.failed"] }],
      ["/v1/webhooks", { events: ["fine_tuning.job.failed"] }],
      ["/v1/webhooks", { url: "https://example.com/hooks", events: [] }],
      ["/v1/webhooks", { url: "https://example.com/hooks", events: ["fine_tuning.job.created"] }],
      ["/v1/webhooks", { url: "https://example.com/hooks", colour: "blue" }],
      ["/v1/api_keys", { name: "ci", scopes: ["inference"] }],
      ["/v1/api_keys", {}],
      ["/v1/api_keys", { scopes: ["root"] }],
      ["/v1/api_keys", { name: "" }],
      ["/v1/api_keys", { scopes: [] }],
    ];
    for (const [path, body] of cases) {
      const schemaAccepts = requestValidator(document, path, "post").validate(body).valid;
      const routeStatus = (await call("POST", path, { key, json: body })).status;
      expect(routeStatus === 201, `${path} ${JSON.stringify(body)}: route ${routeStatus}, schema ${schemaAccepts}`).toBe(schemaAccepts);
    }
  });

  it("describes inference requests as the runner-facing schema parses them", async () => {
    const document = await fetchDocument();
    const chat = requestValidator(document, "/v1/chat/completions", "post");
    expect(chat.validate({ model: "m", messages: [{ role: "user", content: "hi" }], temperature: 0.5 }).valid).toBe(true);
    expect(chat.validate({ model: "m", messages: [{ role: "user", content: [{ type: "text", text: "hi" }] }] }).valid).toBe(true);
    expect(chat.validate({ model: "m", messages: [] }).valid).toBe(false);
    expect(chat.validate({ model: "m", messages: [{ role: "robot", content: "hi" }] }).valid).toBe(false);
    expect(chat.validate({ model: "m", messages: [{ role: "user", content: "hi" }], temperature: 3 }).valid).toBe(false);
  });

  it("serves a docs page listing every operation, without loading anything from elsewhere", async () => {
    const response = await call("GET", "/docs");
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/^text\/html/);
    const page = await response.text();
    const document = await fetchDocument();
    for (const path of Object.keys(document.paths)) expect(page).toContain(`<code>${path}</code>`);
    expect(page).not.toMatch(/<script|https?:\/\/(?!example)[^"<\s]*\.(js|css)/);
  });
});
