/**
 * Every public operation of the API, with the zod schemas its route parses (imported from where
 * the route or the protocol defines them, so the description cannot drift from the validation).
 * A route whose module does not export its schema yet is described by its path, scope and
 * response kind only; workers/test/openapi.test.ts fails when a mounted route is missing here.
 */
import { z } from "zod";
import {
  chatCompletionChunkSchema,
  chatCompletionRequestSchema,
  chatCompletionSchema,
  completionRequestSchema,
  modelListSchema,
  modelObjectSchema,
  textCompletionSchema,
} from "../../../src/protocol/openai.ts";
import { hyperparametersSchema } from "../../../src/protocol/runner.ts";
import type { KeyScope } from "../auth/keys.ts";
import { adapterImportRequestSchema, importedAdapterSchema } from "../routes/adapter-transfer.ts";
import { keyRequestSchema } from "../routes/keys.ts";
import { pageQuerySchema } from "../routes/list-page.ts";
import { webhookDeliverySchema, webhookObjectSchema, webhookRequestSchema } from "../routes/webhooks.ts";

export interface Operation {
  method: "get" | "post" | "delete";
  path: string; // OpenAPI template: /v1/files/{file_id}
  tag: string;
  summary: string;
  scope: KeyScope;
  request?: { contentType: "application/json" | "multipart/form-data"; name: string; schema: z.ZodType };
  query?: z.ZodObject;
  response: { description: string; status?: number; name?: string; schema?: z.ZodType; contentType?: string };
}

const listOf = (item: z.ZodType) => z.object({ object: z.literal("list"), data: z.array(item) });
const deleted = z.object({ id: z.string(), object: z.string(), deleted: z.literal(true) });
const anyObject = z.object({ id: z.string(), object: z.string() }).loose();
const page = pageQuerySchema(20, 100);

// The file upload's form, as routes/files.ts reads it by hand (it has no zod schema to share).
const fileUploadSchema = z.object({ file: z.file().describe("JSONL, one training example per line"), purpose: z.literal("fine-tune") });
// The job request: protocol hyper-parameters plus OpenAI's fields (routes/fine-tuning owns the parse).
const fineTuningJobRequestSchema = z.object({
  model: z.string(),
  training_file: z.string(),
  validation_file: z.string().optional(),
  suffix: z.string().max(64).optional(),
  seed: z.int().optional(),
  method: z.object({ type: z.literal("supervised"), supervised: z.object({ hyperparameters: hyperparametersSchema }) }).optional(),
});

export const OPERATIONS: Operation[] = [
  {
    method: "post",
    path: "/v1/chat/completions",
    tag: "inference",
    summary: "Create a chat completion (JSON, or SSE with stream: true)",
    scope: "inference",
    request: { contentType: "application/json", name: "ChatCompletionRequest", schema: chatCompletionRequestSchema },
    response: {
      description: "The completion, or `text/event-stream` of ChatCompletionChunk objects ending with [DONE]",
      name: "ChatCompletion",
      schema: chatCompletionSchema,
    },
  },
  {
    method: "post",
    path: "/v1/completions",
    tag: "inference",
    summary: "Create a text completion (JSON, or SSE with stream: true)",
    scope: "inference",
    request: { contentType: "application/json", name: "CompletionRequest", schema: completionRequestSchema },
    response: { description: "The completion, or `text/event-stream`", name: "TextCompletion", schema: textCompletionSchema },
  },
  {
    method: "get",
    path: "/v1/models",
    tag: "inference",
    summary: "List the base model and the tenant's ready adapters",
    scope: "inference",
    response: { description: "The models", name: "ModelList", schema: modelListSchema },
  },
  {
    method: "get",
    path: "/v1/models/{model}",
    tag: "inference",
    summary: "Retrieve a model",
    scope: "inference",
    response: { description: "The model", name: "Model", schema: modelObjectSchema },
  },

  {
    method: "post",
    path: "/v1/files",
    tag: "files",
    summary: "Upload a fine-tuning file (validated at upload; errors name lines)",
    scope: "fine_tuning",
    request: { contentType: "multipart/form-data", name: "FileUpload", schema: fileUploadSchema },
    response: { description: "The file", schema: anyObject },
  },
  {
    method: "get",
    path: "/v1/files",
    tag: "files",
    summary: "List files",
    scope: "fine_tuning",
    query: page.extend({ purpose: z.string().optional() }),
    response: { description: "A page of files", schema: listOf(anyObject) },
  },
  {
    method: "get",
    path: "/v1/files/{file_id}",
    tag: "files",
    summary: "Retrieve a file",
    scope: "fine_tuning",
    response: { description: "The file", schema: anyObject },
  },
  {
    method: "get",
    path: "/v1/files/{file_id}/content",
    tag: "files",
    summary: "Download a file's content",
    scope: "fine_tuning",
    response: { description: "The JSONL", contentType: "application/jsonl" },
  },
  {
    method: "delete",
    path: "/v1/files/{file_id}",
    tag: "files",
    summary: "Delete a file",
    scope: "fine_tuning",
    response: { description: "Deleted", schema: deleted },
  },

  {
    method: "post",
    path: "/v1/fine_tuning/jobs",
    tag: "fine-tuning",
    summary: "Create a fine-tuning job",
    scope: "fine_tuning",
    request: { contentType: "application/json", name: "FineTuningJobRequest", schema: fineTuningJobRequestSchema },
    response: { description: "The job", schema: anyObject },
  },
  {
    method: "get",
    path: "/v1/fine_tuning/jobs",
    tag: "fine-tuning",
    summary: "List fine-tuning jobs",
    scope: "fine_tuning",
    query: page,
    response: { description: "A page of jobs", schema: listOf(anyObject) },
  },
  {
    method: "get",
    path: "/v1/fine_tuning/jobs/{job_id}",
    tag: "fine-tuning",
    summary: "Retrieve a job",
    scope: "fine_tuning",
    response: { description: "The job", schema: anyObject },
  },
  {
    method: "post",
    path: "/v1/fine_tuning/jobs/{job_id}/cancel",
    tag: "fine-tuning",
    summary: "Cancel a job",
    scope: "fine_tuning",
    response: { description: "The job", schema: anyObject },
  },
  {
    method: "get",
    path: "/v1/fine_tuning/jobs/{job_id}/events",
    tag: "fine-tuning",
    summary: "List a job's events",
    scope: "fine_tuning",
    query: page,
    response: { description: "A page of events", schema: listOf(anyObject) },
  },
  {
    method: "get",
    path: "/v1/fine_tuning/jobs/{job_id}/checkpoints",
    tag: "fine-tuning",
    summary: "List a job's checkpoints",
    scope: "fine_tuning",
    query: page,
    response: { description: "A page of checkpoints", schema: listOf(anyObject) },
  },

  {
    method: "get",
    path: "/v1/adapters",
    tag: "adapters",
    summary: "List adapters",
    scope: "inference",
    response: { description: "The adapters", schema: listOf(anyObject) },
  },
  {
    method: "get",
    path: "/v1/adapters/{adapter_id}",
    tag: "adapters",
    summary: "Retrieve an adapter",
    scope: "inference",
    response: { description: "The adapter", schema: anyObject },
  },
  {
    method: "delete",
    path: "/v1/adapters/{adapter_id}",
    tag: "adapters",
    summary: "Delete an adapter",
    scope: "fine_tuning",
    response: { description: "Deleted", schema: deleted },
  },
  {
    method: "post",
    path: "/v1/adapters/import",
    tag: "adapters",
    summary: "Import a PEFT LoRA adapter (projected onto the basis; the projection error is reported)",
    scope: "fine_tuning",
    request: { contentType: "multipart/form-data", name: "AdapterImportRequest", schema: adapterImportRequestSchema },
    response: { description: "The imported adapter", status: 201, name: "ImportedAdapter", schema: importedAdapterSchema },
  },
  {
    method: "get",
    path: "/v1/adapters/{adapter_id}/export",
    tag: "adapters",
    summary: "Export an adapter as PEFT LoRA files",
    scope: "fine_tuning",
    response: {
      description: "multipart/form-data with adapter_config (adapter_config.json) and adapter_model (adapter_model.safetensors)",
      contentType: "multipart/form-data",
    },
  },

  {
    method: "get",
    path: "/v1/usage",
    tag: "usage",
    summary: "Token usage over a window, per model and per day",
    scope: "inference",
    query: z.object({ start_time: z.int().optional(), end_time: z.int().optional() }),
    response: { description: "The usage report", schema: z.object({ object: z.literal("usage") }).loose() },
  },

  {
    method: "post",
    path: "/v1/webhooks",
    tag: "webhooks",
    summary: "Register a webhook endpoint (the signing secret is returned once)",
    scope: "admin",
    request: { contentType: "application/json", name: "WebhookRequest", schema: webhookRequestSchema },
    response: { description: "The endpoint with its secret", status: 201, name: "WebhookEndpoint", schema: webhookObjectSchema },
  },
  {
    method: "get",
    path: "/v1/webhooks",
    tag: "webhooks",
    summary: "List webhook endpoints",
    scope: "admin",
    response: { description: "The endpoints", schema: listOf(webhookObjectSchema) },
  },
  {
    method: "get",
    path: "/v1/webhooks/{webhook_id}",
    tag: "webhooks",
    summary: "Retrieve a webhook endpoint",
    scope: "admin",
    response: { description: "The endpoint", name: "WebhookEndpoint", schema: webhookObjectSchema },
  },
  {
    method: "get",
    path: "/v1/webhooks/{webhook_id}/deliveries",
    tag: "webhooks",
    summary: "Recent deliveries to an endpoint",
    scope: "admin",
    response: { description: "The deliveries", schema: listOf(webhookDeliverySchema) },
  },
  {
    method: "delete",
    path: "/v1/webhooks/{webhook_id}",
    tag: "webhooks",
    summary: "Delete a webhook endpoint",
    scope: "admin",
    response: { description: "Deleted", schema: deleted },
  },

  {
    method: "post",
    path: "/v1/api_keys",
    tag: "api keys",
    summary: "Issue an API key (the key is returned once)",
    scope: "admin",
    request: { contentType: "application/json", name: "ApiKeyRequest", schema: keyRequestSchema },
    response: { description: "The key with its secret", status: 201, schema: anyObject },
  },
  {
    method: "get",
    path: "/v1/api_keys",
    tag: "api keys",
    summary: "List API keys (prefixes only)",
    scope: "admin",
    response: { description: "The keys", schema: listOf(anyObject) },
  },
  {
    method: "delete",
    path: "/v1/api_keys/{key_id}",
    tag: "api keys",
    summary: "Revoke an API key",
    scope: "admin",
    response: { description: "The revoked key", schema: anyObject },
  },
];

/** The stream chunk schema, listed as a component for SSE readers. */
export const STREAM_CHUNK = { name: "ChatCompletionChunk", schema: chatCompletionChunkSchema };
