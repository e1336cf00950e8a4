/**
 * The runner's HTTP API: OpenAI-compatible chat and text completions (streamed over SSE or not),
 * the model list, health and Prometheus metrics, and the internal routes under /internal.
 * Requests are validated by the protocol in src/ and served by the continuous-batching
 * scheduler; every failure is an OpenAI-shaped error.
 */
import { Hono, type Context } from "hono";
import { HTTPException } from "hono/http-exception";
import { streamSSE } from "hono/streaming";
import { BASE_MODEL_ID } from "../../src/constants.ts";
import { badRequest, notFound, serverError } from "../../src/errors.ts";
import {
  type FinishReason,
  parseChatCompletionRequest,
  parseCompletionRequest,
  requestedModel,
  type SamplingParameters,
  unknownModelMessage,
  type Usage,
} from "../../src/protocol/openai.ts";
import type { LlamaEngine } from "../engine/llama-engine.ts";
import type { GenerationEvent, GenerationOptions } from "../generate/generate.ts";
import { TokenBytes } from "../tokenizer/token-bytes.ts";
import type { TextTokenizer } from "../tokenizer/tokenizer.ts";
import { toApiError } from "./api-errors.ts";
import { chatChunk, chatCompletionBody, type FinishedChoice, type GeneratedToken, textChunk, textCompletionBody, usageChunk } from "./completion-bodies.ts";
import { renderChatPrompt } from "./chat-prompt.ts";
import { FREE_TEXT, type OutputShape, OutputShapes } from "./output-shape.ts";
import { internalRoutes, type InternalApiOptions } from "./internal-routes.ts";
import type { RunnerMetrics } from "./metrics.ts";
import { jsonBody, limitBody } from "../../src/request-body.ts";
import { RUNNER_PATHS } from "../../src/protocol/runner.ts";
import { assertValidAdapterId } from "../adapters/adapter-store.ts";
import { runnerAuth } from "./runner-auth.ts";
import { assertPromptCanFit, publicBodyLimit } from "./request-size.ts";
import type { Scheduler } from "./scheduler.ts";

export interface RunnerAppOptions {
  engine: LlamaEngine;
  tokenizer: TextTokenizer;
  scheduler: Scheduler;
  modelId?: string; // the base model's id in the API
  knowsAdapter?: (id: string) => boolean; // default: registered with the engine
  prepareAdapter?: (id: string) => Promise<void>; // loads a cold adapter before the response starts
  metrics?: RunnerMetrics | null; // serves GET /metrics and counts requests
  internal?: InternalApiOptions | null; // the /internal routes (they need `secret`); absent: none
  secret?: string | null; // the runner secret every route needs (runner-auth.ts); absent: every route is open
  bytesPerToken?: number; // most prompt bytes one token stands for (request-size.ts); default: no check before tokenising
  maxBodyBytes?: number; // largest body of the public API; default: room for the longest prompt that fits (request-size.ts)
  health?: () => Record<string, unknown>; // more fields for GET /health
}

interface Choice {
  index: number;
  promptIds: number[];
  echo: string; // a legacy completion's prompt, written before its text when `echo` is asked for
}

/** Builds the Hono app of the runner's public API. */
export function createRunnerApp(options: RunnerAppOptions): Hono {
  const { engine, tokenizer, scheduler } = options;
  const modelId = options.modelId ?? BASE_MODEL_ID;
  const knowsAdapter = options.knowsAdapter ?? ((id: string) => engine.hasAdapter(id));
  const tokenBytes = new TokenBytes(tokenizer);
  const outputShapes = new OutputShapes(tokenizer);
  const app = new Hono();

  app.onError((error, c) => {
    if (error instanceof HTTPException) return error.getResponse(); // the bearer check's own answer
    const api = toApiError(error);
    if (api.retryAfterSeconds !== null) c.header("Retry-After", String(api.retryAfterSeconds));
    return c.json(api.toBody(), api.status as 400);
  });
  app.notFound((c) => c.json(notFound(`Unknown route ${c.req.method} ${c.req.path}`).toBody(), 404));
  if (options.internal && !options.secret) throw new Error("the internal API needs a runner secret");
  if (options.secret) app.use(runnerAuth(options.secret)); // before every route, unknown ones too
  const bytesPerToken = options.bytesPerToken ?? Number.POSITIVE_INFINITY;
  const limitPublicBody = limitBody(options.maxBodyBytes ?? publicBodyLimit(scheduler.contextLimit, bytesPerToken));
  // Internal routes bound their own bodies: uploads are far larger than any prompt.
  app.use((c, next) => (c.req.path.startsWith(`${RUNNER_PATHS.internal}/`) ? next() : limitPublicBody(c, next)));
  const metrics = options.metrics ?? null;
  if (metrics !== null) {
    app.use(async (c, next) => {
      await next();
      metrics.request(c.req.routePath, c.res.status);
    });
    app.get(RUNNER_PATHS.metrics, async (c) => {
      const { contentType, body } = await metrics.render();
      return c.body(body, 200, { "content-type": contentType });
    });
  }
  if (options.internal) app.route(RUNNER_PATHS.internal, internalRoutes(options.internal));

  app.get(RUNNER_PATHS.health, (c) => c.json({ status: "ok", model: modelId, ...scheduler.stats, ...options.health?.() }));

  app.get(RUNNER_PATHS.models, (c) =>
    c.json({
      object: "list",
      data: [modelId, ...engine.adapterIds()].map((id) => ({ id, object: "model", created: 0, owned_by: id === modelId ? "system" : "tenant" })),
    }),
  );

  app.post(RUNNER_PATHS.chatCompletions, async (c) => {
    const request = parseChatCompletionRequest(await jsonBody(c));
    checkLogitBias(request, tokenizer);
    const adapterId = adapterFor(request, modelId, knowsAdapter);
    if (tokenizer.chatTemplate === null) throw badRequest("this model has no chat template; use /v1/completions", "messages");
    const prompt = renderChatPrompt(tokenizer, request, outputShapes.toolFormat);
    assertPromptCanFit(prompt, "messages", scheduler.contextLimit, bytesPerToken);
    const shape = await outputShapes.forChat(request);
    if (adapterId !== null) await options.prepareAdapter?.(adapterId);
    const promptIds = tokenizer.encode(prompt, { addSpecialTokens: false });
    const choices = Array.from({ length: request.n }, (_, index): Choice => ({ index, promptIds, echo: "" }));
    return respond(c, "chat", request, adapterId, choices, shape);
  });

  app.post(RUNNER_PATHS.completions, async (c) => {
    const request = parseCompletionRequest(await jsonBody(c));
    checkLogitBias(request, tokenizer);
    const adapterId = adapterFor(request, modelId, knowsAdapter);
    for (const prompt of request.prompt) assertPromptCanFit(prompt, "prompt", scheduler.contextLimit, bytesPerToken);
    if (adapterId !== null) await options.prepareAdapter?.(adapterId);
    const choices: Choice[] = [];
    for (const prompt of request.prompt) {
      const promptIds = tokenizer.encode(prompt);
      for (let i = 0; i < request.n; i++) choices.push({ index: choices.length, promptIds, echo: request.echo ? prompt : "" });
    }
    return respond(c, "text", request, adapterId, choices, FREE_TEXT);
  });

  /** Submits every choice, then answers as one JSON body or as an SSE stream. */
  function respond(c: Context, kind: "chat" | "text", request: SamplingParameters, adapterId: string | null, choices: Choice[], shape: OutputShape) {
    const header = { id: `${kind === "chat" ? "chatcmpl" : "cmpl"}-${crypto.randomUUID()}`, created: Math.floor(Date.now() / 1000), model: request.model };
    const bytes = request.top_logprobs === null ? null : tokenBytes;
    const controller = new AbortController();
    // A client that goes away (streamed or not) frees its rows at once.
    c.req.raw.signal.addEventListener("abort", () => controller.abort(), { once: true });
    let streams: AsyncIterable<GenerationEvent>[];
    try {
      streams = choices.map((choice) => {
        const room = engine.config.maxPositionEmbeddings - choice.promptIds.length;
        const constraint = shape.constraint();
        try {
          return submit(choice, { ...generationOptions(request, choice.index, room), constraint }, adapterId, controller.signal);
        } catch (error) {
          constraint?.dispose(); // the scheduler frees the constraints of the requests it took
          throw error;
        }
      });
    } catch (error) {
      controller.abort(); // choices queued before the refusal are served to nobody: drop them
      throw error;
    }
    if (!request.stream) {
      return (async () => {
        const finished = await Promise.all(streams.map((events) => collect(events, shape)));
        const usage = usageOf(choices, finished);
        const echo = choices.map((choice) => choice.echo);
        return c.json(kind === "chat" ? chatCompletionBody(header, finished, usage, bytes) : textCompletionBody(header, finished, echo, usage, bytes));
      })();
    }
    return streamSSE(c, async (sse) => {
      sse.onAbort(() => controller.abort()); // the client went away: free the rows now
      const send = (body: unknown) => sse.writeSSE({ data: JSON.stringify(body) });
      const finished: { completionTokens: number }[] = [];
      try {
        if (kind === "chat") for (const choice of choices) await send(chatChunk(header, choice.index, { role: "assistant", content: "" }, null, null, null));
        await Promise.all(
          streams.map(async (events, index) => {
            const echo = choices[index].echo;
            let offset = echo.length; // where the next text starts in the choice's text
            if (echo.length > 0) await send(textChunk(header, index, echo, null, null, null, 0));
            const held: GeneratedToken[] = []; // tokens whose text waits for the end (tool calls)
            const write = async (tokens: GeneratedToken[], text: string, reason: FinishReason | null) => {
              if (kind === "chat") await send(chatChunk(header, index, reason === null ? { content: text } : {}, reason, tokens, bytes));
              else await send(textChunk(header, index, text, reason, tokens, bytes, offset));
              offset += text.length;
            };
            for await (const event of events) {
              if (event.type === "token") {
                const token = { id: event.id, text: event.text, logprob: event.logprob };
                if (shape.holdsText) held.push(token);
                else if (event.text.length > 0 || bytes !== null) await write([token], event.text, null);
                continue;
              }
              finished[index] = event;
              if (shape.holdsText) {
                const result = shape.finish(event.text);
                if (result.content !== null && result.content.length > 0) await write(held, result.content, null);
                else if (bytes !== null && held.length > 0) await write(held, "", null);
                if (result.toolCalls.length > 0) {
                  await send(chatChunk(header, index, { tool_calls: result.toolCalls.map((call, at) => ({ index: at, ...call })) }, null, null, null));
                }
                await send(chatChunk(header, index, {}, result.toolCalls.length > 0 ? "tool_calls" : event.reason, null, null));
                continue;
              }
              if (event.tail.length > 0) await write([], event.tail, null);
              if (kind === "chat") await send(chatChunk(header, index, {}, event.reason, null, null));
              else await send(textChunk(header, index, "", event.reason, null, null, offset));
            }
          }),
        );
        if (request.include_usage) await send(usageChunk(header, kind, usageOf(choices, finished)));
        await sse.writeSSE({ data: "[DONE]" });
      } catch (error) {
        // Headers are gone: end the stream with an error event a client can read, then close.
        controller.abort();
        await sse.writeSSE({ data: JSON.stringify(toApiError(error).toBody()) });
      }
    });
  }

  function submit(choice: Choice, generation: GenerationOptions, adapterId: string | null, signal: AbortSignal): AsyncIterable<GenerationEvent> {
    return scheduler.submit({ promptIds: choice.promptIds, adapterId, options: generation, signal });
  }

  return app;
}

function adapterFor(request: SamplingParameters, modelId: string, knowsAdapter: (id: string) => boolean): string | null {
  const { adapterId, param } = requestedModel(request, modelId);
  if (adapterId === null) return null;
  try {
    // Checked before anything reads the id: it ends up in paths, URLs and log lines.
    assertValidAdapterId(adapterId);
  } catch {
    throw notFound(`The model ${JSON.stringify(adapterId)} does not exist: ids are 1-200 characters of A-Z a-z 0-9 : . _ / -.`, param, "model_not_found");
  }
  if (!knowsAdapter(adapterId)) throw notFound(unknownModelMessage(adapterId), param, "model_not_found");
  return adapterId;
}

function generationOptions(request: SamplingParameters, index: number, room: number): GenerationOptions {
  return {
    maxNewTokens: Math.max(1, Math.min(request.max_tokens ?? room, room)),
    temperature: request.temperature,
    topP: request.top_p,
    topK: request.top_k,
    ...(request.seed !== undefined ? { seed: request.seed + index } : {}),
    stop: request.stop,
    presencePenalty: request.presence_penalty,
    frequencyPenalty: request.frequency_penalty,
    logitBias: request.logit_bias,
    topLogprobs: request.top_logprobs,
  };
}

/** `logit_bias` names token ids: each must be one of this tokenizer's. */
function checkLogitBias(request: SamplingParameters, tokenizer: TextTokenizer): void {
  for (const id of request.logit_bias.keys()) {
    if (id >= tokenizer.vocabSize) throw badRequest(`token id ${id} is not in the vocabulary (ids 0 to ${tokenizer.vocabSize - 1})`, "logit_bias");
  }
}

/** Reads a choice's events to the end: its tokens, then its text split into content and tool calls. */
async function collect(events: AsyncIterable<GenerationEvent>, shape: OutputShape): Promise<FinishedChoice & { completionTokens: number }> {
  const tokens: GeneratedToken[] = [];
  for await (const event of events) {
    if (event.type === "token") tokens.push({ id: event.id, text: event.text, logprob: event.logprob });
    else {
      const { content, toolCalls } = shape.finish(event.text);
      return { content, toolCalls, reason: toolCalls.length > 0 ? "tool_calls" : event.reason, tokens, completionTokens: event.completionTokens };
    }
  }
  throw serverError("generation ended without finishing");
}

function usageOf(choices: Choice[], finished: { completionTokens: number }[]): Usage {
  // Every choice of one prompt shares it; count each distinct prompt once, as OpenAI does.
  const prompts = new Set(choices.map((c) => c.promptIds));
  const promptTokens = [...prompts].reduce((s, p) => s + p.length, 0);
  const completionTokens = finished.reduce((s, f) => s + (f?.completionTokens ?? 0), 0);
  return { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens };
}
