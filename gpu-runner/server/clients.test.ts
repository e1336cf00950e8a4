/**
 * The runner served over real HTTP and driven by the client libraries tenants use: `openai` and
 * `@huggingface/inference`. Every answer is checked against greedy `generate` run alone on the
 * same prompt and adapter, so the wire format, adapter routing, batching, streaming, disconnects
 * and errors are all proven through the clients' own parsers.
 */
import { InferenceClient, InferenceClientProviderApiError } from "@huggingface/inference";
import OpenAI, { BadRequestError, NotFoundError, RateLimitError } from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LlamaEngine } from "../engine/llama-engine.ts";
import { generate, type GenerationEvent } from "../generate/generate.ts";
import { computeBasis } from "../pica/basis.ts";
import { randomAdapter } from "../testing/random-adapters.ts";
import { tinyModel } from "../testing/tiny-checkpoints.ts";
import { makeByteLevelTokenizerFiles } from "../tokenizer/byte-level.ts";
import { TextTokenizer } from "../tokenizer/tokenizer.ts";
import { listen, type Served } from "../testing/serve-app.ts";
import { withStepHook } from "../testing/step-hook.ts";
import { createRunnerApp } from "./app.ts";
import { Scheduler } from "./scheduler.ts";

const files = makeByteLevelTokenizerFiles();
const tokenizer = TextTokenizer.fromJson(files.tokenizerJson, files.tokenizerConfig);
const { config, weights } = tinyModel("llama-gqa");
const MODEL_ID = "tiny";
const ADAPTERS = ["tenant-0", "tenant-1", "tenant-2", "tenant-3", "tenant-4", "tenant-5"];

type Finish = Extract<GenerationEvent, { type: "finish" }>;

/** An OpenAI client for a served runner; no retries, so a 429 reaches the test. */
function openaiClient(served: Served): OpenAI {
  return new OpenAI({ baseURL: `${served.url}/v1`, apiKey: "unused", maxRetries: 0 });
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls until `condition` holds; fails naming what it waited for. */
async function waitFor(what: string, condition: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(2);
  }
}

/** The error a promise rejects with (fails the test if it resolves). */
async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error("expected the request to fail, but it succeeded");
}

describe("the runner over HTTP, driven by the openai and @huggingface/inference clients", () => {
  let engine: LlamaEngine;
  let scheduler: Scheduler;
  let served: Served;
  let openai: OpenAI;

  beforeAll(async () => {
    const basis = await computeBasis(config, weights, { rMax: 8 });
    engine = await LlamaEngine.create(config, weights, { adapters: { basis, rank: 4 } });
    ADAPTERS.forEach((id, i) => engine.registerAdapter(id, randomAdapter(config, basis, { rank: 4, seed: 11 + i })));
    scheduler = new Scheduler(engine, tokenizer, { maxBatch: 4, maxQueue: 32 });
    served = await listen(createRunnerApp({ engine, tokenizer, scheduler, modelId: MODEL_ID }));
    openai = openaiClient(served);
  });
  afterAll(async () => {
    await served?.close();
    await engine?.dispose();
  });

  /** Greedy generation alone, outside the scheduler: what every served answer must equal. */
  async function alone(promptIds: number[], adapterId: string | null, maxNewTokens: number): Promise<Finish> {
    for await (const event of generate(engine, tokenizer, promptIds, { maxNewTokens, temperature: 0, adapterId })) if (event.type === "finish") return event;
    throw new Error("generation ended without a finish event");
  }
  const aloneChat = (content: string, adapterId: string | null, maxNewTokens: number) =>
    alone(
      tokenizer.encode(tokenizer.applyChatTemplate([{ role: "user", content }], { addGenerationPrompt: true }), { addSpecialTokens: false }),
      adapterId,
      maxNewTokens,
    );
  const aloneText = (prompt: string, adapterId: string | null, maxNewTokens: number) => alone(tokenizer.encode(prompt), adapterId, maxNewTokens);
  const usageOf = (reference: Finish) => ({
    prompt_tokens: reference.promptTokens,
    completion_tokens: reference.completionTokens,
    total_tokens: reference.promptTokens + reference.completionTokens,
  });

  describe("openai", () => {
    it("chat.completions.create returns the adapter's greedy text, finish reason and usage", async () => {
      const reference = await aloneChat("hi", "tenant-0", 10);
      expect(reference.text.length).toBeGreaterThan(0);
      const completion = await openai.chat.completions.create({
        model: "tenant-0",
        messages: [{ role: "user", content: "hi" }],
        max_tokens: 10,
        temperature: 0,
      });
      expect(completion.object).toBe("chat.completion");
      expect(completion.model).toBe("tenant-0");
      expect(completion.choices).toHaveLength(1);
      expect(completion.choices[0].message).toMatchObject({ role: "assistant", content: reference.text });
      expect(completion.choices[0].finish_reason).toBe(reference.reason);
      expect(completion.usage).toEqual(usageOf(reference));
      // The base model answers differently: the adapter really was applied.
      expect((await aloneChat("hi", null, 10)).text).not.toBe(reference.text);
    });

    it("chat.completions.create streams the same text, then a usage chunk", async () => {
      const reference = await aloneChat("hello", "tenant-1", 12);
      const stream = await openai.chat.completions.create({
        model: "tenant-1",
        messages: [{ role: "user", content: "hello" }],
        max_tokens: 12,
        temperature: 0,
        stream: true,
        stream_options: { include_usage: true },
      });
      const chunks = [];
      for await (const chunk of stream) chunks.push(chunk);
      expect(chunks[0].choices[0].delta.role).toBe("assistant");
      expect(chunks.flatMap((c) => c.choices.map((choice) => choice.delta.content ?? "")).join("")).toBe(reference.text);
      expect(chunks.flatMap((c) => c.choices.map((choice) => choice.finish_reason)).filter((r) => r !== null)).toEqual([reference.reason]);
      const last = chunks.at(-1)!;
      expect(last.choices).toEqual([]);
      expect(last.usage).toEqual(usageOf(reference));
      expect(new Set(chunks.map((c) => c.id)).size).toBe(1);
    });

    it("completions.create returns the same text as generate on the raw prompt, with usage", async () => {
      const reference = await aloneText("Once upon", "tenant-2", 9);
      expect(reference.text.length).toBeGreaterThan(0);
      const completion = await openai.completions.create({ model: "tenant-2", prompt: "Once upon", max_tokens: 9, temperature: 0 });
      expect(completion.object).toBe("text_completion");
      expect(completion.choices.map((c) => [c.text, c.finish_reason])).toEqual([[reference.text, reference.reason]]);
      expect(completion.usage).toEqual(usageOf(reference));
    });

    it("completions.create streams the same text, then a usage chunk", async () => {
      const reference = await aloneText("Once upon", null, 9);
      const stream = await openai.completions.create({
        model: MODEL_ID,
        prompt: "Once upon",
        max_tokens: 9,
        temperature: 0,
        stream: true,
        stream_options: { include_usage: true },
      });
      const chunks = [];
      for await (const chunk of stream) chunks.push(chunk);
      expect(chunks.flatMap((c) => c.choices.map((choice) => choice.text)).join("")).toBe(reference.text);
      expect(chunks.flatMap((c) => c.choices.map((choice) => choice.finish_reason)).filter((r) => r !== null)).toEqual([reference.reason]);
      expect(chunks.at(-1)!.usage).toEqual(usageOf(reference));
    });

    it("many adapters and the base model in flight at once each get what they get alone", async () => {
      // Seven concurrent streams on four rows: some wait, all mix adapters in one batch.
      const requests = [null, ...ADAPTERS].map((adapterId, i) => ({
        adapterId,
        content: `request ${i}: ${"abc".slice(0, 1 + (i % 3))}`,
        maxTokens: 6 + 2 * i,
      }));
      const answers = await Promise.all(
        requests.map(async ({ adapterId, content, maxTokens }) => {
          const stream = await openai.chat.completions.create({
            model: adapterId ?? MODEL_ID,
            messages: [{ role: "user", content }],
            max_tokens: maxTokens,
            temperature: 0,
            stream: true,
            stream_options: { include_usage: true },
          });
          let text = "";
          let completionTokens = -1;
          for await (const chunk of stream) {
            text += chunk.choices[0]?.delta.content ?? "";
            if (chunk.usage) completionTokens = chunk.usage.completion_tokens;
          }
          return { text, completionTokens };
        }),
      );
      for (const [i, { adapterId, content, maxTokens }] of requests.entries()) {
        const reference = await aloneChat(content, adapterId, maxTokens);
        expect(answers[i], `request ${i} (${adapterId ?? "base"})`).toEqual({ text: reference.text, completionTokens: reference.completionTokens });
      }
      expect(new Set(answers.map((a) => a.text)).size).toBe(requests.length);
      expect(scheduler.stats).toEqual({ running: 0, waiting: 0 });
    });

    it("an unknown adapter is a NotFoundError 404 with code model_not_found", async () => {
      for (const request of [
        openai.chat.completions.create({ model: "tenant-unknown", messages: [{ role: "user", content: "hi" }], max_tokens: 2 }),
        openai.completions.create({ model: "tenant-unknown", prompt: "hi", max_tokens: 2, stream: true }),
      ]) {
        const error = await rejection(request);
        expect(error).toBeInstanceOf(NotFoundError);
        expect((error as NotFoundError).status).toBe(404);
        expect((error as NotFoundError).code).toBe("model_not_found");
        expect((error as NotFoundError).param).toBe("model");
        expect((error as NotFoundError).message).toContain("tenant-unknown");
      }
    });

    it("bad input is a BadRequestError 400 whose param names the field", async () => {
      const cases: [Promise<unknown>, string][] = [
        [openai.chat.completions.create({ model: MODEL_ID, messages: [{ role: "user", content: "hi" }], temperature: 9 }), "temperature"],
        [openai.chat.completions.create({ model: MODEL_ID, messages: [{ role: "robot" as "user", content: "hi" }] }), "messages[0].role"],
        [openai.chat.completions.create({ model: MODEL_ID, messages: [] }), "messages"],
        [openai.chat.completions.create({ model: MODEL_ID, messages: [{ role: "user", content: "x".repeat(600) }], stream: true }), "messages"],
        [openai.completions.create({ model: MODEL_ID, prompt: "hi", max_tokens: 0 }), "max_tokens"],
        [openai.completions.create({ model: MODEL_ID, prompt: [1, 2, 3] }), "prompt"],
      ];
      for (const [request, param] of cases) {
        const error = await rejection(request);
        expect(error, param).toBeInstanceOf(BadRequestError);
        expect((error as BadRequestError).status).toBe(400);
        expect((error as BadRequestError).param).toBe(param);
        expect((error as BadRequestError).type).toBe("invalid_request_error");
      }
    });
  });

  describe("@huggingface/inference with endpointUrl", () => {
    interface SentRequest {
      url: string;
      body: Record<string, unknown>;
    }
    const sent: SentRequest[] = [];
    let hf: InferenceClient;
    beforeAll(() => {
      // Record what the client puts on the wire, then send it unchanged.
      const recordingFetch: typeof fetch = (input, init) => {
        sent.push({ url: String(input), body: JSON.parse(String(init?.body)) as Record<string, unknown> });
        return fetch(input, init);
      };
      hf = new InferenceClient("", { endpointUrl: served.url, fetch: recordingFetch });
    });
    const lastSent = () => sent.at(-1)!;

    it("chatCompletion posts to /v1/chat/completions; `model` picks the adapter", async () => {
      const reference = await aloneChat("hi", "tenant-3", 10);
      const output = await hf.chatCompletion({ model: "tenant-3", messages: [{ role: "user", content: "hi" }], max_tokens: 10, temperature: 0 });
      expect(lastSent()).toEqual({
        url: `${served.url}/v1/chat/completions`,
        body: { model: "tenant-3", messages: [{ role: "user", content: "hi" }], max_tokens: 10, temperature: 0 },
      });
      expect(output.choices[0].message.content).toBe(reference.text);
      expect(output.choices[0].finish_reason).toBe(reference.reason);
      expect(output.usage).toEqual(usageOf(reference));
    });

    it("chatCompletion passes a top-level adapter_id through, and it wins over `model`", async () => {
      const reference = await aloneChat("hi", "tenant-4", 10);
      const output = await hf.chatCompletion({
        model: MODEL_ID,
        adapter_id: "tenant-4",
        messages: [{ role: "user", content: "hi" }],
        max_tokens: 10,
        temperature: 0,
      });
      expect(lastSent().body).toMatchObject({ model: MODEL_ID, adapter_id: "tenant-4" });
      expect(output.choices[0].message.content).toBe(reference.text);
    });

    it("chatCompletionStream streams the same text", async () => {
      const reference = await aloneChat("hello", "tenant-5", 12);
      let text = "";
      const reasons: (string | undefined)[] = [];
      for await (const chunk of hf.chatCompletionStream({
        model: "tenant-5",
        messages: [{ role: "user", content: "hello" }],
        max_tokens: 12,
        temperature: 0,
      })) {
        text += chunk.choices[0]?.delta.content ?? "";
        if (chunk.choices[0]?.finish_reason) reasons.push(chunk.choices[0].finish_reason);
      }
      expect(lastSent()).toMatchObject({ url: `${served.url}/v1/chat/completions`, body: { model: "tenant-5", stream: true } });
      expect(text).toBe(reference.text);
      expect(reasons).toEqual([reference.reason]);
    });

    it("textGeneration posts an OpenAI completion to /v1/completions; parameters.adapter_id picks the adapter", async () => {
      const reference = await aloneText("Once upon", "tenant-3", 8);
      const output = await hf.textGeneration({
        model: MODEL_ID,
        inputs: "Once upon",
        parameters: { adapter_id: "tenant-3", max_new_tokens: 8, temperature: 0 },
      });
      // The client flattens `parameters` into the body and renames max_new_tokens; it does not
      // send TGI's {inputs, parameters} to the endpoint's root.
      expect(lastSent()).toEqual({
        url: `${served.url}/v1/completions`,
        body: { model: MODEL_ID, adapter_id: "tenant-3", max_tokens: 8, temperature: 0, prompt: "Once upon" },
      });
      expect(output).toEqual({ generated_text: reference.text });
    });

    it("textGeneration with `model` naming an adapter; TGI parameters the runner does not use are ignored", async () => {
      const reference = await aloneText("The", "tenant-0", 6);
      const output = await hf.textGeneration({
        model: "tenant-0",
        inputs: "The",
        parameters: { max_new_tokens: 6, temperature: 0, do_sample: false, return_full_text: false, repetition_penalty: 1, watermark: false },
      });
      expect(output.generated_text).toBe(reference.text);
    });

    it("without `model` the client sends the endpoint URL as the model, which the runner does not know", async () => {
      const error = await rejection(hf.textGeneration({ inputs: "The", parameters: { max_new_tokens: 2 } }));
      expect(lastSent().body.model).toBe(served.url);
      expect(error).toBeInstanceOf(InferenceClientProviderApiError);
      const response = (error as InferenceClientProviderApiError).httpResponse;
      expect(response.status).toBe(404);
      expect(response.body).toMatchObject({ error: { code: "model_not_found", param: "model" } });
    });

    it("an unknown adapter and bad input reach the client as 404 and 400 naming the field", async () => {
      const unknown = await rejection(hf.chatCompletion({ model: "tenant-unknown", messages: [{ role: "user", content: "hi" }] }));
      expect((unknown as InferenceClientProviderApiError).httpResponse).toMatchObject({ status: 404, body: { error: { code: "model_not_found" } } });
      const bad = await rejection(hf.textGeneration({ model: MODEL_ID, inputs: "hi", parameters: { max_new_tokens: 2, temperature: 5 } }));
      expect((bad as InferenceClientProviderApiError).httpResponse).toMatchObject({ status: 400, body: { error: { param: "temperature" } } });
      const streamed = await rejection(
        (async () => {
          for await (const chunk of hf.chatCompletionStream({ model: "tenant-unknown", messages: [{ role: "user", content: "hi" }] })) void chunk;
        })(),
      );
      expect((streamed as Error).message).toContain("tenant-unknown");
    });
  });

  describe("a client that disconnects", () => {
    const STEP_DELAY_MS = 5;
    let steps = 0;
    let slow: Scheduler;
    let slowServed: Served;
    beforeAll(async () => {
      // Each step takes at least a few milliseconds, so a long request runs for seconds unless
      // the disconnect frees its row.
      const paced = withStepHook(engine, async () => {
        steps++;
        await sleep(STEP_DELAY_MS);
      });
      slow = new Scheduler(paced, tokenizer, { maxBatch: 2, maxQueue: 4 });
      slowServed = await listen(createRunnerApp({ engine: paced, tokenizer, scheduler: slow, modelId: MODEL_ID }));
    });
    afterAll(() => slowServed?.close());

    it("mid-stream frees its row at once, and a later request is still exact", async () => {
      const client = openaiClient(slowServed);
      for (const how of ["controller.abort()", "break"] as const) {
        const stream = await client.chat.completions.create({
          model: "tenant-1",
          messages: [{ role: "user", content: "go on" }],
          max_tokens: 400,
          temperature: 0,
          stream: true,
        });
        let contentChunks = 0;
        for await (const chunk of stream) {
          if ((chunk.choices[0]?.delta.content ?? "").length > 0 && ++contentChunks === 3) {
            if (how === "break") break;
            stream.controller.abort();
          }
        }
        expect(contentChunks, how).toBe(3);
        const stepsAtDisconnect = steps;
        await waitFor(`the row to be freed after ${how}`, () => slow.stats.running === 0);
        expect(steps - stepsAtDisconnect, how).toBeLessThan(40);
        expect(slow.stats).toEqual({ running: 0, waiting: 0 });
      }
      const reference = await aloneChat("hi", "tenant-2", 8);
      const completion = await client.chat.completions.create({
        model: "tenant-2",
        messages: [{ role: "user", content: "hi" }],
        max_tokens: 8,
        temperature: 0,
      });
      expect(completion.choices[0].message.content).toBe(reference.text);
      expect(slow.stats).toEqual({ running: 0, waiting: 0 });
    });

    it("before a non-streamed answer frees its row at once", async () => {
      const client = openaiClient(slowServed);
      const controller = new AbortController();
      const request = client.chat.completions.create(
        { model: "tenant-1", messages: [{ role: "user", content: "go on" }], max_tokens: 200, temperature: 0 },
        { signal: controller.signal },
      );
      await waitFor("the request to take a row", () => slow.stats.running === 1);
      const stepsAtDisconnect = steps;
      controller.abort();
      await rejection(request);
      await waitFor("the row to be freed", () => slow.stats.running === 0);
      expect(steps - stepsAtDisconnect).toBeLessThan(40);
    });
  });

  describe("a full queue", () => {
    const releases: (() => void)[] = [];
    const closing: Served[] = [];
    afterAll(async () => {
      for (const release of releases) release();
      for (const served of closing) await served.close();
    });

    /** A runner whose steps wait until `release` is called, so its rows and queue stay put. */
    async function heldRunner(maxBatch: number, maxQueue: number): Promise<{ scheduler: Scheduler; client: OpenAI; release: () => void; steps: () => number }> {
      let release: () => void = () => undefined;
      let steps = 0;
      const gate = new Promise<void>((resolve) => (release = resolve));
      const gated = withStepHook(engine, async () => {
        await gate;
        steps++;
      });
      const scheduler = new Scheduler(gated, tokenizer, { maxBatch, maxQueue });
      const served = await listen(createRunnerApp({ engine: gated, tokenizer, scheduler, modelId: MODEL_ID }));
      releases.push(release);
      closing.push(served);
      return { scheduler, client: openaiClient(served), release, steps: () => steps };
    }
    const occupy = (scheduler: Scheduler, prompt: string) =>
      scheduler.submit({ promptIds: tokenizer.encode(prompt), adapterId: null, options: { maxNewTokens: 3, temperature: 0 } });
    async function tokensOf(events: AsyncIterable<GenerationEvent>): Promise<number> {
      for await (const event of events) if (event.type === "finish") return event.completionTokens;
      throw new Error("generation ended without a finish event");
    }

    it("answers 429 RateLimitError with Retry-After, and serves again once the queue drains", async () => {
      const { scheduler, client, release } = await heldRunner(1, 1);
      const occupying = [occupy(scheduler, "one"), occupy(scheduler, "two")];
      expect(scheduler.stats).toEqual({ running: 1, waiting: 1 });

      for (const request of [
        client.chat.completions.create({ model: MODEL_ID, messages: [{ role: "user", content: "hi" }], max_tokens: 4 }),
        client.completions.create({ model: "tenant-0", prompt: "hi", max_tokens: 4, stream: true }),
      ]) {
        const error = await rejection(request);
        expect(error).toBeInstanceOf(RateLimitError);
        const limited = error as RateLimitError;
        expect(limited.status).toBe(429);
        expect(limited.code).toBe("rate_limit_exceeded");
        expect(limited.type).toBe("rate_limit_error");
        expect(limited.headers.get("retry-after")).toMatch(/^\d+$/);
        expect(Number(limited.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
      }
      expect(scheduler.stats).toEqual({ running: 1, waiting: 1 });

      release();
      for (const events of occupying) for await (const event of events) void event;
      const reference = await aloneChat("hi", null, 4);
      const completion = await client.chat.completions.create({ model: MODEL_ID, messages: [{ role: "user", content: "hi" }], max_tokens: 4, temperature: 0 });
      expect(completion.choices[0].message.content).toBe(reference.text);
      expect(scheduler.stats).toEqual({ running: 0, waiting: 0 });
    });

    it("a refused request with n > 1 leaves none of its choices to decode", async () => {
      const { scheduler, client, release, steps } = await heldRunner(1, 2);
      const occupying = [occupy(scheduler, "one"), occupy(scheduler, "two")];
      expect(scheduler.stats).toEqual({ running: 1, waiting: 1 });
      expect(await rejection(client.completions.create({ model: MODEL_ID, prompt: "hi", max_tokens: 4, n: 2 }))).toBeInstanceOf(RateLimitError);
      release();
      // One row at a time: every step decodes one token of an occupying request, and nothing else.
      const occupyingTokens = (await Promise.all(occupying.map(tokensOf))).reduce((sum, n) => sum + n, 0);
      await waitFor("the queue to drain", () => scheduler.stats.running === 0 && scheduler.stats.waiting === 0);
      expect(steps()).toBe(occupyingTokens);
    });
  });
});
