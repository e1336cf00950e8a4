// The OpenAI-shaped public inference API: request schemas (which also normalise what clients
// send into one shape the engine can use) and response schemas. Clients send many fields we do
// not use; unknown keys are dropped, but a known key with a wrong type or value is a 400.
import { z } from "zod";
import { BASE_MODEL_ID } from "../constants.ts";
import { fromZodError } from "../errors.ts";

// Many clients send `null` for "not given"; treat it like an absent key.
function optional<Schema extends z.ZodType>(schema: Schema) {
  return schema.nullish().transform((value) => value ?? undefined);
}

/** Most stop sequences a request may give (OpenAI's limit). */
export const MAX_STOP_SEQUENCES = 4;
/** Most choices one request may ask for. */
export const MAX_CHOICES = 16;

const stopSchema = z.union([z.string().min(1), z.array(z.string().min(1)).min(1).max(MAX_STOP_SEQUENCES)]);

const streamOptionsSchema = z.object({ include_usage: optional(z.boolean()) });

// Fields that /v1/chat/completions and /v1/completions share.
const samplingFields = {
  model: z.string().min(1),
  /** What @huggingface/inference sends to pick a LoRA-style adapter; wins over `model`. */
  adapter_id: optional(z.string().min(1)),
  max_tokens: optional(z.int().min(1)),
  temperature: optional(z.number().min(0).max(2)),
  top_p: optional(z.number().gt(0).max(1)),
  /** vLLM's extension: keep the k most likely tokens; 0 or -1 keeps all. */
  top_k: optional(z.int().min(-1).max(1_000_000)),
  n: optional(z.int().min(1).max(MAX_CHOICES)),
  stop: optional(stopSchema),
  seed: optional(z.int()),
  stream: optional(z.boolean()),
  stream_options: optional(streamOptionsSchema),
  presence_penalty: optional(z.number().min(-2).max(2)),
  frequency_penalty: optional(z.number().min(-2).max(2)),
  user: optional(z.string()),
};

type RawSampling = z.output<z.ZodObject<typeof samplingFields>>;

/** Sampling settings after OpenAI's defaults are applied; shared by both request kinds. */
export interface SamplingParameters {
  model: string;
  adapter_id: string | undefined;
  /** Undefined: generate until a stop sequence, end of sequence, or the context is full. */
  max_tokens: number | undefined;
  temperature: number;
  top_p: number;
  /** 0: no top-k filter. */
  top_k: number;
  n: number;
  stop: string[];
  seed: number | undefined;
  stream: boolean;
  /** Send a final chunk with `usage` (only meaningful when streaming). */
  include_usage: boolean;
  presence_penalty: number;
  frequency_penalty: number;
  user: string | undefined;
}

function normaliseSampling(raw: RawSampling, maxCompletionTokens: number | undefined, ctx: z.RefinementCtx): SamplingParameters {
  if (raw.stream_options !== undefined && raw.stream !== true) {
    ctx.addIssue({
      code: "custom",
      path: ["stream_options"],
      message: "'stream_options' is only allowed when 'stream' is true.",
    });
  }
  return {
    model: raw.model,
    adapter_id: raw.adapter_id,
    // `max_completion_tokens` replaced `max_tokens` in OpenAI's API; the newer name wins.
    max_tokens: maxCompletionTokens ?? raw.max_tokens,
    temperature: raw.temperature ?? 1,
    top_p: raw.top_p ?? 1,
    top_k: Math.max(0, raw.top_k ?? 0),
    n: raw.n ?? 1,
    stop: raw.stop === undefined ? [] : typeof raw.stop === "string" ? [raw.stop] : raw.stop,
    seed: raw.seed,
    stream: raw.stream ?? false,
    include_usage: raw.stream_options?.include_usage ?? false,
    presence_penalty: raw.presence_penalty ?? 0,
    frequency_penalty: raw.frequency_penalty ?? 0,
    user: raw.user,
  };
}

// ---------------------------------------------------------------------------------------------
// POST /v1/chat/completions

/** Who said a message. `developer` is OpenAI's newer name for `system`. */
export const chatRoleSchema = z.enum(["system", "developer", "user", "assistant"]);
export type ChatRole = z.infer<typeof chatRoleSchema>;

const textContentPartSchema = z.object({
  type: z.literal("text", { error: "only text content parts are supported" }),
  text: z.string(),
});

// Text parts are joined with newlines, as vLLM does, so a chat template sees one string.
const messageContentSchema = z
  .union([z.string(), z.array(textContentPartSchema)])
  .transform((content) => (typeof content === "string" ? content : content.map((part) => part.text).join("\n")));

/** One chat message with its content normalised to a string. */
export const chatMessageSchema = z.object({
  role: chatRoleSchema,
  content: messageContentSchema,
  name: optional(z.string()),
});
export type ChatMessage = z.output<typeof chatMessageSchema>;

/** The body of `POST /v1/chat/completions`, normalised. */
export const chatCompletionRequestSchema = z
  .object({
    ...samplingFields,
    messages: z.array(chatMessageSchema).min(1),
    max_completion_tokens: optional(z.int().min(1)),
  })
  .transform(({ messages, max_completion_tokens, ...raw }, ctx) => ({
    ...normaliseSampling(raw, max_completion_tokens, ctx),
    messages,
  }));
export type ChatCompletionRequest = z.output<typeof chatCompletionRequestSchema>;

// ---------------------------------------------------------------------------------------------
// POST /v1/completions

const isTokenArray = (value: unknown): boolean =>
  Array.isArray(value) && value.length > 0 && value.every((item) => typeof item === "number" || Array.isArray(item));

// OpenAI also accepts token ids (number[] or number[][]); ids are tokenizer-specific, so we
// refuse them with a message that says what to send instead.
const promptSchema = z
  .unknown()
  .superRefine((value, ctx) => {
    if (isTokenArray(value)) {
      ctx.addIssue({
        code: "custom",
        message: "token-id prompts are not supported; send the prompt as a string or an array of strings.",
      });
    }
  })
  .pipe(z.union([z.string(), z.array(z.string()).min(1)]))
  .transform((prompt) => (typeof prompt === "string" ? [prompt] : prompt));

/** The body of `POST /v1/completions`, normalised: `prompt` is always a list of prompts. */
export const completionRequestSchema = z
  .object({ ...samplingFields, prompt: promptSchema })
  .transform(({ prompt, ...raw }, ctx) => ({ ...normaliseSampling(raw, undefined, ctx), prompt }));
export type CompletionRequest = z.output<typeof completionRequestSchema>;

// ---------------------------------------------------------------------------------------------
// Parsing helpers

/** Parses a chat completion request body; throws ApiError 400 naming the first bad field. */
export function parseChatCompletionRequest(body: unknown): ChatCompletionRequest {
  const result = chatCompletionRequestSchema.safeParse(body, { reportInput: true });
  if (!result.success) throw fromZodError(result.error);
  return result.data;
}

/** Parses a completion request body; throws ApiError 400 naming the first bad field. */
export function parseCompletionRequest(body: unknown): CompletionRequest {
  const result = completionRequestSchema.safeParse(body, { reportInput: true });
  if (!result.success) throw fromZodError(result.error);
  return result.data;
}

/** The adapter a request asks for: `adapter_id`, else `model`; null means the base model. */
export function resolveAdapterId(request: { model: string; adapter_id?: string | undefined | null }): string | null {
  if (request.adapter_id) return request.adapter_id === BASE_MODEL_ID ? null : request.adapter_id;
  return request.model === BASE_MODEL_ID ? null : request.model;
}

// ---------------------------------------------------------------------------------------------
// Responses

/** Why generation ended: a stop sequence or end of sequence, or the token limit. */
export const finishReasonSchema = z.enum(["stop", "length"]);
export type FinishReason = z.infer<typeof finishReasonSchema>;

/** Token counts for one request. */
export const usageSchema = z.object({
  prompt_tokens: z.int().min(0),
  completion_tokens: z.int().min(0),
  total_tokens: z.int().min(0),
});
export type Usage = z.infer<typeof usageSchema>;

const responseHeader = {
  id: z.string(),
  created: z.int(),
  model: z.string(),
};

/** The body of a non-streamed chat completion. */
export const chatCompletionSchema = z.object({
  ...responseHeader,
  object: z.literal("chat.completion"),
  choices: z.array(
    z.object({
      index: z.int().min(0),
      message: z.object({ role: z.literal("assistant"), content: z.string() }),
      finish_reason: finishReasonSchema,
      logprobs: z.null(),
    }),
  ),
  usage: usageSchema,
});
export type ChatCompletion = z.infer<typeof chatCompletionSchema>;

/**
 * One SSE event of a streamed chat completion. With `include_usage`, content chunks carry
 * `usage: null` and a last chunk has `choices: []` and the usage.
 */
export const chatCompletionChunkSchema = z.object({
  ...responseHeader,
  object: z.literal("chat.completion.chunk"),
  choices: z.array(
    z.object({
      index: z.int().min(0),
      delta: z.object({ role: z.literal("assistant").optional(), content: z.string().optional() }),
      finish_reason: finishReasonSchema.nullable(),
      logprobs: z.null(),
    }),
  ),
  usage: usageSchema.nullable().optional(),
});
export type ChatCompletionChunk = z.infer<typeof chatCompletionChunkSchema>;

/** The body of a legacy text completion; streamed chunks share the shape with a null finish_reason. */
export const textCompletionSchema = z.object({
  ...responseHeader,
  object: z.literal("text_completion"),
  choices: z.array(
    z.object({
      index: z.int().min(0),
      text: z.string(),
      finish_reason: finishReasonSchema.nullable(),
      logprobs: z.null(),
    }),
  ),
  usage: usageSchema.nullable().optional(),
});
export type TextCompletion = z.infer<typeof textCompletionSchema>;

/** One entry of `GET /v1/models`: the base model or an adapter. */
export const modelObjectSchema = z.object({
  id: z.string(),
  object: z.literal("model"),
  created: z.int(),
  owned_by: z.string(),
});
export type ModelObject = z.infer<typeof modelObjectSchema>;

/** The body of `GET /v1/models`. */
export const modelListSchema = z.object({
  object: z.literal("list"),
  data: z.array(modelObjectSchema),
});
export type ModelList = z.infer<typeof modelListSchema>;
