// Structured output and tool calls through the runner's API on a tiny random model: whatever the
// model would say, constrained decoding makes every finished output parse and validate against
// the request's schema, per choice in a batch that mixes constrained, free and adapter rows.
import { Validator } from "@cfworker/json-schema";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LlamaEngine } from "../engine/llama-engine.ts";
import { computeBasis } from "../pica/basis.ts";
import { randomAdapter } from "../testing/random-adapters.ts";
import { tinyModel } from "../testing/tiny-checkpoints.ts";
import { makeByteLevelTokenizerFiles } from "../tokenizer/byte-level.ts";
import { TextTokenizer } from "../tokenizer/tokenizer.ts";
import { chatCompletionChunkSchema, chatCompletionSchema } from "../../src/protocol/openai.ts";
import { parseSseData } from "../../src/protocol/sse.ts";
import { createRunnerApp } from "./app.ts";
import { Scheduler } from "./scheduler.ts";

const files = makeByteLevelTokenizerFiles();
const tokenizer = TextTokenizer.fromJson(files.tokenizerJson, files.tokenizerConfig);
// Byte-level prompts that describe tools are long: room beyond the tiny model's usual 512 positions.
const tiny = tinyModel("llama-gqa");
const config = { ...tiny.config, maxPositionEmbeddings: 2048 };
const weights = tiny.weights;

type Json = Record<string, any>;

// Bounded schemas: a random model wanders, so strings and arrays have limits that let it finish.
const PERSON = {
  type: "object",
  properties: {
    name: { type: "string", maxLength: 6 },
    age: { type: "integer", minimum: 0, maximum: 120 },
    mood: { enum: ["glad", "sad", "calm"] },
    tags: { type: "array", items: { type: "boolean" }, maxItems: 3 },
    address: { type: "object", properties: { zip: { type: "integer", minimum: 1000, maximum: 9999 } }, required: ["zip"], additionalProperties: false },
  },
  required: ["name", "age", "mood"],
  additionalProperties: false,
};
const WEATHER = {
  type: "function",
  function: {
    name: "get_weather",
    parameters: {
      type: "object",
      properties: { city: { enum: ["Oslo", "Lima"] }, days: { type: "integer", minimum: 1, maximum: 7 } },
      required: ["city", "days"],
    },
  },
};
const TIME = {
  type: "function",
  function: { name: "get_time", parameters: { type: "object", properties: { zone: { enum: ["UTC", "CET"] } }, required: ["zone"] } },
};

describe("structured output on the runner", () => {
  let engine: LlamaEngine;
  let app: ReturnType<typeof createRunnerApp>;

  beforeAll(async () => {
    const basis = await computeBasis(config, weights, { rMax: 8 });
    engine = await LlamaEngine.create(config, weights, { adapters: { basis, rank: 4 } });
    engine.registerAdapter("tenant-a", randomAdapter(config, basis, { rank: 4, seed: 9 }));
    app = createRunnerApp({ engine, tokenizer, scheduler: new Scheduler(engine, tokenizer, { maxBatch: 8, maxQueue: 64 }), modelId: "tiny" });
  });
  afterAll(() => engine.dispose());

  async function chat(body: Json): Promise<{ status: number; json: Json; text: string }> {
    const response = await app.request("/v1/chat/completions", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ messages: [{ role: "user", content: "Hi" }], max_tokens: 300, ...body }),
    });
    const text = await response.text();
    return { status: response.status, json: response.headers.get("content-type")?.includes("json") ? JSON.parse(text) : {}, text };
  }

  it("json_schema: every choice, base and adapter, sampled at temperature 1, parses and validates", async () => {
    const validator = new Validator(PERSON as never);
    for (const model of ["tiny", "tenant-a"]) {
      const { status, json } = await chat({
        model,
        n: 6,
        seed: 11,
        temperature: 1,
        response_format: { type: "json_schema", json_schema: { name: "person", schema: PERSON, strict: true } },
      });
      expect(status).toBe(200);
      for (const choice of json.choices) {
        expect(choice.finish_reason).toBe("stop");
        const value = JSON.parse(choice.message.content);
        expect(validator.validate(value).errors).toEqual([]);
      }
      // A random model at temperature 1 does not write six identical people.
      expect(new Set(json.choices.map((choice: Json) => choice.message.content)).size).toBeGreaterThan(1);
    }
  });

  it("json_object: the output is one JSON object", async () => {
    const { json } = await chat({ model: "tiny", n: 3, seed: 2, response_format: { type: "json_object" }, logit_bias: { "125": 8 } });
    for (const choice of json.choices) {
      expect(choice.finish_reason).toBe("stop");
      const value = JSON.parse(choice.message.content);
      expect(typeof value === "object" && value !== null && !Array.isArray(value)).toBe(true);
    }
  });

  it("constrained and free rows share a batch: each keeps its own shape", async () => {
    const validator = new Validator(PERSON as never);
    const format = { type: "json_schema", json_schema: { name: "person", schema: PERSON } };
    const requests = [
      chat({ model: "tiny", seed: 1, response_format: format }),
      chat({ model: "tenant-a", seed: 2, max_tokens: 30 }),
      chat({ model: "tenant-a", seed: 3, response_format: format }),
      chat({ model: "tiny", seed: 4, max_tokens: 30 }),
    ];
    const [first, free, third, freeBase] = await Promise.all(requests);
    for (const constrained of [first, third]) expect(validator.validate(JSON.parse(constrained.json.choices[0].message.content)).errors).toEqual([]);
    // The free rows are what they are alone: constraints do not leak across rows.
    const alone = await chat({ model: "tenant-a", seed: 2, max_tokens: 30 });
    expect(free.json.choices[0].message.content).toBe(alone.json.choices[0].message.content);
    expect(freeBase.status).toBe(200);
  });

  it("streamed structured output concatenates to the same valid JSON as the whole response", async () => {
    const body = { model: "tiny", seed: 5, temperature: 0.8, response_format: { type: "json_schema", json_schema: { name: "person", schema: PERSON } } };
    const whole = await chat(body);
    const streamed = await chat({ ...body, stream: true });
    const text = parseSseData(streamed.text)
      .filter((data) => data !== "[DONE]")
      .map((data) => JSON.parse(data).choices[0]?.delta?.content ?? "")
      .join("");
    expect(text).toBe(whole.json.choices[0].message.content);
    expect(() => JSON.parse(text)).not.toThrow();
  });

  it("an unsupported schema feature is a 400 naming it", async () => {
    const schema = { type: "object", properties: { a: { type: "string" } }, patternProperties: { "^x": { type: "string" } } };
    const { status, json } = await chat({ model: "tiny", response_format: { type: "json_schema", json_schema: { name: "x", schema } } });
    expect(status).toBe(400);
    expect(json.error.param).toBe("response_format.json_schema.schema");
    expect(json.error.code).toBe("unsupported_schema");
    expect(json.error.message).toContain("patternProperties");
  });

  describe("tools", () => {
    const validators = new Map([
      ["get_weather", new Validator(WEATHER.function.parameters as never)],
      ["get_time", new Validator(TIME.function.parameters as never)],
    ]);

    it("tool_choice 'required': the answer is tool calls whose arguments validate", async () => {
      const { status, json } = await chat({
        model: "tiny",
        n: 4,
        seed: 3,
        temperature: 1,
        tools: [WEATHER, TIME],
        tool_choice: "required",
        parallel_tool_calls: false,
      });
      expect(status).toBe(200);
      chatCompletionSchema.parse(json);
      for (const choice of json.choices) {
        expect(choice.finish_reason).toBe("tool_calls");
        expect(choice.message.tool_calls.length).toBeGreaterThan(0);
        for (const call of choice.message.tool_calls) {
          expect(call.id).toMatch(/^call_[0-9a-f]{24}$/);
          expect(call.type).toBe("function");
          expect(validators.get(call.function.name)!.validate(JSON.parse(call.function.arguments)).errors).toEqual([]);
        }
      }
    });

    it("a named function is the one called, once per call, with parallel_tool_calls false", async () => {
      const { json } = await chat({
        model: "tenant-a",
        n: 3,
        seed: 4,
        tools: [WEATHER, TIME],
        tool_choice: { type: "function", function: { name: "get_time" } },
        parallel_tool_calls: false,
      });
      for (const choice of json.choices) {
        expect(choice.message.tool_calls).toHaveLength(1);
        expect(choice.message.tool_calls[0].function.name).toBe("get_time");
        expect(validators.get("get_time")!.validate(JSON.parse(choice.message.tool_calls[0].function.arguments)).errors).toEqual([]);
      }
    });

    it("tool_choice 'none' and 'auto' leave the text free unless the model opens a call", async () => {
      const none = await chat({ model: "tiny", seed: 6, max_tokens: 20, tools: [WEATHER], tool_choice: "none" });
      const plain = await chat({ model: "tiny", seed: 6, max_tokens: 20 });
      expect(none.json.choices[0].finish_reason).not.toBe("tool_calls");
      expect(none.json.choices[0].message.tool_calls).toBeUndefined();
      expect(plain.status).toBe(200);
      const auto = await chat({ model: "tiny", n: 4, seed: 7, max_tokens: 30, tools: [WEATHER] });
      for (const choice of auto.json.choices) {
        if (choice.finish_reason === "tool_calls") {
          for (const call of choice.message.tool_calls)
            expect(validators.get(call.function.name)!.validate(JSON.parse(call.function.arguments)).errors).toEqual([]);
        } else expect(typeof choice.message.content).toBe("string");
      }
    });

    it("streams tool calls in OpenAI's delta shape, finishing with 'tool_calls'", async () => {
      const { text } = await chat({ model: "tiny", seed: 8, stream: true, tools: [WEATHER], tool_choice: "required", parallel_tool_calls: false });
      const chunks = parseSseData(text)
        .filter((data) => data !== "[DONE]")
        .map((data) => JSON.parse(data) as Json);
      for (const chunk of chunks) chatCompletionChunkSchema.parse(chunk);
      const calls = chunks.flatMap((chunk) => chunk.choices[0]?.delta?.tool_calls ?? []);
      expect(calls).toHaveLength(1);
      expect(calls[0]).toMatchObject({ index: 0, type: "function", function: { name: "get_weather" } });
      expect(validators.get("get_weather")!.validate(JSON.parse(calls[0].function.arguments)).errors).toEqual([]);
      expect(chunks.at(-1)!.choices[0].finish_reason).toBe("tool_calls");
    });

    it("a conversation with a tool call and its result is accepted and answered", async () => {
      const { status, json } = await chat({
        model: "tiny",
        max_tokens: 5,
        tools: [WEATHER],
        messages: [
          { role: "user", content: "Weather in Oslo?" },
          {
            role: "assistant",
            content: null,
            tool_calls: [{ id: "call_1", type: "function", function: { name: "get_weather", arguments: '{"city":"Oslo","days":1}' } }],
          },
          { role: "tool", tool_call_id: "call_1", content: "sunny" },
        ],
      });
      expect(status).toBe(200);
      expect(json.usage.prompt_tokens).toBeGreaterThan(tokenizer.encode("sunny").length);
    });

    it("a tool schema the grammar cannot enforce is a 400 naming the tool's parameters", async () => {
      const bad = { type: "function", function: { name: "odd", parameters: { type: "object", not: { required: ["a"] } } } };
      const { status, json } = await chat({ model: "tiny", tools: [WEATHER, bad], tool_choice: "required" });
      expect(status).toBe(400);
      expect(json.error.param).toBe("tools[1].function.parameters");
    });
  });
});
