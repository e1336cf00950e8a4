/**
 * Property-based hostile input against the runner's public API: random and mutated request bodies
 * (wrong types, huge and unicode strings, negative and huge numbers, extra fields, broken JSON)
 * must always get an OpenAI-shaped 4xx or a 200, never a 5xx or a crash. Then the attacks one at
 * a time, against a runner set up as main.ts sets it up (secret, adapter cache, size bounds):
 * ids with CR/LF, oversized bodies, prompts that cannot fit, malformed JSON and wrong types.
 */
import fc from "fast-check";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { RUNNER_PATHS, runnerAuthorization } from "../../src/protocol/runner.ts";
import { JSON_BODY_LIMIT } from "../../src/request-body.ts";
import { AdapterCache } from "../adapters/adapter-cache.ts";
import { DirectoryAdapterStore } from "../adapters/adapter-store.ts";
import { LlamaEngine } from "../engine/llama-engine.ts";
import { tinyModel } from "../testing/tiny-checkpoints.ts";
import { makeByteLevelTokenizerFiles } from "../tokenizer/byte-level.ts";
import { TextTokenizer } from "../tokenizer/tokenizer.ts";
import { createRunnerApp } from "./app.ts";
import { bytesPerTokenBound } from "./request-size.ts";
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

describe("hostile input to a runner set up like main.ts", () => {
  const SECRET = "hostile-input-runner-secret";
  const auth = runnerAuthorization(SECRET);
  let engine: LlamaEngine;
  let directory: string;
  let scheduler: Scheduler;
  let app: ReturnType<typeof createRunnerApp>;
  beforeAll(async () => {
    engine = await LlamaEngine.create(config, weights);
    directory = await mkdtemp(join(tmpdir(), "pica-hostile-"));
    const cache = new AdapterCache(engine, new DirectoryAdapterStore(directory), { maxAdapters: 4, maxBytes: 2 ** 20 });
    scheduler = new Scheduler(engine, tokenizer, { maxBatch: 4, maxQueue: 64 });
    app = createRunnerApp({
      engine,
      tokenizer,
      scheduler,
      modelId: "tiny",
      knowsAdapter: () => true, // as main.ts: the cache decides, loading on first use
      prepareAdapter: async (id) => (await cache.acquire(id))(),
      secret: SECRET,
      bytesPerToken: bytesPerTokenBound(files.tokenizerJson),
    });
  });
  afterAll(async () => {
    await engine.dispose();
    await rm(directory, { recursive: true, force: true });
  });

  const post = (path: string, body: string, headers: Record<string, string> = {}) =>
    Promise.resolve(app.request(path, { method: "POST", headers: { ...auth, "content-type": "application/json", ...headers }, body }));
  const errorOf = async (response: Response) =>
    ((await response.json()) as { error: { message: string; type: string; param: string | null; code: string | null } }).error;
  const small = JSON.stringify(valid.text);

  it("a model or adapter id with CR/LF or other characters no id has is a 404 naming the field, never a 500", async () => {
    for (const id of ["a\r\nb", "ft:x\r\nSet-Cookie: y=1", "a\nb", "a\u0000b", "../../etc/passwd", "x/./y", "é", "a b", "x".repeat(201)]) {
      for (const [path, body] of [
        [RUNNER_PATHS.completions, { ...valid.text, model: id }],
        [RUNNER_PATHS.chatCompletions, { ...valid.chat, model: id }],
      ] as const) {
        const response = await post(path, JSON.stringify(body));
        expect(response.status, `${path} ${JSON.stringify(id)}`).toBe(404);
        expect(await errorOf(response)).toMatchObject({ type: "not_found_error", param: "model", code: "model_not_found" });
      }
      const viaAdapterId = await post(RUNNER_PATHS.completions, JSON.stringify({ ...valid.text, adapter_id: id }));
      expect(viaAdapterId.status).toBe(404);
      expect(await errorOf(viaAdapterId)).toMatchObject({ param: "adapter_id", code: "model_not_found" });
    }
    // A well-formed id the store does not hold is the same 404.
    const unknown = await post(RUNNER_PATHS.completions, JSON.stringify({ ...valid.text, model: "ft:tiny:nobody:x:1" }));
    expect(unknown.status).toBe(404);
    expect(await errorOf(unknown)).toMatchObject({ param: "model", code: "model_not_found" });
  });

  it("a body over the limit is a 413 at once, and a small request beside it is served", async () => {
    const huge = JSON.stringify({ ...valid.text, prompt: "x".repeat(20 * 2 ** 20) });
    const [refused, served] = await Promise.all([post(RUNNER_PATHS.completions, huge), post(RUNNER_PATHS.completions, small)]);
    expect(refused.status).toBe(413);
    expect(await errorOf(refused)).toMatchObject({ type: "invalid_request_error", code: "request_too_large" });
    expect(served.status).toBe(200);
    expect(((await served.json()) as { choices: unknown[] }).choices).toHaveLength(1);
  });

  it("a chunked body (no Content-Length) is refused as soon as it passes the limit, without being read to its end", async () => {
    let pulled = 0;
    const chunk = new TextEncoder().encode(`{"prompt": "${"x".repeat(64 * 1024)}`);
    const endless = new ReadableStream<Uint8Array>({
      pull(controller) {
        pulled++;
        controller.enqueue(chunk);
      },
    });
    const response = await Promise.resolve(
      app.request(RUNNER_PATHS.chatCompletions, { method: "POST", headers: auth, body: endless, duplex: "half" } as RequestInit),
    );
    expect(response.status).toBe(413);
    expect((await errorOf(response)).code).toBe("request_too_large");
    expect(pulled * chunk.length).toBeLessThan(2 * JSON_BODY_LIMIT + 2 * chunk.length);
  });

  it("a prompt that cannot fit is a 400 naming the limit, refused before it is tokenised", async () => {
    const encode = vi.spyOn(tokenizer, "encode");
    try {
      const prompt = "x".repeat(JSON_BODY_LIMIT / 2); // under the body limit, far beyond the context
      const text = await post(RUNNER_PATHS.completions, JSON.stringify({ ...valid.text, prompt }));
      expect(text.status).toBe(400);
      const textError = await errorOf(text);
      expect(textError).toMatchObject({ param: "prompt", code: "context_length_exceeded" });
      expect(textError.message).toContain(`${scheduler.contextLimit} tokens`);
      const listed = await post(RUNNER_PATHS.completions, JSON.stringify({ ...valid.text, prompt: ["hi", prompt] }));
      expect(listed.status).toBe(400);
      expect((await errorOf(listed)).param).toBe("prompt");
      const chat = await post(RUNNER_PATHS.chatCompletions, JSON.stringify({ ...valid.chat, messages: [{ role: "user", content: prompt }] }));
      expect(chat.status).toBe(400);
      const chatError = await errorOf(chat);
      expect(chatError).toMatchObject({ param: "messages", code: "context_length_exceeded" });
      expect(chatError.message).toContain(`${scheduler.contextLimit} tokens`);
      expect(encode).not.toHaveBeenCalled();
    } finally {
      encode.mockRestore();
    }
  });

  it("malformed JSON and wrong types are 400s naming the field", async () => {
    const cases: [string, string, string | null, string][] = [
      [RUNNER_PATHS.chatCompletions, '{"model": "tiny", "messages": [', null, "invalid_json"],
      [RUNNER_PATHS.completions, "", null, "invalid_json"],
      [RUNNER_PATHS.completions, "[1, 2]", null, "invalid_type"],
      [RUNNER_PATHS.completions, JSON.stringify({ ...valid.text, model: 5 }), "model", "invalid_type"],
      [RUNNER_PATHS.completions, JSON.stringify({ ...valid.text, max_tokens: "3" }), "max_tokens", "invalid_type"],
      [RUNNER_PATHS.completions, JSON.stringify({ ...valid.text, temperature: 9 }), "temperature", "invalid_value"],
      [RUNNER_PATHS.chatCompletions, JSON.stringify({ ...valid.chat, messages: "hi" }), "messages", "invalid_type"],
      [RUNNER_PATHS.chatCompletions, JSON.stringify({ ...valid.chat, stream: "yes" }), "stream", "invalid_type"],
    ];
    for (const [path, body, param, code] of cases) {
      const response = await post(path, body);
      expect(response.status, body).toBe(400);
      expect(await errorOf(response), body).toMatchObject({ type: "invalid_request_error", param, code });
    }
  });
});
