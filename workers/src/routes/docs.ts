/**
 * The API description: `GET /openapi.json` (OpenAPI 3.1, from the routes' zod schemas) and
 * `GET /docs`, a self-contained HTML page rendered from the same document. The page loads
 * nothing from a CDN, so it works offline and under a strict content security policy.
 */
import { Hono } from "hono";
import { html, raw } from "hono/html";
import type { HtmlEscapedString } from "hono/utils/html";
import type { AppEnv } from "../env.ts";
import { openApiDocument } from "../openapi/document.ts";

export const docsRoutes = new Hono<AppEnv>();

// Built once per isolate and origin: the schemas do not change while the worker runs.
const documents = new Map<string, Record<string, unknown>>();
function documentFor(url: string): Record<string, unknown> {
  const origin = new URL(url).origin;
  let document = documents.get(origin);
  if (document === undefined) {
    document = openApiDocument(origin);
    documents.set(origin, document);
  }
  return document;
}

docsRoutes.get("/openapi.json", (c) => c.json(documentFor(c.req.url)));

docsRoutes.get("/docs", (c) => c.html(renderDocs(documentFor(c.req.url) as unknown as OpenApi)));

interface OpenApiOperation {
  summary: string;
  description: string;
  tags: string[];
  parameters?: { name: string; in: string; required: boolean }[];
  requestBody?: { content: Record<string, { schema: unknown }> };
  responses: Record<string, { description?: string; content?: Record<string, { schema?: unknown }>; $ref?: string }>;
}
interface OpenApi {
  info: { title: string; description: string };
  paths: Record<string, Record<string, OpenApiOperation>>;
  components: { schemas: Record<string, unknown> };
}

function renderDocs(document: OpenApi): HtmlEscapedString | Promise<HtmlEscapedString> {
  const byTag = new Map<string, [string, string, OpenApiOperation][]>();
  for (const [path, methods] of Object.entries(document.paths)) {
    for (const [method, operation] of Object.entries(methods)) {
      const tag = operation.tags[0] ?? "other";
      byTag.set(tag, [...(byTag.get(tag) ?? []), [method, path, operation]]);
    }
  }
  const schemaBlock = (schema: unknown) => html`<pre>${JSON.stringify(resolve(schema, document), null, 2)}</pre>`;
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${document.info.title}</title>
<style>
body { font: 15px/1.5 system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #1c1c1c; }
code, pre { font: 13px ui-monospace, monospace; } pre { background: #f5f5f4; padding: .75rem; overflow-x: auto; }
.method { display: inline-block; min-width: 4.5rem; font-weight: 700; text-transform: uppercase; }
details { border-top: 1px solid #ddd; padding: .4rem 0; } summary { cursor: pointer; }
</style>
</head>
<body>
<h1>${document.info.title}</h1>
<p>${document.info.description} Authenticate with <code>Authorization: Bearer sk-pica-…</code>. The machine-readable description is <a href="/openapi.json">/openapi.json</a>.</p>
${[...byTag].map(
  ([tag, operations]) => html`<h2>${tag}</h2>
${operations.map(
  ([method, path, operation]) => html`<details id="${method}-${path}">
<summary><span class="method">${method}</span> <code>${path}</code> — ${operation.summary}</summary>
<p>${operation.description}</p>
${operation.parameters?.length ? html`<p>Parameters: ${raw(operation.parameters.map((p) => `<code>${escapeHtml(p.name)}</code> (${escapeHtml(p.in)}${p.required ? ", required" : ""})`).join(", "))}</p>` : ""}
${Object.entries(operation.requestBody?.content ?? {}).map(([type, body]) => html`<h4>Request body (${type})</h4>${schemaBlock(body.schema)}`)}
${Object.entries(operation.responses)
  .filter(([, response]) => response.$ref === undefined)
  .map(
    ([status, response]) =>
      html`<h4>${status}: ${response.description ?? ""}</h4>${Object.entries(response.content ?? {}).map(([type, body]) => html`<p><code>${type}</code></p>${body.schema === undefined ? "" : schemaBlock(body.schema)}`)}`,
  )}
</details>`,
)}`,
)}
<h2>Errors</h2>
${schemaBlock({ $ref: "#/components/schemas/Error" })}
</body>
</html>`;
}

// Inlines component references one level deep so each block reads on its own.
function resolve(schema: unknown, document: OpenApi): unknown {
  const ref = (schema as { $ref?: string } | null)?.$ref;
  if (typeof ref !== "string" || !ref.startsWith("#/components/schemas/")) return schema;
  return document.components.schemas[ref.slice("#/components/schemas/".length)] ?? schema;
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (char) => `&#${char.charCodeAt(0)};`);
}
