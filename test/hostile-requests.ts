/**
 * Hostile requests to the edge's public and admin API, as fast-check arbitraries: a valid body
 * with one field replaced by anything (wrong types, huge and unicode strings, negative and huge
 * numbers) or an extra field, arbitrary and broken JSON, deep nesting, oversized bodies, odd query
 * strings, odd ids in paths, garbage uploads, and wrong or missing credentials. Every one of them
 * must get a success or an OpenAI-shaped 4xx, never a 5xx. Used by the Workers test (against fake
 * runners) and by the chaos benchmark (against the running stack, 10,000 of them).
 */
import fc from "fast-check";
import { BASE_MODEL_ID } from "../src/constants.ts";

/** How a request authenticates: the tenant's key, the admin token, nothing, or a forged key. */
export type Auth = "key" | "admin" | "none" | "forged";

/** A request to send: the body is raw text (JSON or not) or multipart parts. */
export interface HostileRequest {
  method: "GET" | "POST" | "PATCH" | "DELETE";
  path: string;
  auth: Auth;
  contentType?: string;
  body?: string;
  form?: { name: string; value: string; filename?: string }[];
}

/** Any JSON value a client might send where another was expected. */
export const anyValue = fc.oneof(
  fc.string({ unit: "grapheme", maxLength: 40 }),
  fc.string({ minLength: 2_000, maxLength: 5_000 }),
  fc.string({ unit: "binary", maxLength: 30 }),
  fc.integer(),
  fc.constantFrom(-1, 0, 1, 2 ** 31, -(2 ** 53), 1e308, -1e308, 0.5, Number.MAX_SAFE_INTEGER),
  fc.boolean(),
  fc.constant(null),
  fc.array(fc.oneof(fc.string({ maxLength: 10 }), fc.integer()), { maxLength: 4 }),
  fc.dictionary(fc.string({ maxLength: 8 }), fc.oneof(fc.string({ maxLength: 8 }), fc.integer()), { maxKeys: 3 }),
);

/** Routes with a JSON body, each with a valid one; properties replace or add one field. */
export const BODY_ROUTES: { method: "POST" | "PATCH"; path: string; auth: Auth; body: Record<string, unknown> }[] = [
  { method: "POST", path: "/v1/chat/completions", auth: "key", body: { model: BASE_MODEL_ID, messages: [{ role: "user", content: "hi" }], max_tokens: 2 } },
  { method: "POST", path: "/v1/completions", auth: "key", body: { model: BASE_MODEL_ID, prompt: "hi", max_tokens: 2 } },
  {
    method: "POST",
    path: "/v1/fine_tuning/jobs",
    auth: "key",
    body: { model: BASE_MODEL_ID, training_file: "file-x", suffix: "s", hyperparameters: { n_epochs: 1 } },
  },
  { method: "POST", path: "/v1/webhooks", auth: "key", body: { url: "https://hooks.example/x", events: ["fine_tuning.job.succeeded"] } },
  { method: "POST", path: "/v1/api_keys", auth: "key", body: { name: "k", scopes: ["inference"] } },
  { method: "POST", path: "/admin/tenants", auth: "admin", body: { name: "t", requests_per_minute: 100 } },
];

/** Routes that take an id in the path. */
const ID_ROUTES: { method: "GET" | "POST" | "DELETE"; path: (id: string) => string; auth: Auth }[] = [
  { method: "GET", path: (id) => `/v1/files/${id}`, auth: "key" },
  { method: "GET", path: (id) => `/v1/files/${id}/content`, auth: "key" },
  { method: "DELETE", path: (id) => `/v1/files/${id}`, auth: "key" },
  { method: "GET", path: (id) => `/v1/fine_tuning/jobs/${id}`, auth: "key" },
  { method: "POST", path: (id) => `/v1/fine_tuning/jobs/${id}/cancel`, auth: "key" },
  { method: "GET", path: (id) => `/v1/fine_tuning/jobs/${id}/events`, auth: "key" },
  { method: "GET", path: (id) => `/v1/fine_tuning/jobs/${id}/checkpoints`, auth: "key" },
  { method: "GET", path: (id) => `/v1/adapters/${id}`, auth: "key" },
  { method: "DELETE", path: (id) => `/v1/adapters/${id}`, auth: "key" },
  { method: "GET", path: (id) => `/v1/adapters/${id}/export`, auth: "key" },
  { method: "GET", path: (id) => `/v1/models/${id}`, auth: "key" },
  { method: "GET", path: (id) => `/v1/webhooks/${id}`, auth: "key" },
  { method: "GET", path: (id) => `/v1/webhooks/${id}/deliveries`, auth: "key" },
  { method: "DELETE", path: (id) => `/v1/webhooks/${id}`, auth: "key" },
  { method: "DELETE", path: (id) => `/v1/api_keys/${id}`, auth: "key" },
  { method: "GET", path: (id) => `/admin/tenants/${id}`, auth: "admin" },
  { method: "GET", path: (id) => `/admin/tenants/${id}/keys`, auth: "admin" },
  { method: "DELETE", path: (id) => `/admin/tenants/${id}/keys/${id}`, auth: "admin" },
];

/** List routes and the query parameters they read (plus one they do not). */
const LIST_PATHS = [
  "/v1/files",
  "/v1/fine_tuning/jobs",
  "/v1/adapters",
  "/v1/usage",
  "/v1/webhooks",
  "/v1/api_keys",
  "/v1/models",
  "/v1/fine_tuning/jobs/ftjob-x/events",
];
const QUERY_NAMES = ["limit", "after", "start_time", "end_time", "purpose", "x"];

const pathId = fc.oneof(
  fc.string({ minLength: 1, maxLength: 40 }).map(encodeURIComponent),
  fc.string({ unit: "grapheme", minLength: 1, maxLength: 20 }).map(encodeURIComponent),
  fc.constantFrom("..%2F..%2Fetc%2Fpasswd", "%00", "file-x", "ftjob-x", `ft:${BASE_MODEL_ID}:tenant_x:a:b`, "a".repeat(3_000)),
);

/** A valid body with one known field replaced by anything, or one unknown field added. */
const mutatedBody = fc
  .tuple(fc.constantFrom(...BODY_ROUTES), fc.string({ maxLength: 20 }), anyValue, fc.boolean(), fc.nat())
  .map(([route, field, value, known, index]): HostileRequest => {
    const keys = Object.keys(route.body);
    const name = known ? keys[index % keys.length] : field;
    return {
      method: route.method,
      path: route.path,
      auth: route.auth,
      contentType: "application/json",
      body: JSON.stringify({ ...route.body, [name]: value }),
    };
  });

const NESTED = "[".repeat(3_000) + "]".repeat(3_000);
// Just over the JSON routes' 1 MiB: built once, sent now and then.
const OVERSIZED = JSON.stringify({ model: BASE_MODEL_ID, prompt: "x".repeat(1024 * 1024 + 10) });

/** Arbitrary JSON, text that is not JSON, deep nesting and oversized bodies on every body route. */
const rawBody = fc
  .tuple(
    fc.constantFrom(...BODY_ROUTES),
    fc.oneof(
      { weight: 4, arbitrary: fc.json() },
      { weight: 4, arbitrary: fc.string({ maxLength: 100 }) },
      { weight: 1, arbitrary: fc.constant(NESTED) },
      { weight: 1, arbitrary: fc.constant(OVERSIZED) },
    ),
  )
  .map(([route, body]): HostileRequest => ({ method: route.method, path: route.path, auth: route.auth, contentType: "application/json", body }));

/** A valid body with a deeply nested value in one of its fields, or in an extra one. */
const nestedField = fc.tuple(fc.constantFrom(...BODY_ROUTES), fc.option(fc.nat(), { nil: undefined })).map(([route, index]): HostileRequest => {
  const keys = Object.keys(route.body);
  const name = index === undefined ? "nested" : keys[index % keys.length];
  const others = JSON.stringify(Object.fromEntries(Object.entries(route.body).filter(([key]) => key !== name)));
  const body = `${others.slice(0, -1)}${others === "{}" ? "" : ","}${JSON.stringify(name)}:${NESTED}}`;
  return { method: route.method, path: route.path, auth: route.auth, contentType: "application/json", body };
});

const oddQuery = fc
  .tuple(fc.constantFrom(...LIST_PATHS), fc.dictionary(fc.constantFrom(...QUERY_NAMES), fc.oneof(fc.string({ maxLength: 30 }), fc.integer().map(String))))
  .map(([path, query]): HostileRequest => ({ method: "GET", path: `${path}?${new URLSearchParams(query)}`, auth: "key" }));

const oddId = fc
  .tuple(fc.constantFrom(...ID_ROUTES), pathId)
  .map(([route, id]): HostileRequest => ({ method: route.method, path: route.path(id), auth: route.auth }));

/** Training-file uploads: lines that are JSON, almost JSON, or not, and odd purposes and names. */
const upload = fc
  .tuple(
    fc.array(
      fc.oneof(
        fc.json(),
        fc.string({ maxLength: 60 }),
        fc.constant('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ho"}]}'),
      ),
      { maxLength: 8 },
    ),
    fc.oneof(fc.constant("fine-tune"), fc.string({ maxLength: 12 })),
    // workerd's FormData cannot encode a file name that ends with a backslash (the client's limit, not the edge's)
    fc.string({ maxLength: 30 }).map((name) => name.replace(/\\+$/, "")),
  )
  .map(
    ([lines, purpose, filename]): HostileRequest => ({
      method: "POST",
      path: "/v1/files",
      auth: "key",
      form: [
        { name: "purpose", value: purpose },
        { name: "file", value: lines.join("\n"), filename: filename || "data.jsonl" },
      ],
    }),
  );

/** Adapter imports with parts that are not PEFT files. */
const badImport = fc.tuple(fc.json(), fc.string({ unit: "binary", maxLength: 200 }), fc.string({ maxLength: 50 })).map(
  ([config, model, name]): HostileRequest => ({
    method: "POST",
    path: "/v1/adapters/import",
    auth: "key",
    form: [
      { name: "name", value: name },
      { name: "adapter_config", value: config, filename: "adapter_config.json" },
      { name: "adapter_model", value: model, filename: "adapter_model.safetensors" },
    ],
  }),
);

/** Any request above, sometimes with its credentials missing or forged. */
export const hostileRequest: fc.Arbitrary<HostileRequest> = fc
  .tuple(
    fc.oneof(
      { weight: 6, arbitrary: mutatedBody },
      { weight: 3, arbitrary: rawBody },
      { weight: 1, arbitrary: nestedField },
      { weight: 2, arbitrary: oddQuery },
      { weight: 2, arbitrary: oddId },
      { weight: 1, arbitrary: upload },
      { weight: 1, arbitrary: badImport },
    ),
    fc.oneof({ weight: 9, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: fc.constantFrom<Auth>("none", "forged") }),
  )
  .map(([request, auth]) => (auth === null ? request : { ...request, auth }));

/** The fetch init for a request, given the tenant's key and the admin token. */
export function requestInit(request: HostileRequest, credentials: { key: string; adminToken: string }): RequestInit {
  const headers: Record<string, string> = {};
  if (request.auth === "key") headers.authorization = `Bearer ${credentials.key}`;
  if (request.auth === "admin") headers.authorization = `Bearer ${credentials.adminToken}`;
  if (request.auth === "forged") headers.authorization = `Bearer sk-pica-${"A".repeat(43)}`;
  let body: RequestInit["body"] = request.body;
  if (request.form !== undefined) {
    const form = new FormData();
    for (const part of request.form) {
      if (part.filename === undefined) form.append(part.name, part.value);
      else form.append(part.name, new Blob([part.value]), part.filename);
    }
    body = form;
  } else if (request.contentType !== undefined) {
    headers["content-type"] = request.contentType;
  }
  return { method: request.method, headers, body };
}

/** Why a response breaks the promise (a 5xx, or a 4xx that is not OpenAI-shaped); null if it keeps it. */
export async function brokenPromise(response: Response): Promise<string | null> {
  if (response.status >= 500) return `${response.status}: ${(await response.text()).slice(0, 200)}`;
  if (response.status < 400) {
    await response.body?.cancel();
    return null;
  }
  const text = await response.text();
  try {
    const body = JSON.parse(text) as { error?: { message?: unknown; type?: unknown } };
    if (typeof body.error?.message === "string" && typeof body.error?.type === "string") return null;
  } catch {
    // not JSON: falls through
  }
  return `${response.status} without an OpenAI-shaped error: ${text.slice(0, 200)}`;
}
