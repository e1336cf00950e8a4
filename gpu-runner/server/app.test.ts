import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LlamaEngine } from "../engine/llama-engine.ts";
import { generate, generateText } from "../generate/generate.ts";
import { computeBasis } from "../pica/basis.ts";
import { randomAdapter } from "../testing/random-adapters.ts";
import { tinyModel } from "../testing/tiny-checkpoints.ts";
import { makeByteLevelTokenizerFiles } from "../tokenizer/byte-level.ts";
import { TextTokenizer } from "../tokenizer/tokenizer.ts";
import { parseSseData } from "../../src/protocol/sse.ts";
import { createRunnerApp } from "./app.ts";
import { Scheduler } from "./scheduler.ts";

const files = makeByteLevelTokenizerFiles();
const tokenizer = TextTokenizer.fromJson(files.tokenizerJson, files.tokenizerConfig);
const { config, weights } = tinyModel("llama-gqa");

function post(app: ReturnType<typeof createRunnerApp>, path: string, body: unknown): Promise<Response> {
  return Promise.resolve(
    app.request(path, { method: "POST", headers: { "content-type": "application/json" }, body: typeof body === "string" ? body : JSON.stringify(body) }),
  );
}

describe("runner API", () => {
  let engine: LlamaEngine;
  let app: ReturnType<typeof createRunnerApp>;
  beforeAll(async () => {
    const basis = await computeBasis(config, weights, { rMax: 8 });
    engine = await LlamaEngine.create(config, weights, { adapters: { basis, rank: 4 } });
    engine.registerAdapter("tenant-a", randomAdapter(config, basis, { rank: 4, seed: 3 }));
    app = createRunnerApp({ engine, tokenizer, scheduler: new Scheduler(engine, tokenizer, { maxBatch: 4, maxQueue: 16 }), modelId: "tiny" });
  });
  afterAll(() => engine.dispose());

  const chatPrompt = tokenizer.applyChatTemplate([{ role: "user", content: "hi" }], { addGenerationPrompt: true });
  const expected = async (adapterId: string | null, maxNewTokens: number) => {
    const ids = tokenizer.encode(chatPrompt, { addSpecialTokens: false });
    for await (const event of generate(engine, tokenizer, ids, { maxNewTokens, temperature: 0, adapterId })) if (event.type === "finish") return event;
    throw new Error("no finish");
  };

  it("answers a chat completion with the adapter's greedy text and usage", async () => {
    const response = await post(app, "/v1/chat/completions", {
      model: "tenant-a",
      messages: [{ role: "user", content: "hi" }],
      max_tokens: 10,
      temperature: 0,
    });
    expect(response.status).toBe(200);
    const body = (await response.json()) as {
      object: string;
      choices: { message: { content: string }; finish_reason: string }[];
      usage: Record<string, number>;
    };
    const reference = await expected("tenant-a", 10);
    expect(body.object).toBe("chat.completion");
    expect(body.choices[0].message.content).toBe(reference.text);
    expect(body.choices[0].finish_reason).toBe(reference.reason);
    expect(body.usage).toEqual({
      prompt_tokens: reference.promptTokens,
      completion_tokens: reference.completionTokens,
      total_tokens: reference.promptTokens + reference.completionTokens,
    });
    // adapter_id (what @huggingface/inference sends) selects the same adapter.
    const viaAdapterId = await post(app, "/v1/chat/completions", {
      model: "tiny",
      adapter_id: "tenant-a",
      messages: [{ role: "user", content: "hi" }],
      max_tokens: 10,
      temperature: 0,
    });
    expect(((await viaAdapterId.json()) as typeof body).choices[0].message.content).toBe(reference.text);
  });

  it("streams the same text over SSE, with a usage chunk and [DONE]", async () => {
    const response = await post(app, "/v1/chat/completions", {
      model: "tiny",
      messages: [{ role: "user", content: "hi" }],
      max_tokens: 12,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    expect(response.headers.get("content-type")).toMatch(/text\/event-stream/);
    const data = parseSseData(await response.text());
    expect(data.at(-1)).toBe("[DONE]");
    const chunks = data
      .slice(0, -1)
      .map((d) => JSON.parse(d) as { choices: { delta?: { content?: string }; finish_reason: string | null }[]; usage?: { completion_tokens: number } });
    const text = chunks.flatMap((c) => c.choices.map((choice) => choice.delta?.content ?? "")).join("");
    const reference = await expected(null, 12);
    expect(text).toBe(reference.text);
    expect(chunks.at(-1)!.usage!.completion_tokens).toBe(reference.completionTokens);
    expect(chunks.some((c) => c.choices[0]?.finish_reason === reference.reason)).toBe(true);
  });

  it("serves text completions with n choices", async () => {
    const response = await post(app, "/v1/completions", { model: "tiny", prompt: "Once", max_tokens: 6, temperature: 0, n: 2 });
    const body = (await response.json()) as { choices: { text: string }[] };
    const alone = await generateText(engine, tokenizer, "Once", { maxNewTokens: 6, temperature: 0 });
    expect(body.choices.map((c) => c.text)).toEqual([alone.text, alone.text]);
  });

  it("answers bad input with OpenAI-shaped 4xx errors naming the field, never a 5xx", async () => {
    const cases: [unknown, number, string | null][] = [
      ["{not json", 400, null],
      [{ model: "tiny", messages: [{ role: "robot", content: "x" }] }, 400, "messages[0].role"],
      [{ model: "tiny", messages: [{ role: "user", content: "x" }], temperature: 9 }, 400, "temperature"],
      [{ model: "someone-else", messages: [{ role: "user", content: "x" }] }, 404, "model"],
      [{ model: "tiny", messages: [{ role: "user", content: "x".repeat(600) }] }, 400, "messages"],
    ];
    for (const [body, status, param] of cases) {
      const response = await post(app, "/v1/chat/completions", body);
      expect(response.status, JSON.stringify(body).slice(0, 60)).toBe(status);
      const error = ((await response.json()) as { error: { message: string; type: string; param: string | null } }).error;
      expect(error.param).toBe(param);
      expect(error.message.length).toBeGreaterThan(10);
    }
  });

  it("lists the base model and the adapters, and reports health", async () => {
    const models = (await (await app.request("/v1/models")).json()) as { data: { id: string }[] };
    expect(models.data.map((m) => m.id)).toEqual(["tiny", "tenant-a"]);
    expect(await (await app.request("/health")).json()).toMatchObject({ status: "ok", model: "tiny" });
    expect((await app.request("/v1/nothing")).status).toBe(404);
  });
});
