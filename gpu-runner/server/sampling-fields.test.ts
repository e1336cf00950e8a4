// Every generation field of the OpenAI API the runner honours, shown by its effect on real
// output of a tiny model: log-probabilities against the float64 reference forward (with and
// without an adapter), penalties and logit_bias against an independent greedy loop, seeds, n,
// stop, max_completion_tokens and echo.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LlamaEngine } from "../engine/llama-engine.ts";
import { referenceForward } from "../model/reference.ts";
import { computeBasis } from "../pica/basis.ts";
import { mergeIntoWeights } from "../pica/merge-weights.ts";
import type { Basis, PicaAdapter } from "../pica/types.ts";
import { randomAdapter } from "../testing/random-adapters.ts";
import { tinyModel } from "../testing/tiny-checkpoints.ts";
import { makeByteLevelTokenizerFiles } from "../tokenizer/byte-level.ts";
import { TokenBytes } from "../tokenizer/token-bytes.ts";
import { TextTokenizer } from "../tokenizer/tokenizer.ts";
import { chatCompletionChunkSchema, chatCompletionSchema, modelListSchema, textCompletionSchema } from "../../src/protocol/openai.ts";
import { parseSseData } from "../../src/protocol/sse.ts";
import { createRunnerApp } from "./app.ts";
import { Scheduler } from "./scheduler.ts";

const files = makeByteLevelTokenizerFiles();
const tokenizer = TextTokenizer.fromJson(files.tokenizerJson, files.tokenizerConfig);
const { config, weights } = tinyModel("llama-gqa");
const LOGPROB_TOLERANCE = 1e-4; // float32 engine against the float64 reference

type Json = Record<string, any>;

describe("generation fields on the runner", () => {
  let engine: LlamaEngine;
  let basis: Basis;
  let adapter: PicaAdapter;
  let app: ReturnType<typeof createRunnerApp>;

  beforeAll(async () => {
    basis = await computeBasis(config, weights, { rMax: 8 });
    engine = await LlamaEngine.create(config, weights, { adapters: { basis, rank: 4 } });
    adapter = randomAdapter(config, basis, { rank: 4, seed: 5 });
    engine.registerAdapter("tenant-a", adapter);
    app = createRunnerApp({ engine, tokenizer, scheduler: new Scheduler(engine, tokenizer, { maxBatch: 4, maxQueue: 16 }), modelId: "tiny" });
  });
  afterAll(() => engine.dispose());

  async function post(path: string, body: Json): Promise<{ status: number; json: Json; text: string }> {
    const response = await app.request(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    const text = await response.text();
    return { status: response.status, json: response.headers.get("content-type")?.includes("json") ? JSON.parse(text) : {}, text };
  }

  const chatIds = (content: string) =>
    tokenizer.encode(tokenizer.applyChatTemplate([{ role: "user", content }], { addGenerationPrompt: true }), { addSpecialTokens: false });

  /** The model's log-softmax at the last position of `ids`, over the tokenizer's vocabulary, in float64. */
  function referenceLogprobs(adapterId: string | null, ids: number[]): Float64Array {
    const merged = adapterId === null ? weights : mergeIntoWeights(config, weights, basis, adapter);
    const logits = referenceForward(config, merged, ids).at(-1)!.subarray(0, tokenizer.vocabSize);
    const max = Math.max(...logits);
    const normaliser = max + Math.log(logits.reduce((sum, value) => sum + Math.exp(value - max), 0));
    return logits.map((value) => value - normaliser);
  }

  /** Greedy decoding by the reference forward with OpenAI's penalties and biases applied to its logits. */
  function referenceGreedy(promptIds: number[], steps: number, adjust: { presence?: number; frequency?: number; bias?: Record<number, number> }): number[] {
    const generated: number[] = [];
    for (let step = 0; step < steps; step++) {
      const logits = Array.from(
        referenceForward(config, weights, [...promptIds, ...generated])
          .at(-1)!
          .subarray(0, tokenizer.vocabSize),
      );
      for (const [id, bias] of Object.entries(adjust.bias ?? {})) logits[Number(id)] += bias;
      const counts = new Map<number, number>();
      for (const id of generated) counts.set(id, (counts.get(id) ?? 0) + 1);
      for (const [id, count] of counts) logits[id] -= count * (adjust.frequency ?? 0) + (adjust.presence ?? 0);
      const next = logits.indexOf(Math.max(...logits));
      if (tokenizer.eosTokenIds.includes(next)) break;
      generated.push(next);
    }
    return generated;
  }

  describe.each([null, "tenant-a"])("logprobs with adapter %s", (adapterId) => {
    const model = adapterId ?? "tiny";

    it("chat: each token's logprob and top_logprobs are the reference forward's log-softmax", async () => {
      const { status, json } = await post("/v1/chat/completions", {
        model,
        messages: [{ role: "user", content: "hi" }],
        max_tokens: 5,
        temperature: 0,
        logprobs: true,
        top_logprobs: 3,
      });
      expect(status).toBe(200);
      const content = json.choices[0].logprobs.content as Json[];
      expect(content.length).toBe(json.usage.completion_tokens - (json.choices[0].finish_reason === "stop" ? 1 : 0));
      const ids = chatIds("hi");
      for (const entry of content) {
        const id = entry.bytes[0] as number; // a byte-level vocabulary: each token is one byte, its id
        const expected = referenceLogprobs(adapterId, ids);
        expect(Math.abs(entry.logprob - expected[id])).toBeLessThan(LOGPROB_TOLERANCE);
        const ranked = Array.from(expected.keys()).sort((a, b) => expected[b] - expected[a]);
        expect(entry.top_logprobs.map((top: Json) => top.bytes[0])).toEqual(ranked.slice(0, 3));
        entry.top_logprobs.forEach((top: Json, rank: number) => expect(Math.abs(top.logprob - expected[ranked[rank]])).toBeLessThan(LOGPROB_TOLERANCE));
        expect(id).toBe(ranked[0]); // greedy took the likeliest token
        expect(entry.token).toBe(tokenizer.decode([id]));
        ids.push(id);
      }
      expect(content.map((entry) => entry.token).join("")).toBe(json.choices[0].message.content);
    });

    it("completions: token_logprobs, top_logprobs with the sampled token, and text offsets", async () => {
      const prompt = "Once upon a";
      const { status, json } = await post("/v1/completions", { model, prompt, max_tokens: 4, temperature: 0, logprobs: 2 });
      expect(status).toBe(200);
      const logprobs = json.choices[0].logprobs;
      const ids = tokenizer.encode(prompt);
      const text = json.choices[0].text as string;
      let previous = 0;
      logprobs.tokens.forEach((token: string, position: number) => {
        const expected = referenceLogprobs(adapterId, ids);
        const id = expected.indexOf(Math.max(...expected)); // greedy takes the likeliest token
        expect(token).toBe(new TokenBytes(tokenizer).of(id).text);
        expect(Math.abs(logprobs.token_logprobs[position] - expected[id])).toBeLessThan(LOGPROB_TOLERANCE);
        expect(Object.keys(logprobs.top_logprobs[position]).length).toBeLessThanOrEqual(3);
        expect(logprobs.top_logprobs[position][token]).toBeCloseTo(logprobs.token_logprobs[position], 6);
        // Offsets point into the text; a token holding part of a character has no text of its own.
        const offset = logprobs.text_offset[position];
        expect(offset).toBeGreaterThanOrEqual(previous);
        if (!token.includes("\uFFFD")) expect(text.slice(offset, offset + token.length)).toBe(token);
        previous = offset;
        ids.push(id);
      });
      expect(logprobs.tokens.length).toBe(json.usage.completion_tokens - (json.choices[0].finish_reason === "stop" ? 1 : 0));
    });

    it("streamed chunks carry the same log-probabilities as the whole response", async () => {
      const body = { model, messages: [{ role: "user", content: "hi" }], max_tokens: 5, temperature: 0, logprobs: true, top_logprobs: 2 };
      const whole = await post("/v1/chat/completions", body);
      const streamed = await post("/v1/chat/completions", { ...body, stream: true });
      const chunks = parseSseData(streamed.text)
        .filter((data) => data !== "[DONE]")
        .map((data) => JSON.parse(data) as Json);
      const tokens = chunks.flatMap((chunk) => chunk.choices[0]?.logprobs?.content ?? []);
      expect(tokens).toEqual(whole.json.choices[0].logprobs.content);
      expect(chunks.map((chunk) => chunk.choices[0]?.delta?.content ?? "").join("")).toBe(whole.json.choices[0].message.content);
    });
  });

  it("no logprobs unless asked: the field is null", async () => {
    const { json } = await post("/v1/chat/completions", { model: "tiny", messages: [{ role: "user", content: "hi" }], max_tokens: 2 });
    expect(json.choices[0].logprobs).toBeNull();
    expect(json.choices[0].message.refusal).toBeNull();
  });

  it("logprobs are taken before logit_bias reshapes sampling", async () => {
    const { json } = await post("/v1/completions", { model: "tiny", prompt: "ab", max_tokens: 1, temperature: 0, logprobs: 0, logit_bias: { "120": 100 } });
    expect(json.choices[0].text).toBe("x");
    const expected = referenceLogprobs(null, tokenizer.encode("ab"));
    expect(Math.abs(json.choices[0].logprobs.token_logprobs[0] - expected[120])).toBeLessThan(LOGPROB_TOLERANCE);
  });

  it.each([
    ["frequency_penalty", { frequency_penalty: 2 }, { frequency: 2 }],
    ["presence_penalty", { presence_penalty: 1.5 }, { presence: 1.5 }],
    ["a negative frequency_penalty", { frequency_penalty: -1 }, { frequency: -1 }],
    ["logit_bias", { logit_bias: { "101": 6, "32": -100 } }, { bias: { 101: 6, 32: -100 } }],
  ])("%s changes greedy output exactly as OpenAI's formula on the reference logits says", async (_name, fields, adjust) => {
    const prompt = "the the the";
    const { json } = await post("/v1/completions", { model: "tiny", prompt, max_tokens: 12, temperature: 0, ...fields });
    const expected = referenceGreedy(tokenizer.encode(prompt), 12, adjust);
    expect(json.choices[0].text).toBe(tokenizer.decode(expected));
    const plain = await post("/v1/completions", { model: "tiny", prompt, max_tokens: 12, temperature: 0 });
    expect(plain.json.choices[0].text).toBe(tokenizer.decode(referenceGreedy(tokenizer.encode(prompt), 12, {})));
    expect(json.choices[0].text).not.toBe(plain.json.choices[0].text);
  });

  it("logit_bias of +100 forces a token and -100 bans one", async () => {
    const forced = await post("/v1/chat/completions", {
      model: "tiny",
      messages: [{ role: "user", content: "hi" }],
      max_tokens: 6,
      logit_bias: { "122": 100 },
    });
    expect(forced.json.choices[0].message.content).toBe("zzzzzz");
    const greedy = await post("/v1/completions", { model: "tiny", prompt: "hello", max_tokens: 8, temperature: 0 });
    const first = tokenizer.encode(greedy.json.choices[0].text, { addSpecialTokens: false })[0];
    const banned = await post("/v1/completions", { model: "tiny", prompt: "hello", max_tokens: 8, temperature: 0, logit_bias: { [first]: -100 } });
    expect(tokenizer.encode(banned.json.choices[0].text, { addSpecialTokens: false })).not.toContain(first);
  });

  it("logit_bias naming a token outside the vocabulary is a 400 naming the field", async () => {
    const { status, json } = await post("/v1/completions", { model: "tiny", prompt: "a", logit_bias: { "259": 1 } });
    expect(status).toBe(400);
    expect(json.error.param).toBe("logit_bias");
  });

  it("seed: the same seed repeats a sampled completion, another differs, and n choices differ from each other", async () => {
    const body = { model: "tiny", prompt: "Once", max_tokens: 16, temperature: 1.5 };
    const first = await post("/v1/completions", { ...body, seed: 7 });
    const again = await post("/v1/completions", { ...body, seed: 7 });
    const other = await post("/v1/completions", { ...body, seed: 8 });
    expect(again.json.choices[0].text).toBe(first.json.choices[0].text);
    expect(other.json.choices[0].text).not.toBe(first.json.choices[0].text);
    const many = await post("/v1/completions", { ...body, seed: 7, n: 3 });
    const texts = many.json.choices.map((choice: Json) => choice.text);
    expect(texts[0]).toBe(first.json.choices[0].text); // choice i is seeded with seed + i
    expect(new Set(texts).size).toBe(3);
  });

  it("max_completion_tokens bounds the completion and wins over max_tokens", async () => {
    const { json } = await post("/v1/chat/completions", {
      model: "tiny",
      messages: [{ role: "user", content: "hi" }],
      max_tokens: 10,
      max_completion_tokens: 3,
      temperature: 0,
      logit_bias: { "97": 100 },
    });
    expect(json.choices[0].message.content).toBe("aaa");
    expect(json.choices[0].finish_reason).toBe("length");
    expect(json.usage.completion_tokens).toBe(3);
  });

  it("stop ends the text before the stop sequence", async () => {
    const { json } = await post("/v1/completions", { model: "tiny", prompt: "x", max_tokens: 10, logit_bias: { "97": 100 }, stop: ["aaa"] });
    expect(json.choices[0].text).toBe("");
    const later = await post("/v1/completions", { model: "tiny", prompt: "x", max_tokens: 10, logit_bias: { "97": 100 }, stop: "b" });
    expect(later.json.choices[0].text).toBe("aaaaaaaaaa");
    expect(later.json.choices[0].finish_reason).toBe("length");
  });

  it("echo writes the prompt before the completion, streamed and not", async () => {
    const body = { model: "tiny", prompt: "Once", max_tokens: 3, temperature: 0, echo: true };
    const plain = await post("/v1/completions", { ...body, echo: false });
    const { json } = await post("/v1/completions", body);
    expect(json.choices[0].text).toBe(`Once${plain.json.choices[0].text}`);
    const streamed = await post("/v1/completions", { ...body, stream: true });
    const text = parseSseData(streamed.text)
      .filter((data) => data !== "[DONE]")
      .map((data) => JSON.parse(data).choices[0]?.text ?? "")
      .join("");
    expect(text).toBe(json.choices[0].text);
  });

  it("every real response, whole and streamed, passes the protocol's response schemas", async () => {
    const events = (text: string) =>
      parseSseData(text)
        .filter((data) => data !== "[DONE]")
        .map((data) => JSON.parse(data));
    const chat = { model: "tenant-a", messages: [{ role: "user", content: "hi" }], max_tokens: 4, n: 2 };
    for (const extra of [{}, { logprobs: true, top_logprobs: 2 }]) {
      chatCompletionSchema.parse((await post("/v1/chat/completions", { ...chat, ...extra })).json);
      const chunks = events((await post("/v1/chat/completions", { ...chat, ...extra, stream: true, stream_options: { include_usage: true } })).text);
      for (const chunk of chunks) chatCompletionChunkSchema.parse(chunk);
      expect(chunks.at(-1).usage.completion_tokens).toBeGreaterThan(0);
    }
    const text = { model: "tiny", prompt: ["a", "b"], max_tokens: 4 };
    for (const extra of [{}, { logprobs: 3 }, { echo: true }]) {
      textCompletionSchema.parse((await post("/v1/completions", { ...text, ...extra })).json);
      for (const chunk of events((await post("/v1/completions", { ...text, ...extra, stream: true, stream_options: { include_usage: true } })).text)) {
        textCompletionSchema.parse(chunk);
      }
    }
    const models = await app.request("/v1/models");
    expect(modelListSchema.parse(await models.json()).data.map((model) => model.id)).toEqual(["tiny", "tenant-a"]);
  });

  it.each([
    ["/v1/chat/completions", { messages: [{ role: "user", content: "hi" }], stream_options: undefined, temprature: 1 }, "temprature"],
    ["/v1/chat/completions", { messages: [{ role: "user", content: "hi" }], reasoning_effort: "high" }, "reasoning_effort"],
    ["/v1/completions", { prompt: "a", suffix: "b" }, "suffix"],
  ])("%s refuses an unknown or unsupported field: %o", async (path, fields, param) => {
    const { status, json } = await post(path, { model: "tiny", ...fields });
    expect(status).toBe(400);
    expect(json.error.param).toBe(param);
  });
});
