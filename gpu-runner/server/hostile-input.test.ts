/**
 * Property-based hostile input against the runner's public API: random and mutated request bodies
 * (wrong types, huge and unicode strings, negative and huge numbers, extra fields, broken JSON)
 * must always get an OpenAI-shaped 4xx or a 200, never a 5xx or a crash.
 */
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LlamaEngine } from "../engine/llama-engine.ts";
import { tinyModel } from "../testing/tiny-checkpoints.ts";
import { makeByteLevelTokenizerFiles } from "../tokenizer/byte-level.ts";
import { TextTokenizer } from "../tokenizer/tokenizer.ts";
import { createRunnerApp } from "./app.ts";
import { Scheduler } from "./scheduler.ts";

const files = makeByteLevelTokenizerFiles();
const tokenizer = TextTokenizer.fromJson(files.tokenizerJson, files.tokenizerConfig);
const { config, weights } = tinyModel("llama-gqa");

/** Values of every JSON kind, including the awkward ones. */
const anyValue = fc.oneof(
  fc.string({ unit: "grapheme", maxLength: 40 }),
  fc.string({ minLength: 5_000, maxLength: 20_000 }),
  fc.integer(),
  fc.constantFrom(-1, 0, 1, 2 ** 31, -(2 ** 53), 1e308, -1e-308, 0.5),
  fc.boolean(),
  fc.constant(null),
  fc.array(fc.oneof(fc.string({ maxLength: 10 }), fc.integer()), { maxLength: 5 }),
  fc.dictionary(fc.string({ maxLength: 8 }), fc.oneof(fc.string({ maxLength: 8 }), fc.integer()), { maxKeys: 4 }),
);

const valid = {
  chat: { model: "tiny", messages: [{ role: "user", content: "hi" }], max_tokens: 2, temperature: 0 },
  text: { model: "tiny", prompt: "hi", max_tokens: 2, temperature: 0 },
};
const fields = [
  "model",
  "messages",
  "prompt",
  "max_tokens",
  "max_completion_tokens",
  "temperature",
  "top_p",
  "top_k",
  "n",
  "stop",
  "seed",
  "stream",
  "stream_options",
  "adapter_id",
  "user",
  "presence_penalty",
];

describe("hostile input to the runner's API", () => {
  let engine: LlamaEngine;
  let app: ReturnType<typeof createRunnerApp>;
  beforeAll(async () => {
    engine = await LlamaEngine.create(config, weights);
    app = createRunnerApp({ engine, tokenizer, scheduler: new Scheduler(engine, tokenizer, { maxBatch: 4, maxQueue: 64 }), modelId: "tiny" });
  });
  afterAll(() => engine.dispose());

  async function answer(path: string, body: string): Promise<{ status: number; json: unknown }> {
    const response = await app.request(path, { method: "POST", headers: { "content-type": "application/json" }, body });
    const text = await response.text();
    let json: unknown = null;
    try {
      json = JSON.parse(text);
    } catch {
      json = text; // a stream
    }
    return { status: response.status, json };
  }

  const checkAnswer = ({ status, json }: { status: number; json: unknown }) => {
    expect(status).toBeLessThan(500);
    if (status >= 400) {
      const error = (json as { error?: { message?: unknown; type?: unknown } }).error;
      expect(typeof error?.message).toBe("string");
      expect(typeof error?.type).toBe("string");
    }
  };

  it("a valid request with one field replaced by anything is a 200 or a 4xx naming an error", async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom("chat", "text"), fc.constantFrom(...fields), anyValue, async (kind, field, value) => {
        const body = { ...valid[kind as "chat" | "text"], [field]: value };
        checkAnswer(await answer(kind === "chat" ? "/v1/chat/completions" : "/v1/completions", JSON.stringify(body)));
      }),
      { numRuns: 300 },
    );
  });

  it("any JSON value, broken JSON or a deeply nested body is a 4xx", async () => {
    const nested = "[".repeat(5_000) + "]".repeat(5_000);
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(fc.json(), fc.string({ maxLength: 200 }), fc.constant(nested), fc.constant('{"model": "tiny", "messages": [')),
        fc.constantFrom("/v1/chat/completions", "/v1/completions"),
        async (body, path) => {
          const { status, json } = await answer(path, body);
          checkAnswer({ status, json });
          expect(status).toBeGreaterThanOrEqual(400);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("a prompt beyond the context is a 400 that names the limit", async () => {
    const { status, json } = await answer("/v1/completions", JSON.stringify({ ...valid.text, prompt: "x".repeat(config.maxPositionEmbeddings + 10) }));
    expect(status).toBe(400);
    expect((json as { error: { message: string } }).error.message).toMatch(new RegExp(String(config.maxPositionEmbeddings)));
  });
});
