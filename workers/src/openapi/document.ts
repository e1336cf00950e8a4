/**
 * The OpenAPI 3.1 document of the public API, built from OPERATIONS with zod's own JSON Schema
 * conversion (OpenAPI 3.1 schemas are JSON Schema 2020-12). Request bodies and query strings
 * describe what a route accepts (zod's input side: defaults make fields optional); responses
 * describe what it answers (the output side).
 */
import { z } from "zod";
import type { OpenAIErrorBody } from "../../../src/errors.ts";
import { OPERATIONS, type Operation } from "./operations.ts";

type JsonSchema = Record<string, unknown>;

const errorSchema = z.object({
  error: z.object({
    message: z.string(),
    type: z.enum(["invalid_request_error", "authentication_error", "permission_error", "not_found_error", "rate_limit_error", "server_error"]),
    param: z.string().nullable(),
    code: z.string().nullable(),
    lines: z.array(z.object({ line: z.int(), reason: z.string() })).optional(),
  }),
});
// The schema describes exactly the bodies ApiError writes: this fails to compile when either changes alone.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const errorSchemaIsErrorBody: Same<z.output<typeof errorSchema>, OpenAIErrorBody> = true;
void errorSchemaIsErrorBody;

/** Builds the document; `serverUrl` is where the API is served. */
export function openApiDocument(serverUrl: string): JsonSchema {
  const components: Record<string, JsonSchema> = {};
  const named = (name: string, schema: z.ZodType, io: "input" | "output") => {
    components[name] ??= toJsonSchema(schema, io, components);
    return { $ref: `#/components/schemas/${name}` };
  };
  named("Error", errorSchema, "output");

  const paths: Record<string, Record<string, unknown>> = {};
  for (const operation of OPERATIONS) {
    paths[operation.path] ??= {};
    paths[operation.path][operation.method] = describe(operation, named, components);
  }
  return {
    openapi: "3.1.0",
    info: {
      title: "PiCa platform API",
      version: "1",
      description:
        "OpenAI-shaped inference, files, fine-tuning and adapters over one base model with per-tenant PiCa adapters. Errors are `{error: {message, type, param, code}}`.",
    },
    servers: [{ url: serverUrl }],
    security: [{ bearerAuth: [] }],
    tags: [...new Set(OPERATIONS.map((operation) => operation.tag))].map((name) => ({ name })),
    paths,
    components: {
      schemas: components,
      securitySchemes: { bearerAuth: { type: "http", scheme: "bearer", description: "A tenant API key, `sk-pica-…`" } },
      responses: Object.fromEntries(
        ERROR_RESPONSES.map(([status, description]) => [
          String(status),
          { description, content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } } },
        ]),
      ),
    },
  };
}

const ERROR_RESPONSES: [number, string][] = [
  [400, "Invalid request; `param` names the field"],
  [401, "Missing, invalid or revoked API key"],
  [403, "The key lacks the scope"],
  [404, "No such resource for this tenant"],
  [413, "Request body too large"],
  [429, "Rate limited; see Retry-After"],
  [503, "No runner available; retry shortly"],
];

function describe(
  operation: Operation,
  named: (name: string, schema: z.ZodType, io: "input" | "output") => JsonSchema,
  components: Record<string, JsonSchema>,
) {
  const parameters = [...operation.path.matchAll(/\{(\w+)\}/g)].map(([, name]) => ({ name, in: "path", required: true, schema: { type: "string" } }));
  if (operation.query) {
    const query = toJsonSchema(operation.query, "input", components) as { properties?: Record<string, JsonSchema>; required?: string[] };
    for (const [name, schema] of Object.entries(query.properties ?? {})) {
      parameters.push({ name, in: "query", required: (query.required ?? []).includes(name), schema: schema as { type: string } });
    }
  }
  const { response } = operation;
  const output = (schema: z.ZodType, name: string | undefined) => (name ? named(name, schema, "output") : toJsonSchema(schema, "output", components));
  // A streamed answer is described as OpenAI's own document does: the event's data schema under text/event-stream.
  const content =
    "schema" in response
      ? {
          "application/json": { schema: output(response.schema, response.name) },
          ...(response.stream ? { "text/event-stream": { schema: output(response.stream.schema, response.stream.name) } } : {}),
        }
      : { [response.contentType]: {} };
  const responses: Record<string, unknown> = { [String(response.status ?? 200)]: { description: response.description, content } };
  for (const [status] of ERROR_RESPONSES) responses[String(status)] = { $ref: `#/components/responses/${status}` };
  return {
    operationId: `${operation.method}${operation.path.replace(/\{(\w+)\}/g, "by_$1").replace(/[^A-Za-z0-9]+(.)?/g, (_, next: string | undefined) => (next ?? "").toUpperCase())}`,
    tags: [operation.tag],
    summary: operation.summary,
    description: `Needs an API key with the \`${operation.scope}\` scope (or \`admin\`).`,
    ...(parameters.length > 0 ? { parameters } : {}),
    ...(operation.request
      ? {
          requestBody: {
            required: true,
            content: { [operation.request.contentType]: { schema: named(operation.request.name, operation.request.schema, "input") } },
          },
        }
      : {}),
    responses,
  };
}

// One schema as an OpenAPI component: definitions zod hoists ($defs) become components too.
function toJsonSchema(schema: z.ZodType, io: "input" | "output", components: Record<string, JsonSchema>): JsonSchema {
  const converted = z.toJSONSchema(schema, { io, unrepresentable: "any", target: "draft-2020-12" }) as JsonSchema;
  const { $schema: _, $defs, ...rest } = converted as { $schema?: string; $defs?: Record<string, JsonSchema> };
  const rewrite = (value: JsonSchema) => JSON.parse(JSON.stringify(value).replaceAll('"#/$defs/', '"#/components/schemas/')) as JsonSchema;
  for (const [name, definition] of Object.entries($defs ?? {})) components[name] ??= rewrite(definition);
  return rewrite(rest);
}
