// The OpenAI-shaped public inference API: request schemas (which also normalise what clients
// send into one shape the engine can use) and response schemas. Every top-level field of
// OpenAI's chat-completions and completions requests is either honoured or refused with a 400
// that names it; an unknown field is refused too, so nothing a client asks for is silently dropped.
import { z } from "zod";
import { optional } from "./optional.ts";
import { BASE_MODEL_ID } from "../constants.ts";
import { fromZodError } from "../errors.ts";
import { chatLogprobsSchema, completionLogprobsSchema, MAX_CHAT_TOP_LOGPROBS, MAX_COMPLETION_LOGPROBS } from "./logprobs.ts";
import {
  type FunctionTool,
  type ResponseFormat,
  responseFormatSchema,
  type ToolChoice,
  toolCallSchema,
  toolChoiceSchema,
  toolsSchema,
} from "./structured-output.ts";

/**
 * A field of OpenAI's API this platform does not implement: absent or null is fine, any other
 * value is a 400 saying why (`code: "unsupported_parameter"`), unless `harmless` accepts it
 * (a value that asks for what we do anyway, e.g. `store: false`).
 */
function unsupported(reason: string, harmless: (value: unknown) => boolean = () => false) {
  return optional(
    z.unknown().superRefine((value, ctx) => {
      if (!harmless(value)) ctx.addIssue({ code: "custom", message: reason, params: { code: "unsupported_parameter" } });
    }),
  ).transform(() => undefined);
}

/** Most stop sequences a request may give (OpenAI's limit). */
export const MAX_STOP_SEQUENCES = 4;
/** Most choices one request may ask for. */
export const MAX_CHOICES = 16;
/** Most entries of `logit_bias`. */
export const MAX_LOGIT_BIAS_ENTRIES = 1024;

const stopSchema = z.union([z.string().min(1), z.array(z.string().min(1)).min(1).max(MAX_STOP_SEQUENCES)]);

const streamOptionsSchema = z.strictObject({
  include_usage: optional(z.boolean()),
  // Padding that hides token lengths on the wire; asking for none is what we send anyway.
  include_obfuscation: unsupported("stream obfuscation is not supported; send false or leave it out", (value) => value === false),
});

// Token ids (as strings: JSON keys) to a bias added to their logits; the runner checks the ids
// against its vocabulary.
const logitBiasSchema = z
  .record(z.string().regex(/^(0|[1-9][0-9]{0,8})$/, "keys must be token ids"), z.number().min(-100).max(100))
  .refine((bias) => Object.keys(bias).length <= MAX_LOGIT_BIAS_ENTRIES, `at most ${MAX_LOGIT_BIAS_ENTRIES} entries`)
  .transform((bias) => new Map(Object.entries(bias).map(([id, value]) => [Number(id), value])));

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
  logit_bias: optional(logitBiasSchema),
  /** An end-user id for abuse monitoring: accepted and never used for generation. */
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
  /** Token id → bias added to its logit; empty when none. */
  logit_bias: Map<number, number>;
  /** Alternatives to return per generated token; null: no log-probabilities at all. */
  top_logprobs: number | null;
  user: string | undefined;
}

function normaliseSampling(
  raw: RawSampling,
  extra: { maxCompletionTokens: number | undefined; topLogprobs: number | null },
  ctx: z.RefinementCtx,
): SamplingParameters {
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
    max_tokens: extra.maxCompletionTokens ?? raw.max_tokens,
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
    logit_bias: raw.logit_bias ?? new Map(),
    top_logprobs: extra.topLogprobs,
    user: raw.user,
  };
}

// ---------------------------------------------------------------------------------------------
// POST /v1/chat/completions

/** Who said a message. `developer` is OpenAI's newer name for `system`; `tool` carries a call's result. */
export const chatRoleSchema = z.enum(["system", "developer", "user", "assistant", "tool"]);
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
export const chatMessageSchema = z
  .object({
    role: chatRoleSchema,
    // An assistant message that only calls tools has no content.
    content: optional(messageContentSchema),
    name: optional(z.string()),
    tool_calls: optional(z.array(toolCallSchema).min(1)),
    tool_call_id: optional(z.string().min(1)),
  })
  .superRefine((message, ctx) => {
    if (message.content === undefined && !(message.role === "assistant" && message.tool_calls !== undefined)) {
      // Reported as a missing field: only an assistant message that calls tools may leave it out.
      ctx.addIssue({ code: "invalid_type", expected: "string", input: undefined, path: ["content"], message: "content is required" });
    }
    if (message.tool_calls !== undefined && message.role !== "assistant") {
      ctx.addIssue({ code: "custom", path: ["tool_calls"], message: "only assistant messages call tools" });
    }
    if (message.role === "tool" && message.tool_call_id === undefined) {
      ctx.addIssue({ code: "custom", path: ["tool_call_id"], message: "a tool message names the call it answers" });
    }
  })
  .transform(({ content, ...message }) => ({ ...message, content: content ?? "" }));
export type ChatMessage = z.output<typeof chatMessageSchema>;

/** The body of `POST /v1/chat/completions`, normalised. */
export const chatCompletionRequestSchema = z
  .strictObject({
    ...samplingFields,
    messages: z.array(chatMessageSchema).min(1),
    max_completion_tokens: optional(z.int().min(1)),
    logprobs: optional(z.boolean()),
    top_logprobs: optional(z.int().min(0).max(MAX_CHAT_TOP_LOGPROBS)),
    response_format: optional(responseFormatSchema),
    tools: optional(toolsSchema),
    tool_choice: optional(toolChoiceSchema),
    parallel_tool_calls: optional(z.boolean()),
    // Accepted, with no effect on the output: a key that groups prompts for OpenAI's prompt cache
    // (every prompt here is computed afresh) and an end-user id for abuse monitoring, like `user`.
    prompt_cache_key: optional(z.string()),
    safety_identifier: optional(z.string()),
    prompt_cache_retention: unsupported("prompt caching is not offered"),
    prompt_cache_options: unsupported("prompt caching is not offered"),
    moderation: unsupported("moderation is not offered"),
    metadata: unsupported("metadata is kept only with stored completions, which are not supported"),
    store: unsupported("stored completions are not supported; send false or leave it out", (value) => value === false),
    service_tier: unsupported("service tiers are not offered; send 'auto' or 'default'", (value) => value === "auto" || value === "default"),
    modalities: unsupported("only text output is supported", (value) => Array.isArray(value) && value.length === 1 && value[0] === "text"),
    audio: unsupported("audio output is not supported"),
    prediction: unsupported("predicted outputs are not supported"),
    reasoning_effort: unsupported("reasoning effort applies to reasoning models only"),
    verbosity: unsupported("verbosity is not supported"),
    web_search_options: unsupported("web search is not supported"),
    functions: unsupported("'functions' is deprecated; send 'tools'"),
    function_call: unsupported("'function_call' is deprecated; send 'tool_choice'"),
  })
  .transform((raw, ctx) => {
    const { messages, max_completion_tokens, logprobs, top_logprobs, response_format, tools, tool_choice, parallel_tool_calls } = raw;
    if (top_logprobs !== undefined && logprobs !== true) {
      ctx.addIssue({ code: "custom", path: ["top_logprobs"], message: "'logprobs' must be true when 'top_logprobs' is given" });
    }
    const choice: ToolChoice = tool_choice ?? (tools !== undefined && tools.length > 0 ? "auto" : "none");
    if (choice !== "none" && (tools === undefined || tools.length === 0)) {
      ctx.addIssue({ code: "custom", path: ["tool_choice"], message: "'tool_choice' needs 'tools'" });
    }
    if (typeof choice === "object" && !tools?.some((tool) => tool.name === choice.name)) {
      ctx.addIssue({ code: "custom", path: ["tool_choice", "function", "name"], message: `no tool is named '${choice.name}'` });
    }
    const format: ResponseFormat = response_format ?? { type: "text" };
    if (format.type !== "text" && choice !== "none") {
      ctx.addIssue({
        code: "custom",
        path: ["response_format"],
        message: "a JSON response format with tools the model may call is not supported; send tool_choice 'none' or leave out response_format",
        params: { code: "unsupported_parameter" },
      });
    }
    const sampling = normaliseSampling(raw, { maxCompletionTokens: max_completion_tokens, topLogprobs: logprobs === true ? (top_logprobs ?? 0) : null }, ctx);
    return {
      ...sampling,
      messages,
      response_format: format,
      tools: (tools ?? []) satisfies FunctionTool[],
      tool_choice: choice,
      parallel_tool_calls: parallel_tool_calls ?? true,
    };
  });
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
  .strictObject({
    ...samplingFields,
    prompt: promptSchema,
    logprobs: optional(z.int().min(0).max(MAX_COMPLETION_LOGPROBS)),
    echo: optional(z.boolean()),
    // Generating more candidates than are returned and keeping the likeliest is not offered;
    // asking for exactly `n` is what every request gets.
    best_of: optional(z.int().min(1).max(MAX_CHOICES)),
    suffix: unsupported("insertion (a suffix after the completion) is not supported", (value) => value === ""),
    // Text Generation Inference's parameters, which @huggingface/inference's textGeneration
    // flattens into the body: do_sample false is greedy, return_full_text is echo.
    do_sample: optional(z.boolean()),
    return_full_text: optional(z.boolean()),
    repetition_penalty: unsupported("repetition_penalty is not supported; send frequency_penalty or presence_penalty", (value) => value === 1),
    watermark: unsupported("watermarking is not supported", (value) => value === false),
  })
  .transform(({ prompt, logprobs, echo: openaiEcho, best_of, do_sample, return_full_text, ...raw }, ctx) => {
    const echo = openaiEcho ?? return_full_text;
    if (do_sample === false) raw.temperature = 0;
    if (best_of !== undefined && best_of !== (raw.n ?? 1)) {
      ctx.addIssue({
        code: "custom",
        path: ["best_of"],
        message: "only best_of equal to n is supported",
        params: { code: "unsupported_parameter" },
      });
    }
    if (echo === true && logprobs !== undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["echo"],
        message: "echo with logprobs (the prompt's log-probabilities) is not supported",
        params: { code: "unsupported_parameter" },
      });
    }
    return { ...normaliseSampling(raw, { maxCompletionTokens: undefined, topLogprobs: logprobs ?? null }, ctx), prompt, echo: echo ?? false };
  });
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

/** The model a request names, and the field that named it. */
export interface RequestedModel {
  /** The adapter to serve with, or null for the base model. */
  adapterId: string | null;
  /** What the request named, the base model's id included. */
  name: string;
  /** The field an error about the model points at. */
  param: "adapter_id" | "model";
}

/**
 * The model a request asks for, as the edge and the runner both read it: a top-level
 * `adapter_id` (what @huggingface/inference sends) wins over `model`; naming the base model
 * (`baseModelId`) means no adapter.
 */
export function requestedModel(request: { model: string; adapter_id?: string | undefined | null }, baseModelId: string = BASE_MODEL_ID): RequestedModel {
  const param = request.adapter_id ? "adapter_id" : "model";
  const name = request.adapter_id || request.model;
  return { adapterId: name === baseModelId ? null : name, name, param };
}

/** The message of the 404 for a model that does not exist or is not the caller's (the same text on the edge and the runner). */
export function unknownModelMessage(name: string): string {
  return `The model '${name}' does not exist or you do not have access to it.`;
}

// ---------------------------------------------------------------------------------------------
// Responses

/** Why generation ended: a stop sequence or end of sequence, the token limit, or a call of a tool. */
export const finishReasonSchema = z.enum(["stop", "length", "tool_calls"]);
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
      message: z.object({
        role: z.literal("assistant"),
        content: z.string().nullable(),
        refusal: z.null(),
        tool_calls: z.array(toolCallSchema).optional(),
      }),
      finish_reason: finishReasonSchema,
      logprobs: chatLogprobsSchema.nullable(),
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
      delta: z.object({
        role: z.literal("assistant").optional(),
        content: z.string().nullable().optional(),
        tool_calls: z.array(toolCallSchema.extend({ index: z.int().min(0) })).optional(),
      }),
      finish_reason: finishReasonSchema.nullable(),
      logprobs: chatLogprobsSchema.nullable(),
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
      logprobs: completionLogprobsSchema.nullable(),
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
