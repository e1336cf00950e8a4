/**
 * Every public operation of the API, with the zod schemas its route parses its body and query
 * with and types its answer by, imported from the route or from src/protocol, so the document
 * cannot describe anything the routes do not validate or send. workers/test/openapi.test.ts
 * fails when a mounted route is missing here or an operation here is not mounted;
 * workers/test/response-schemas.test.ts sends each operation's real answers through the document.
 */
import type { z } from "zod";
import {
  chatCompletionChunkSchema,
  chatCompletionRequestSchema,
  chatCompletionSchema,
  completionRequestSchema,
  modelObjectSchema,
  textCompletionSchema,
} from "../../../src/protocol/openai.ts";
import {
  adapterDeletedSchema,
  adapterObjectSchema,
  adapterPageSchema,
  apiKeyObjectSchema,
  apiKeyPageSchema,
  fileDeletedSchema,
  filePageSchema,
  fileObjectSchema,
  fineTuningCheckpointPageSchema,
  fineTuningJobEventPageSchema,
  fineTuningJobPageSchema,
  fineTuningJobSchema,
  jobEstimateSchema,
  issuedApiKeySchema,
  modelPageSchema,
  usageReportSchema,
} from "../../../src/protocol/platform-objects.ts";
import type { KeyScope } from "../auth/keys.ts";
import { adapterImportRequestSchema, importedAdapterSchema } from "../routes/adapter-transfer.ts";
import { adaptersQuerySchema } from "../routes/adapters.ts";
import { fileUploadSchema, filesQuerySchema } from "../routes/files.ts";
import { createJobSchema, jobCheckpointsQuerySchema, jobEventsQuerySchema, jobsQuerySchema } from "../routes/fine-tuning-jobs.ts";
import { keyRequestSchema, keysQuerySchema } from "../routes/keys.ts";
import { modelsQuerySchema } from "../routes/models.ts";
import { usageQuerySchema } from "../routes/usage.ts";
import {
  deliveriesQuerySchema,
  webhookDeletedSchema,
  webhookDeliveryPageSchema,
  webhookObjectSchema,
  webhookPageSchema,
  webhookRequestSchema,
  webhooksQuerySchema,
} from "../routes/webhooks.ts";

/** A JSON answer: the schema the route's response is typed by, named when it is a component. */
export interface JsonResponse {
  description: string;
  status?: number; // 200 unless given
  name?: string;
  schema: z.ZodType;
  /** With `stream: true` the answer is `text/event-stream` instead, each event's data one of these. */
  stream?: { name: string; schema: z.ZodType };
}

/** An answer that is not JSON (a file's bytes, a multipart bundle): described by its content type only. */
export interface RawResponse {
  description: string;
  status?: number;
  contentType: string;
}

export interface Operation {
  method: "get" | "post" | "delete";
  path: string; // OpenAPI template: /v1/files/{file_id}
  tag: string;
  summary: string;
  scope: KeyScope;
  request?: { contentType: "application/json" | "multipart/form-data"; name: string; schema: z.ZodType };
  query?: z.ZodObject;
  response: JsonResponse | RawResponse;
}

export const OPERATIONS: Operation[] = [
  {
    method: "post",
    path: "/v1/chat/completions",
    tag: "inference",
    summary: "Create a chat completion (JSON, or SSE with stream: true)",
    scope: "inference",
    request: { contentType: "application/json", name: "ChatCompletionRequest", schema: chatCompletionRequestSchema },
    response: {
      description: "The completion, or with `stream: true` `text/event-stream` of ChatCompletionChunk objects ending with [DONE]",
      name: "ChatCompletion",
      schema: chatCompletionSchema,
      stream: { name: "ChatCompletionChunk", schema: chatCompletionChunkSchema },
    },
  },
  {
    method: "post",
    path: "/v1/completions",
    tag: "inference",
    summary: "Create a text completion (JSON, or SSE with stream: true)",
    scope: "inference",
    request: { contentType: "application/json", name: "CompletionRequest", schema: completionRequestSchema },
    response: {
      description: "The completion, or with `stream: true` `text/event-stream` of TextCompletion chunks ending with [DONE]",
      name: "TextCompletion",
      schema: textCompletionSchema,
      stream: { name: "TextCompletion", schema: textCompletionSchema },
    },
  },
  {
    method: "get",
    path: "/v1/models",
    tag: "inference",
    summary: "List the base model and the tenant's fine-tuned and imported models (checkpoints are listed under their job)",
    scope: "inference",
    query: modelsQuerySchema,
    response: { description: "A page of models: the base model first, then adapters newest first", name: "ModelList", schema: modelPageSchema },
  },
  {
    method: "get",
    path: "/v1/models/{model}",
    tag: "inference",
    summary: "Retrieve a model (the base model, a fine-tuned or imported one, or a checkpoint)",
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
    response: { description: "The file", name: "File", schema: fileObjectSchema },
  },
  {
    method: "get",
    path: "/v1/files",
    tag: "files",
    summary: "List files",
    scope: "fine_tuning",
    query: filesQuerySchema,
    response: { description: "A page of files, newest first", name: "FileList", schema: filePageSchema },
  },
  {
    method: "get",
    path: "/v1/files/{file_id}",
    tag: "files",
    summary: "Retrieve a file",
    scope: "fine_tuning",
    response: { description: "The file", name: "File", schema: fileObjectSchema },
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
    response: { description: "Deleted", name: "FileDeleted", schema: fileDeletedSchema },
  },

  {
    method: "post",
    path: "/v1/fine_tuning/jobs",
    tag: "fine-tuning",
    summary: "Create a fine-tuning job",
    scope: "fine_tuning",
    request: { contentType: "application/json", name: "FineTuningJobRequest", schema: createJobSchema },
    response: { description: "The job", name: "FineTuningJob", schema: fineTuningJobSchema },
  },
  {
    method: "post",
    path: "/v1/fine_tuning/jobs/estimate",
    tag: "fine-tuning",
    summary: "Estimate a fine-tuning job without creating it",
    scope: "fine_tuning",
    request: { contentType: "application/json", name: "FineTuningJobRequest", schema: createJobSchema },
    response: { description: "The epochs, batch size, tokens and seconds the job would get", name: "FineTuningJobEstimate", schema: jobEstimateSchema },
  },
  {
    method: "get",
    path: "/v1/fine_tuning/jobs",
    tag: "fine-tuning",
    summary: "List fine-tuning jobs",
    scope: "fine_tuning",
    query: jobsQuerySchema,
    response: { description: "A page of jobs, newest first", name: "FineTuningJobList", schema: fineTuningJobPageSchema },
  },
  {
    method: "get",
    path: "/v1/fine_tuning/jobs/{job_id}",
    tag: "fine-tuning",
    summary: "Retrieve a job",
    scope: "fine_tuning",
    response: { description: "The job", name: "FineTuningJob", schema: fineTuningJobSchema },
  },
  {
    method: "post",
    path: "/v1/fine_tuning/jobs/{job_id}/cancel",
    tag: "fine-tuning",
    summary: "Cancel a job",
    scope: "fine_tuning",
    response: { description: "The job", name: "FineTuningJob", schema: fineTuningJobSchema },
  },
  {
    method: "get",
    path: "/v1/fine_tuning/jobs/{job_id}/events",
    tag: "fine-tuning",
    summary: "List a job's events",
    scope: "fine_tuning",
    query: jobEventsQuerySchema,
    response: { description: "A page of events, newest first", name: "FineTuningJobEventList", schema: fineTuningJobEventPageSchema },
  },
  {
    method: "get",
    path: "/v1/fine_tuning/jobs/{job_id}/checkpoints",
    tag: "fine-tuning",
    summary: "List a job's checkpoints (the newest few it keeps; each is usable as `model`)",
    scope: "fine_tuning",
    query: jobCheckpointsQuerySchema,
    response: { description: "A page of checkpoints, newest step first", name: "FineTuningCheckpointList", schema: fineTuningCheckpointPageSchema },
  },

  {
    method: "get",
    path: "/v1/adapters",
    tag: "adapters",
    summary: "List adapters: fine-tuned models, the checkpoints jobs keep, and imports",
    scope: "inference",
    query: adaptersQuerySchema,
    response: { description: "A page of adapters, newest first", name: "AdapterList", schema: adapterPageSchema },
  },
  {
    method: "get",
    path: "/v1/adapters/{adapter_id}",
    tag: "adapters",
    summary: "Retrieve an adapter (a checkpoint too)",
    scope: "inference",
    response: { description: "The adapter", name: "Adapter", schema: adapterObjectSchema },
  },
  {
    method: "delete",
    path: "/v1/adapters/{adapter_id}",
    tag: "adapters",
    summary: "Delete an adapter",
    scope: "fine_tuning",
    response: { description: "Deleted", name: "AdapterDeleted", schema: adapterDeletedSchema },
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
    query: usageQuerySchema,
    response: { description: "The usage report; `data` holds one page of day buckets", name: "UsageReport", schema: usageReportSchema },
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
    query: webhooksQuerySchema,
    response: { description: "A page of endpoints, oldest first", name: "WebhookEndpointList", schema: webhookPageSchema },
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
    summary: "Deliveries to an endpoint",
    scope: "admin",
    query: deliveriesQuerySchema,
    response: { description: "A page of deliveries, newest first", name: "WebhookDeliveryList", schema: webhookDeliveryPageSchema },
  },
  {
    method: "delete",
    path: "/v1/webhooks/{webhook_id}",
    tag: "webhooks",
    summary: "Delete a webhook endpoint",
    scope: "admin",
    response: { description: "Deleted", name: "WebhookEndpointDeleted", schema: webhookDeletedSchema },
  },

  {
    method: "post",
    path: "/v1/api_keys",
    tag: "api keys",
    summary: "Issue an API key (the key is returned once)",
    scope: "admin",
    request: { contentType: "application/json", name: "ApiKeyRequest", schema: keyRequestSchema },
    response: { description: "The key with its secret", status: 201, name: "IssuedApiKey", schema: issuedApiKeySchema },
  },
  {
    method: "get",
    path: "/v1/api_keys",
    tag: "api keys",
    summary: "List API keys (prefixes only)",
    scope: "admin",
    query: keysQuerySchema,
    response: { description: "A page of keys, oldest first", name: "ApiKeyList", schema: apiKeyPageSchema },
  },
  {
    method: "delete",
    path: "/v1/api_keys/{key_id}",
    tag: "api keys",
    summary: "Revoke an API key",
    scope: "admin",
    response: { description: "The revoked key", name: "ApiKey", schema: apiKeyObjectSchema },
  },
];
