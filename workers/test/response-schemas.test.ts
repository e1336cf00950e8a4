/**
 * The edge's real answers, read through /openapi.json: every documented operation is called for
 * real, and each answer's body (each event's data, for a stream) must validate against the schema
 * the document gives for that operation, status and content type, errors (400, 404) included.
 * Inference is answered by the fake runner, whose bodies have the real runner's types. The last
 * test fails when an operation has no exchange here: a success for every JSON answer, a 404 for
 * every path with an id, a 400 for every body or query.
 */
import { Validator } from "@cfworker/json-schema";
import { env, SELF } from "cloudflare:test";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SSE_DONE, parseSseData } from "../../src/protocol/sse.ts";
import { CONTENT_SHA256_HEADER, PEFT_IMPORT_REPORT_HEADER, PEFT_PATHS, type PeftImportReport } from "../../src/protocol/runner.ts";
import { sha256Hex } from "../src/auth/keys.ts";
import { FakeOpenAiRunner } from "./fake-openai-runner.ts";
import { installFakeRunners, withoutRunnerSecret } from "./fake-runners.ts";
import { createdJob, putCheckpoint, RUNNER_AUTH, trainingJsonl, uploadedFile } from "./fine-tuning-helpers.ts";
import { call, edgeRequest, type RequestOptions, tenantWithKey } from "./helpers.ts";
import { eventually, forgetRunners, RUNNER_A, RUNNER_B, seedAdapter } from "./inference-helpers.ts";

type JsonSchema = Record<string, unknown>;
interface DocumentedResponse {
  $ref?: string;
  content?: Record<string, { schema?: JsonSchema }>;
}
interface Document {
  paths: Record<string, Record<string, { parameters?: { in: string }[]; requestBody?: unknown; responses: Record<string, DocumentedResponse> }>>;
  components: { schemas: Record<string, JsonSchema>; responses: Record<string, DocumentedResponse> };
}

/** What the exchanges need: one tenant with a few of everything, some to delete. */
interface Seeded {
  key: string;
  inferenceKey: string; // another tenant's, without the admin scope
  tenantId: string;
  fileId: string;
  spareFileId: string;
  jobId: string;
  adapterId: string;
  spareAdapterId: string;
  keyToRevoke: string;
  webhookId: string;
  spareWebhookId: string;
}

type Method = "get" | "post" | "delete";
interface Exchange {
  operation: `${Method} /v1/${string}`; // the document's method and path template
  status: number;
  /** The request's path (with its query) and options; the key is the seeded admin key unless `key` is given. */
  path: (seeded: Seeded) => string;
  options?: (seeded: Seeded) => RequestOptions;
  /** Expects `text/event-stream` and validates each event's data. */
  stream?: boolean;
  note?: string;
  /** Runs on the answer's body, after it validated (e.g. cancels a job it created). */
  after?: (body: Record<string, unknown>, seeded: Seeded) => Promise<void>;
}

const chat = (extra: Record<string, unknown> = {}) => ({ json: { model: env.BASE_MODEL, messages: [{ role: "user", content: "hi" }], ...extra } });
const prompt = (extra: Record<string, unknown> = {}) => ({ json: { model: env.BASE_MODEL, prompt: "Once", ...extra } });
const weatherTool = { type: "function", function: { name: "weather", parameters: { type: "object", properties: { city: { type: "string" } } } } };
const unknownId = "nothing-by-this-id";

const peftForm = (fields: Record<string, string> = { name: "support-bot" }) => {
  const form = new FormData();
  form.append("adapter_config", new Blob(['{"peft_type": "LORA", "r": 16, "lora_alpha": 32}'], { type: "application/json" }), "adapter_config.json");
  form.append("adapter_model", new Blob([new Uint8Array([7, 7, 7])]), "adapter_model.safetensors");
  for (const [name, value] of Object.entries(fields)) form.set(name, value);
  return form;
};
const fileForm = (fields: Record<string, string>) => {
  const form = new FormData();
  for (const [name, value] of Object.entries(fields)) form.set(name, value);
  form.set("file", new File([trainingJsonl()], "train.jsonl"));
  return form;
};

const EXCHANGES: Exchange[] = [
  // inference, answered by the fake runner
  { operation: "post /v1/chat/completions", status: 200, path: () => "/v1/chat/completions", options: () => chat() },
  {
    operation: "post /v1/chat/completions",
    status: 200,
    note: "log-probabilities",
    path: () => "/v1/chat/completions",
    options: () => chat({ logprobs: true, top_logprobs: 2 }),
  },
  {
    operation: "post /v1/chat/completions",
    status: 200,
    note: "a tool call",
    path: () => "/v1/chat/completions",
    options: () => chat({ tools: [weatherTool], tool_choice: "required" }),
    after: async (body) => expect(body).toMatchObject({ choices: [{ finish_reason: "tool_calls", message: { content: null } }] }),
  },
  {
    operation: "post /v1/chat/completions",
    status: 200,
    note: "streamed, with usage and log-probabilities",
    stream: true,
    path: () => "/v1/chat/completions",
    options: () => chat({ stream: true, stream_options: { include_usage: true }, logprobs: true, top_logprobs: 1 }),
  },
  {
    operation: "post /v1/chat/completions",
    status: 200,
    note: "a streamed tool call",
    stream: true,
    path: () => "/v1/chat/completions",
    options: () => chat({ stream: true, tools: [weatherTool], tool_choice: { type: "function", function: { name: "weather" } } }),
  },
  { operation: "post /v1/chat/completions", status: 200, note: "an adapter", path: () => "/v1/chat/completions", options: (s) => chat({ model: s.adapterId }) },
  { operation: "post /v1/chat/completions", status: 400, path: () => "/v1/chat/completions", options: () => chat({ temperature: 3 }) },
  { operation: "post /v1/chat/completions", status: 404, path: () => "/v1/chat/completions", options: () => chat({ model: unknownId }) },
  { operation: "post /v1/completions", status: 200, path: () => "/v1/completions", options: () => prompt({ logprobs: 2 }) },
  {
    operation: "post /v1/completions",
    status: 200,
    note: "streamed, with usage and log-probabilities",
    stream: true,
    path: () => "/v1/completions",
    options: () => prompt({ stream: true, stream_options: { include_usage: true }, logprobs: 1 }),
  },
  { operation: "post /v1/completions", status: 400, path: () => "/v1/completions", options: () => prompt({ prompt: [1, 2, 3] }) },
  { operation: "post /v1/completions", status: 404, path: () => "/v1/completions", options: () => prompt({ adapter_id: unknownId }) },

  { operation: "get /v1/models", status: 200, path: () => "/v1/models" },
  { operation: "get /v1/models", status: 400, path: () => "/v1/models?limit=0" },
  { operation: "get /v1/models/{model}", status: 200, path: () => `/v1/models/${env.BASE_MODEL}` },
  { operation: "get /v1/models/{model}", status: 200, note: "an adapter", path: (s) => `/v1/models/${s.adapterId}` },
  { operation: "get /v1/models/{model}", status: 404, path: () => `/v1/models/${unknownId}` },

  // files
  { operation: "post /v1/files", status: 200, path: () => "/v1/files", options: () => ({ body: fileForm({ purpose: "fine-tune" }) }) },
  { operation: "post /v1/files", status: 400, path: () => "/v1/files", options: () => ({ body: fileForm({ purpose: "assistants" }) }) },
  { operation: "get /v1/files", status: 200, path: () => "/v1/files?purpose=fine-tune" },
  { operation: "get /v1/files", status: 400, path: () => `/v1/files?after=${unknownId}` },
  { operation: "get /v1/files/{file_id}", status: 200, path: (s) => `/v1/files/${s.fileId}` },
  { operation: "get /v1/files/{file_id}", status: 404, path: () => `/v1/files/${unknownId}` },
  { operation: "get /v1/files/{file_id}/content", status: 404, path: () => `/v1/files/${unknownId}/content` },
  { operation: "delete /v1/files/{file_id}", status: 200, path: (s) => `/v1/files/${s.spareFileId}` },
  { operation: "delete /v1/files/{file_id}", status: 404, path: () => `/v1/files/${unknownId}` },

  // fine-tuning
  {
    operation: "post /v1/fine_tuning/jobs",
    status: 200,
    path: () => "/v1/fine_tuning/jobs",
    options: (s) => ({
      json: { model: env.BASE_MODEL, training_file: s.fileId, suffix: "schemas", method: { type: "supervised", supervised: { hyperparameters: { rank: 4 } } } },
    }),
    // Cancelled at once, so no dispatch reaches the fake runners.
    after: async (body, s) => expect((await call("POST", `/v1/fine_tuning/jobs/${body.id}/cancel`, { key: s.key })).status).toBe(200),
  },
  {
    operation: "post /v1/fine_tuning/jobs",
    status: 400,
    path: () => "/v1/fine_tuning/jobs",
    options: (s) => ({
      json: { model: env.BASE_MODEL, training_file: s.fileId, method: { type: "supervised", supervised: { hyperparameters: { rank: 0 } } } },
    }),
  },
  {
    operation: "post /v1/fine_tuning/jobs/estimate",
    status: 200,
    path: () => "/v1/fine_tuning/jobs/estimate",
    options: (s) => ({
      json: { model: env.BASE_MODEL, training_file: s.fileId, method: { type: "supervised", supervised: { hyperparameters: { rank: 4 } } } },
    }),
  },
  {
    operation: "post /v1/fine_tuning/jobs/estimate",
    status: 400,
    path: () => "/v1/fine_tuning/jobs/estimate",
    options: (s) => ({
      json: { model: env.BASE_MODEL, training_file: s.fileId, method: { type: "supervised", supervised: { hyperparameters: { rank: 0 } } } },
    }),
  },
  { operation: "get /v1/fine_tuning/jobs", status: 200, path: () => "/v1/fine_tuning/jobs" },
  { operation: "get /v1/fine_tuning/jobs", status: 400, path: () => "/v1/fine_tuning/jobs?limit=1000" },
  { operation: "get /v1/fine_tuning/jobs/{job_id}", status: 200, path: (s) => `/v1/fine_tuning/jobs/${s.jobId}` },
  { operation: "get /v1/fine_tuning/jobs/{job_id}", status: 404, path: () => `/v1/fine_tuning/jobs/${unknownId}` },
  { operation: "post /v1/fine_tuning/jobs/{job_id}/cancel", status: 200, path: (s) => `/v1/fine_tuning/jobs/${s.jobId}/cancel` },
  { operation: "post /v1/fine_tuning/jobs/{job_id}/cancel", status: 404, path: () => `/v1/fine_tuning/jobs/${unknownId}/cancel` },
  { operation: "get /v1/fine_tuning/jobs/{job_id}/events", status: 200, path: (s) => `/v1/fine_tuning/jobs/${s.jobId}/events` },
  { operation: "get /v1/fine_tuning/jobs/{job_id}/events", status: 400, path: (s) => `/v1/fine_tuning/jobs/${s.jobId}/events?after=${unknownId}` },
  { operation: "get /v1/fine_tuning/jobs/{job_id}/events", status: 404, path: () => `/v1/fine_tuning/jobs/${unknownId}/events` },
  { operation: "get /v1/fine_tuning/jobs/{job_id}/checkpoints", status: 200, path: (s) => `/v1/fine_tuning/jobs/${s.jobId}/checkpoints` },
  { operation: "get /v1/fine_tuning/jobs/{job_id}/checkpoints", status: 400, path: (s) => `/v1/fine_tuning/jobs/${s.jobId}/checkpoints?limit=x` },
  { operation: "get /v1/fine_tuning/jobs/{job_id}/checkpoints", status: 404, path: () => `/v1/fine_tuning/jobs/${unknownId}/checkpoints` },

  // adapters
  { operation: "get /v1/adapters", status: 200, path: () => "/v1/adapters" },
  { operation: "get /v1/adapters", status: 400, path: () => `/v1/adapters?after=${unknownId}` },
  { operation: "get /v1/adapters/{adapter_id}", status: 200, path: (s) => `/v1/adapters/${s.adapterId}` },
  { operation: "get /v1/adapters/{adapter_id}", status: 404, path: () => `/v1/adapters/${unknownId}` },
  { operation: "delete /v1/adapters/{adapter_id}", status: 200, path: (s) => `/v1/adapters/${s.spareAdapterId}` },
  { operation: "delete /v1/adapters/{adapter_id}", status: 404, path: () => `/v1/adapters/${unknownId}` },
  { operation: "post /v1/adapters/import", status: 201, path: () => "/v1/adapters/import", options: () => ({ body: peftForm() }) },
  { operation: "post /v1/adapters/import", status: 400, path: () => "/v1/adapters/import", options: () => ({ body: peftForm({ name: "no spaces" }) }) },
  { operation: "get /v1/adapters/{adapter_id}/export", status: 404, path: () => `/v1/adapters/${unknownId}/export` },

  // usage: after the inference above has been recorded
  { operation: "get /v1/usage", status: 200, path: () => "/v1/usage?limit=1" },
  { operation: "get /v1/usage", status: 400, path: () => "/v1/usage?start_time=-1" },

  // webhooks
  { operation: "post /v1/webhooks", status: 201, path: () => "/v1/webhooks", options: () => ({ json: { url: "https://example.com/hooks/new" } }) },
  { operation: "post /v1/webhooks", status: 400, path: () => "/v1/webhooks", options: () => ({ json: { url: "http://example.com/hooks" } }) },
  { operation: "get /v1/webhooks", status: 200, path: () => "/v1/webhooks" },
  { operation: "get /v1/webhooks", status: 400, path: () => "/v1/webhooks?limit=-1" },
  { operation: "get /v1/webhooks/{webhook_id}", status: 200, path: (s) => `/v1/webhooks/${s.webhookId}` },
  { operation: "get /v1/webhooks/{webhook_id}", status: 404, path: () => `/v1/webhooks/${unknownId}` },
  { operation: "get /v1/webhooks/{webhook_id}/deliveries", status: 200, path: (s) => `/v1/webhooks/${s.webhookId}/deliveries` },
  { operation: "get /v1/webhooks/{webhook_id}/deliveries", status: 400, path: (s) => `/v1/webhooks/${s.webhookId}/deliveries?after=${unknownId}` },
  { operation: "get /v1/webhooks/{webhook_id}/deliveries", status: 404, path: () => `/v1/webhooks/${unknownId}/deliveries` },
  { operation: "delete /v1/webhooks/{webhook_id}", status: 200, path: (s) => `/v1/webhooks/${s.spareWebhookId}` },
  { operation: "delete /v1/webhooks/{webhook_id}", status: 404, path: () => `/v1/webhooks/${unknownId}` },

  // refused keys
  { operation: "get /v1/files", status: 401, note: "no key", path: () => "/v1/files", options: () => ({ key: undefined }) },
  { operation: "post /v1/api_keys", status: 403, note: "an inference key", path: () => "/v1/api_keys", options: (s) => ({ key: s.inferenceKey, json: {} }) },

  // API keys
  { operation: "post /v1/api_keys", status: 201, path: () => "/v1/api_keys", options: () => ({ json: { name: "ci", scopes: ["inference"] } }) },
  { operation: "post /v1/api_keys", status: 400, path: () => "/v1/api_keys", options: () => ({ json: { scopes: ["root"] } }) },
  { operation: "get /v1/api_keys", status: 200, path: () => "/v1/api_keys" },
  { operation: "get /v1/api_keys", status: 400, path: () => `/v1/api_keys?after=${unknownId}` },
  { operation: "delete /v1/api_keys/{key_id}", status: 200, path: (s) => `/v1/api_keys/${s.keyToRevoke}` },
  { operation: "delete /v1/api_keys/{key_id}", status: 404, path: () => `/v1/api_keys/${unknownId}` },
];

// The projection a runner reports for the import above.
const IMPORT_REPORT: PeftImportReport = {
  rank: 8,
  sharing: "shared",
  basis_id: "basis-1",
  lora_r: 16,
  lora_alpha: 32,
  base_model_name_or_path: null,
  projection_error: { q_proj: 0.1 },
  max_projection_error: 0.1,
};
const PICA_BYTES = new TextEncoder().encode("pica-adapter-bytes");

let document: Document;
let seeded: Seeded;
let restore: () => void = () => undefined;

beforeAll(async () => {
  document = (await (await call("GET", "/openapi.json")).json()) as Document;
  await forgetRunners();
  // The fake runners answer completions; they convert PEFT imports as a real runner does.
  const runners = [RUNNER_A, RUNNER_B].map((origin) => new FakeOpenAiRunner(origin));
  restore = installFakeRunners(
    Object.fromEntries(
      runners.map((runner) => [
        runner.origin,
        async (request: Request) => {
          if (new URL(request.url).pathname !== PEFT_PATHS.import) return runner.handler(request);
          const refused = withoutRunnerSecret(request);
          if (refused !== null) return refused;
          await request.body?.cancel();
          return new Response(PICA_BYTES, {
            headers: { [CONTENT_SHA256_HEADER]: await sha256Hex(PICA_BYTES), [PEFT_IMPORT_REPORT_HEADER]: JSON.stringify(IMPORT_REPORT) },
          });
        },
      ]),
    ),
  );

  const { key, tenantId } = await tenantWithKey(["admin"]);
  const fileId = await uploadedFile(key);
  const spareFileId = await uploadedFile(key);
  const job = await createdJob(key);
  const jobId = job.id as string;
  // Cancelled, so that no dispatch reaches a runner; its callbacks still land (events, checkpoints).
  expect((await call("POST", `/v1/fine_tuning/jobs/${jobId}/cancel`, { key })).status).toBe(200);
  const events = [
    {
      id: `${jobId}:step:10`,
      job_id: jobId,
      created_at: 1_800_000_000,
      level: "info",
      type: "metrics",
      message: "step 10",
      data: { step: 10, train_loss: 1.5 },
    },
  ];
  expect((await call("POST", `/internal/jobs/${jobId}/events`, { headers: RUNNER_AUTH, json: { events } })).status).toBe(200);
  expect((await putCheckpoint(jobId, 10)).status).toBe(200);
  const adapterId = `ft:${env.BASE_MODEL}:${tenantId}:schemas:ftjob-seeded`;
  const spareAdapterId = `${adapterId}-spare`;
  await seedAdapter(tenantId, adapterId);
  await seedAdapter(tenantId, spareAdapterId);
  const issued = (await (await call("POST", "/v1/api_keys", { key, json: { name: "to revoke" } })).json()) as { id: string };
  const webhookIds: string[] = [];
  for (const path of ["kept", "spare"]) {
    const created = await call("POST", "/v1/webhooks", { key, json: { url: `https://example.com/hooks/${path}` } });
    webhookIds.push(((await created.json()) as { id: string }).id);
  }
  await env.DB.prepare(
    "INSERT INTO webhook_deliveries (id, tenant_id, webhook_id, event_type, payload, created_at) VALUES (?, ?, ?, 'fine_tuning.job.succeeded', '{}', ?)",
  )
    .bind(`msg_${crypto.randomUUID()}`, tenantId, webhookIds[0], Math.floor(Date.now() / 1000))
    .run();
  const inferenceKey = (await tenantWithKey(["inference"])).key;
  seeded = {
    key,
    inferenceKey,
    tenantId,
    fileId,
    spareFileId,
    jobId,
    adapterId,
    spareAdapterId,
    keyToRevoke: issued.id,
    webhookId: webhookIds[0],
    spareWebhookId: webhookIds[1],
  };
}, 120_000);
afterAll(() => restore());

/** A validator for the schema the document gives an operation's answer of `status` in `contentType`; references resolved in place. */
function responseValidator(operation: Exchange["operation"], status: number, contentType: string): Validator {
  const [method, path] = operation.split(" ");
  let response = document.paths[path]?.[method]?.responses[String(status)];
  expect(response, `${operation} documents no ${status}`).toBeDefined();
  if (response!.$ref !== undefined) response = document.components.responses[response!.$ref.replace("#/components/responses/", "")];
  const schema = response!.content?.[contentType]?.schema;
  expect(schema, `${operation} ${status} documents no ${contentType} schema`).toBeDefined();
  const resolved = JSON.parse(JSON.stringify({ schema, defs: document.components.schemas }).replaceAll('"#/components/schemas/', '"#/$defs/')) as {
    schema: JsonSchema;
    defs: JsonSchema;
  };
  return new Validator({ ...resolved.schema, $defs: resolved.defs }, "2020-12", false);
}

/** Whether a concrete request path is an instance of the operation's template. */
function matchesTemplate(operation: Exchange["operation"], method: string, path: string): boolean {
  const [documentedMethod, template] = operation.split(" ");
  const pattern = new RegExp(`^${template.replace(/\{\w+\}/g, "[^/?]+")}(\\?.*)?$`);
  return documentedMethod === method && pattern.test(path);
}

const label = (exchange: Exchange) => `${exchange.operation} ${exchange.status}${exchange.note ? ` (${exchange.note})` : ""}`;

describe("the edge's answers, read through /openapi.json", () => {
  it.each(EXCHANGES.map((exchange) => [label(exchange), exchange] as const))(
    "%s",
    async (_, exchange) => {
      const [method] = exchange.operation.split(" ");
      const path = exchange.path(seeded);
      expect(matchesTemplate(exchange.operation, method, path), `${path} is not ${exchange.operation}`).toBe(true);
      if (exchange.operation === "get /v1/usage" && exchange.status === 200) {
        await eventually(
          async () => (await env.DB.prepare("SELECT COUNT(*) AS n FROM usage WHERE tenant_id = ?").bind(seeded.tenantId).first<{ n: number }>())!.n > 0,
        );
      }
      const response = await SELF.fetch(edgeRequest(method.toUpperCase(), path, { key: seeded.key, ...exchange.options?.(seeded) }));
      const text = await response.text();
      expect(response.status, text).toBe(exchange.status);
      const contentType = exchange.stream ? "text/event-stream" : "application/json";
      expect(response.headers.get("content-type")).toMatch(new RegExp(`^${contentType}`));
      const validator = responseValidator(exchange.operation, exchange.status, contentType);
      const bodies = exchange.stream ? streamedData(text) : [JSON.parse(text) as unknown];
      for (const body of bodies) {
        const result = validator.validate(body);
        expect(result.errors, JSON.stringify(body)).toEqual([]);
        expect(result.valid).toBe(true);
      }
      await exchange.after?.(bodies[0] as Record<string, unknown>, seeded);
    },
    60_000,
  );

  it("calls every documented operation: a success for each JSON answer, a 404 for each id in a path, a 400 for each body or query", () => {
    const missing: string[] = [];
    for (const [path, methods] of Object.entries(document.paths)) {
      for (const [method, operation] of Object.entries(methods)) {
        const name = `${method} ${path}`;
        const statuses = new Set(EXCHANGES.filter((exchange) => exchange.operation === name).map((exchange) => exchange.status));
        const [success, answer] = Object.entries(operation.responses).find(([status]) => status.startsWith("2"))!;
        if (answer.content?.["application/json"] !== undefined && !statuses.has(Number(success))) missing.push(`${name} ${success}`);
        if (/\{\w+\}/.test(path) && !statuses.has(404)) missing.push(`${name} 404`);
        const hasQuery = (operation.parameters ?? []).some((parameter) => parameter.in === "query");
        if ((operation.requestBody !== undefined || hasQuery) && !statuses.has(400)) missing.push(`${name} 400`);
      }
    }
    expect(missing).toEqual([]);
    // And every exchange names a documented operation.
    expect(EXCHANGES.filter((exchange) => document.paths[exchange.operation.split(" ")[1]]?.[exchange.operation.split(" ")[0]] === undefined)).toEqual([]);
  });

  it("streams every documented streaming operation", () => {
    const streaming = Object.entries(document.paths).flatMap(([path, methods]) =>
      Object.entries(methods)
        .filter(([, operation]) => Object.values(operation.responses).some((response) => response.content?.["text/event-stream"] !== undefined))
        .map(([method]) => `${method} ${path}`),
    );
    expect(streaming.length).toBeGreaterThan(0);
    for (const operation of streaming)
      expect(
        EXCHANGES.some((exchange) => exchange.operation === operation && exchange.stream),
        operation,
      ).toBe(true);
  });
});

/** Each event's data of a completed stream, parsed; the stream must end with [DONE]. */
function streamedData(text: string): unknown[] {
  const data = parseSseData(text);
  expect(data.at(-1)).toBe(SSE_DONE);
  expect(data.length).toBeGreaterThan(1);
  return data.slice(0, -1).map((event) => JSON.parse(event) as unknown);
}
