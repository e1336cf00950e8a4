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
import { parseChatCompletionRequest, parseCompletionRequest, type SamplingParameters, type Usage } from "../../src/protocol/openai.ts";
import type { LlamaEngine } from "../engine/llama-engine.ts";
import type { GenerationEvent, GenerationOptions } from "../generate/generate.ts";
import type { TextTokenizer } from "../tokenizer/tokenizer.ts";
import { toApiError } from "./api-errors.ts";
import { internalRoutes, type InternalApiOptions } from "./internal-routes.ts";
import type { RunnerMetrics } from "./metrics.ts";
import { jsonBody } from "../../src/request-body.ts";
import type { Scheduler } from "./scheduler.ts";

export interface RunnerAppOptions {
  engine: LlamaEngine;
  tokenizer: TextTokenizer;
  scheduler: Scheduler;
  modelId?: string; // the base model's id in the API
  knowsAdapter?: (id: string) => boolean; // default: registered with the engine
  prepareAdapter?: (id: string) => Promise<void>; // loads a cold adapter before the response starts
  metrics?: RunnerMetrics | null; // serves GET /metrics and counts requests
  internal?: InternalApiOptions | null; // the /internal routes; absent: none
  health?: () => Record<string, unknown>; // more fields for GET /health
}

interface Choice {
  index: number;
  promptIds: number[];
}

/** Builds the Hono app of the runner's public API. */
export function createRunnerApp(options: RunnerAppOptions): Hono {
  const { engine, tokenizer, scheduler } = options;
  const modelId = options.modelId ?? BASE_MODEL_ID;
  const knowsAdapter = options.knowsAdapter ?? ((id: string) => engine.hasAdapter(id));
  const app = new Hono();

  app.onError((error, c) => {
    if (error instanceof HTTPException) return error.getResponse(); // the bearer check's own answer
    const api = toApiError(error);
    if (api.retryAfterSeconds !== null) c.header("Retry-After", String(api.retryAfterSeconds));
    return c.json(api.toBody(), api.status as 400);
  });
  app.notFound((c) => c.json(notFound(`Unknown route ${c.req.method} ${c.req.path}`).toBody(), 404));
  const metrics = options.metrics ?? null;
  if (metrics !== null) {
    app.use(async (c, next) => {
      await next();
      metrics.request(c.req.routePath, c.res.status);
    });
    app.get("/metrics", async (c) => {
      const { contentType, body } = await metrics.render();
      return c.body(body, 200, { "content-type": contentType });
    });
  }
  if (options.internal) app.route("/internal", internalRoutes(options.internal));

  app.get("/health", (c) => c.json({ status: "ok", model: modelId, ...scheduler.stats, ...options.health?.() }));

  app.get("/v1/models", (c) =>
    c.json({
      object: "list",
      data: [modelId, ...engine.adapterIds()].map((id) => ({ id, object: "model", created: 0, owned_by: id === modelId ? "system" : "tenant" })),
    }),
  );

  app.post("/v1/chat/completions", async (c) => {
    const request = parseChatCompletionRequest(await jsonBody(c));
    const adapterId = adapterFor(request, modelId, knowsAdapter);
    if (adapterId !== null) await options.prepareAdapter?.(adapterId);
    if (tokenizer.chatTemplate === null) throw badRequest("this model has no chat template; use /v1/completions", "messages");
    const prompt = tokenizer.applyChatTemplate(
      request.messages.map((m) => ({ role: m.role === "developer" ? "system" : m.role, content: m.content })),
      { addGenerationPrompt: true },
    );
    const promptIds = tokenizer.encode(prompt, { addSpecialTokens: false });
    const choices = Array.from({ length: request.n }, (_, index) => ({ index, promptIds }));
    return respond(c, "chat", request, adapterId, choices);
  });

  app.post("/v1/completions", async (c) => {
    const request = parseCompletionRequest(await jsonBody(c));
    const adapterId = adapterFor(request, modelId, knowsAdapter);
    if (adapterId !== null) await options.prepareAdapter?.(adapterId);
    const choices: Choice[] = [];
    for (const prompt of request.prompt) {
      const promptIds = tokenizer.encode(prompt);
      for (let i = 0; i < request.n; i++) choices.push({ index: choices.length, promptIds });
    }
    return respond(c, "text", request, adapterId, choices);
  });

  /** Submits every choice, then answers as one JSON body or as an SSE stream. */
  function respond(c: Context, kind: "chat" | "text", request: SamplingParameters, adapterId: string | null, choices: Choice[]) {
    const id = `${kind === "chat" ? "chatcmpl" : "cmpl"}-${crypto.randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    const model = request.model;
    const controller = new AbortController();
    // A client that goes away (streamed or not) frees its rows at once.
    c.req.raw.signal.addEventListener("abort", () => controller.abort(), { once: true });
    let streams: AsyncIterable<GenerationEvent>[];
    try {
      streams = choices.map((choice) =>
        submit(choice, generationOptions(request, choice.index, engine.config.maxPositionEmbeddings - choice.promptIds.length), adapterId, controller.signal),
      );
    } catch (error) {
      controller.abort(); // choices queued before the refusal are served to nobody: drop them
      throw error;
    }
    if (!request.stream) {
      return (async () => {
        const finished = await Promise.all(streams.map(last));
        const usage = usageOf(choices, finished);
        const body =
          kind === "chat"
            ? {
                id,
                object: "chat.completion",
                created,
                model,
                choices: finished.map((f, i) => ({ index: i, message: { role: "assistant", content: f.text }, finish_reason: f.reason })),
                usage,
              }
            : { id, object: "text_completion", created, model, choices: finished.map((f, i) => ({ index: i, text: f.text, finish_reason: f.reason })), usage };
        return c.json(body);
      })();
    }
    return streamSSE(c, async (sse) => {
      sse.onAbort(() => controller.abort()); // the client went away: free the rows now
      const chunk = (index: number, text: string | null, reason: string | null) =>
        kind === "chat"
          ? { id, object: "chat.completion.chunk", created, model, choices: [{ index, delta: text === null ? {} : { content: text }, finish_reason: reason }] }
          : { id, object: "text_completion", created, model, choices: [{ index, text: text ?? "", finish_reason: reason }] };
      const finished: Extract<GenerationEvent, { type: "finish" }>[] = [];
      try {
        if (kind === "chat")
          for (const choice of choices)
            await sse.writeSSE({
              data: JSON.stringify({
                ...chunk(choice.index, null, null),
                choices: [{ index: choice.index, delta: { role: "assistant", content: "" }, finish_reason: null }],
              }),
            });
        await Promise.all(
          streams.map(async (events, index) => {
            for await (const event of events) {
              if (event.type === "token") {
                if (event.text.length > 0) await sse.writeSSE({ data: JSON.stringify(chunk(index, event.text, null)) });
              } else {
                finished[index] = event;
                if (event.tail.length > 0) await sse.writeSSE({ data: JSON.stringify(chunk(index, event.tail, null)) });
                await sse.writeSSE({ data: JSON.stringify(chunk(index, null, event.reason)) });
              }
            }
          }),
        );
        if (request.include_usage)
          await sse.writeSSE({
            data: JSON.stringify({
              id,
              object: kind === "chat" ? "chat.completion.chunk" : "text_completion",
              created,
              model,
              choices: [],
              usage: usageOf(choices, finished),
            }),
          });
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
  // A top-level adapter_id (what @huggingface/inference sends) wins over `model`.
  const requested = request.adapter_id ?? request.model;
  const adapterId = requested === modelId ? null : requested;
  if (adapterId !== null && !knowsAdapter(adapterId)) {
    throw notFound(
      `The model '${adapterId}' does not exist or you do not have access to it.`,
      request.adapter_id !== undefined ? "adapter_id" : "model",
      "model_not_found",
    );
  }
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
  };
}

async function last(events: AsyncIterable<GenerationEvent>): Promise<Extract<GenerationEvent, { type: "finish" }>> {
  for await (const event of events) if (event.type === "finish") return event;
  throw serverError("generation ended without finishing");
}

function usageOf(choices: Choice[], finished: { completionTokens: number }[]): Usage {
  // Every choice of one prompt shares it; count each distinct prompt once, as OpenAI does.
  const prompts = new Set(choices.map((c) => c.promptIds));
  const promptTokens = [...prompts].reduce((s, p) => s + p.length, 0);
  const completionTokens = finished.reduce((s, f) => s + (f?.completionTokens ?? 0), 0);
  return { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens };
}
