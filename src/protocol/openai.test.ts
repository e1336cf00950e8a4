import { describe, expect, it } from "vitest";
import { BASE_MODEL_ID } from "../constants.ts";
import { ApiError } from "../errors.ts";
import {
  chatCompletionChunkSchema,
  chatCompletionSchema,
  modelListSchema,
  parseChatCompletionRequest,
  parseCompletionRequest,
  requestedModel,
  textCompletionSchema,
} from "./openai.ts";

const chat = (extra: Record<string, unknown> = {}) => ({
  model: BASE_MODEL_ID,
  messages: [{ role: "user", content: "Hello" }],
  ...extra,
});
const completion = (extra: Record<string, unknown> = {}) => ({ model: BASE_MODEL_ID, prompt: "Once upon", ...extra });

function rejection(parse: () => unknown): ApiError {
  try {
    parse();
  } catch (error) {
    if (error instanceof ApiError) return error;
    throw error;
  }
  throw new Error("expected the request to be rejected");
}

describe("parseChatCompletionRequest", () => {
  it("applies OpenAI's defaults to a minimal request", () => {
    expect(parseChatCompletionRequest(chat())).toEqual({
      model: BASE_MODEL_ID,
      adapter_id: undefined,
      messages: [{ role: "user", content: "Hello", name: undefined, tool_calls: undefined, tool_call_id: undefined }],
      max_tokens: undefined,
      temperature: 1,
      top_p: 1,
      top_k: 0,
      n: 1,
      stop: [],
      seed: undefined,
      stream: false,
      include_usage: false,
      presence_penalty: 0,
      frequency_penalty: 0,
      logit_bias: new Map(),
      top_logprobs: null,
      user: undefined,
      response_format: { type: "text" },
      tools: [],
      tool_choice: "none",
      parallel_tool_calls: true,
    });
  });

  it("normalises content parts, stop and every sampling field", () => {
    const request = parseChatCompletionRequest(
      chat({
        messages: [
          { role: "developer", content: "Be brief." },
          { role: "system", content: "You are kind." },
          {
            role: "user",
            content: [
              { type: "text", text: "Hi" },
              { type: "text", text: "there" },
            ],
            name: "ann",
          },
          { role: "assistant", content: [] },
        ],
        max_tokens: 5,
        temperature: 0,
        top_p: 0.5,
        top_k: 40,
        n: 16,
        stop: "\n",
        seed: 42,
        stream: true,
        stream_options: { include_usage: true },
        presence_penalty: -2,
        frequency_penalty: 2,
        user: "u-1",
      }),
    );
    expect(request.messages.map((message) => message.content)).toEqual(["Be brief.", "You are kind.", "Hi\nthere", ""]);
    expect(request.messages[2].name).toBe("ann");
    expect(request).toMatchObject({
      max_tokens: 5,
      temperature: 0,
      top_p: 0.5,
      top_k: 40,
      n: 16,
      stop: ["\n"],
      seed: 42,
      stream: true,
      include_usage: true,
      presence_penalty: -2,
      frequency_penalty: 2,
      user: "u-1",
    });
    expect(parseChatCompletionRequest(chat({ stop: ["a", "b", "c", "d"] })).stop).toEqual(["a", "b", "c", "d"]);
  });

  it("reads vLLM's top_k, with 0 and -1 meaning no filter", () => {
    expect(parseChatCompletionRequest(chat({ top_k: -1 })).top_k).toBe(0);
    expect(parseChatCompletionRequest(chat({ top_k: 0 })).top_k).toBe(0);
    expect(rejection(() => parseChatCompletionRequest(chat({ top_k: -2 }))).param).toBe("top_k");
    expect(rejection(() => parseChatCompletionRequest(chat({ top_k: 1.5 }))).param).toBe("top_k");
  });

  it("honours max_completion_tokens over max_tokens", () => {
    expect(parseChatCompletionRequest(chat({ max_completion_tokens: 7 })).max_tokens).toBe(7);
    expect(parseChatCompletionRequest(chat({ max_tokens: 3, max_completion_tokens: 9 })).max_tokens).toBe(9);
  });

  it("treats null as not given", () => {
    const request = parseChatCompletionRequest(
      chat({ max_tokens: null, temperature: null, stop: null, seed: null, stream: null, stream_options: null, user: null }),
    );
    expect(request).toMatchObject({ max_tokens: undefined, temperature: 1, stop: [], stream: false });
  });

  it("refuses an unknown top-level field, naming it as OpenAI does", () => {
    const error = rejection(() => parseChatCompletionRequest(chat({ temprature: 0.5 })));
    expect(error.toBody().error).toEqual({
      message: "Unrecognized request argument supplied: temprature",
      type: "invalid_request_error",
      param: "temprature",
      code: "unknown_parameter",
    });
  });

  it("reads logprobs, logit_bias, response formats and tools", () => {
    const request = parseChatCompletionRequest(
      chat({
        logprobs: true,
        top_logprobs: 3,
        logit_bias: { "10": 5, "0": -100 },
        response_format: { type: "json_schema", json_schema: { name: "answer", schema: { type: "object" }, strict: true } },
        tools: [{ type: "function", function: { name: "lookup", parameters: { type: "object" } } }],
        tool_choice: "none",
        store: false,
        service_tier: "auto",
        prompt_cache_key: "k",
      }),
    );
    expect(request.top_logprobs).toBe(3);
    expect([...request.logit_bias]).toEqual([
      [0, -100],
      [10, 5],
    ]);
    expect(request.response_format).toEqual({ type: "json_schema", name: "answer", schema: { type: "object" }, strict: true });
    expect(request.tools).toEqual([{ name: "lookup", description: undefined, parameters: { type: "object" }, strict: false }]);
    expect(request.tool_choice).toBe("none");
    expect(parseChatCompletionRequest(chat({ logprobs: true })).top_logprobs).toBe(0);
    expect(parseChatCompletionRequest(chat({ logprobs: false })).top_logprobs).toBeNull();
    expect(parseChatCompletionRequest(chat({ tools: [{ type: "function", function: { name: "f" } }] })).tool_choice).toBe("auto");
  });

  it("accepts tool calls and tool results in the conversation", () => {
    const request = parseChatCompletionRequest(
      chat({
        messages: [
          { role: "user", content: "Weather?" },
          { role: "assistant", content: null, tool_calls: [{ id: "call_1", type: "function", function: { name: "weather", arguments: "{}" } }] },
          { role: "tool", tool_call_id: "call_1", content: "sunny" },
        ],
      }),
    );
    expect(request.messages[1]).toMatchObject({ role: "assistant", content: "", tool_calls: [{ id: "call_1" }] });
    expect(request.messages[2]).toMatchObject({ role: "tool", content: "sunny", tool_call_id: "call_1" });
  });

  it.each([
    ["top_logprobs without logprobs", { top_logprobs: 2 }, "top_logprobs", "invalid_value"],
    ["top_logprobs 21", { logprobs: true, top_logprobs: 21 }, "top_logprobs", "invalid_value"],
    ["a logit_bias key that is no id", { logit_bias: { x: 1 } }, "logit_bias.x", "invalid_value"],
    ["a logit_bias of 101", { logit_bias: { "5": 101 } }, "logit_bias.5", "invalid_value"],
    ["tool_choice without tools", { tool_choice: "required" }, "tool_choice", "invalid_value"],
    [
      "tool_choice naming no tool",
      { tools: [{ type: "function", function: { name: "a" } }], tool_choice: { type: "function", function: { name: "b" } } },
      "tool_choice.function.name",
      "invalid_value",
    ],
    [
      "a tool offered twice",
      {
        tools: [
          { type: "function", function: { name: "a" } },
          { type: "function", function: { name: "a" } },
        ],
      },
      "tools[1].function.name",
      "invalid_value",
    ],
    ["a custom tool", { tools: [{ type: "custom", custom: { name: "a" } }] }, "tools[0].type", "invalid_value"],
    [
      "a schema without a name",
      { response_format: { type: "json_schema", json_schema: { schema: {} } } },
      "response_format.json_schema.name",
      "missing_required_parameter",
    ],
    [
      "JSON output with tools the model may call",
      { response_format: { type: "json_object" }, tools: [{ type: "function", function: { name: "a" } }] },
      "response_format",
      "unsupported_parameter",
    ],
    ["a tool message without its call id", { messages: [{ role: "tool", content: "x" }] }, "messages[0].tool_call_id", "invalid_value"],
    [
      "a user message calling tools",
      { messages: [{ role: "user", content: "x", tool_calls: [{ id: "c", type: "function", function: { name: "f", arguments: "{}" } }] }] },
      "messages[0].tool_calls",
      "invalid_value",
    ],
    ["store true", { store: true }, "store", "unsupported_parameter"],
    ["audio output", { modalities: ["text", "audio"] }, "modalities", "unsupported_parameter"],
    ["functions", { functions: [{ name: "f" }] }, "functions", "unsupported_parameter"],
    ["stream obfuscation", { stream: true, stream_options: { include_obfuscation: true } }, "stream_options.include_obfuscation", "unsupported_parameter"],
  ])("refuses %s with a 400 naming the field", (_name, extra, param, code) => {
    const error = rejection(() => parseChatCompletionRequest(chat(extra)));
    expect(error.status).toBe(400);
    expect(error.param).toBe(param);
    expect(error.code).toBe(code);
  });

  it.each([
    ["temperature 3", { temperature: 3 }, "temperature"],
    ["temperature -0.1", { temperature: -0.1 }, "temperature"],
    ["temperature as a string", { temperature: "1" }, "temperature"],
    ["top_p 0", { top_p: 0 }, "top_p"],
    ["top_p 1.5", { top_p: 1.5 }, "top_p"],
    ["n 0", { n: 0 }, "n"],
    ["n 17", { n: 17 }, "n"],
    ["n 1.5", { n: 1.5 }, "n"],
    ["max_tokens 0", { max_tokens: 0 }, "max_tokens"],
    ["max_tokens 1.5", { max_tokens: 1.5 }, "max_tokens"],
    ["max_tokens '10'", { max_tokens: "10" }, "max_tokens"],
    ["max_completion_tokens 0", { max_completion_tokens: 0 }, "max_completion_tokens"],
    ["stop with 5 entries", { stop: ["a", "b", "c", "d", "e"] }, "stop"],
    ["empty stop string", { stop: "" }, "stop"],
    ["empty stop list", { stop: [] }, "stop"],
    ["empty stop entry", { stop: ["a", ""] }, "stop[1]"],
    ["stop as a number", { stop: 3 }, "stop"],
    ["seed 1.5", { seed: 1.5 }, "seed"],
    ["stream as a string", { stream: "yes" }, "stream"],
    ["stream_options without stream", { stream_options: { include_usage: true } }, "stream_options"],
    ["include_usage as a string", { stream: true, stream_options: { include_usage: "yes" } }, "stream_options.include_usage"],
    ["presence_penalty 2.5", { presence_penalty: 2.5 }, "presence_penalty"],
    ["frequency_penalty -3", { frequency_penalty: -3 }, "frequency_penalty"],
    ["user as a number", { user: 5 }, "user"],
    ["adapter_id as a number", { adapter_id: 5 }, "adapter_id"],
    ["model missing", { model: undefined }, "model"],
    ["model empty", { model: "" }, "model"],
    ["messages empty", { messages: [] }, "messages"],
    ["messages missing", { messages: undefined }, "messages"],
    ["messages not an array", { messages: "hi" }, "messages"],
    ["unknown role", { messages: [{ role: "robot", content: "x" }] }, "messages[0].role"],
    [
      "role on the second message",
      {
        messages: [
          { role: "user", content: "x" },
          { role: "robot", content: "y" },
        ],
      },
      "messages[1].role",
    ],
    ["content missing", { messages: [{ role: "user" }] }, "messages[0].content"],
    ["content as a number", { messages: [{ role: "user", content: 5 }] }, "messages[0].content"],
    ["image part", { messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "x" } }] }] }, "messages[0].content[0].type"],
    ["text part without text", { messages: [{ role: "user", content: [{ type: "text" }] }] }, "messages[0].content[0].text"],
  ])("rejects %s with a 400 naming the field", (_name, extra, param) => {
    const error = rejection(() => parseChatCompletionRequest(chat(extra)));
    expect(error.status).toBe(400);
    expect(error.type).toBe("invalid_request_error");
    expect(error.param).toBe(param);
    expect(error.message).toContain(`'${param}'`);
  });

  it("writes messages the way OpenAI does", () => {
    expect(rejection(() => parseChatCompletionRequest(chat({ max_tokens: "10" }))).message).toBe(
      "Invalid type for 'max_tokens': expected a number, but got a string instead.",
    );
    expect(rejection(() => parseChatCompletionRequest(chat({ max_tokens: 1.5 }))).message).toBe(
      "Invalid type for 'max_tokens': expected an integer, but got a decimal instead.",
    );
    expect(rejection(() => parseChatCompletionRequest(chat({ messages: undefined }))).message).toBe("Missing required parameter: 'messages'.");
    expect(rejection(() => parseChatCompletionRequest(chat({ messages: [{ role: "user" }] }))).message).toBe(
      "Missing required parameter: 'messages[0].content'.",
    );
    expect(rejection(() => parseChatCompletionRequest(chat({ stop: ["a", "b", "c", "d", "e"] }))).message).toMatch(/<=4/);
    expect(rejection(() => parseChatCompletionRequest(chat({ messages: [{ role: "user", content: 5 }] }))).message).toBe(
      "Invalid type for 'messages[0].content': expected a string or an array, but got an integer instead.",
    );
  });

  it("rejects a body that is not an object", () => {
    for (const body of [null, "x", [], 3]) {
      const error = rejection(() => parseChatCompletionRequest(body));
      expect(error.status).toBe(400);
      expect(error.param).toBeNull();
    }
  });
});

describe("parseCompletionRequest", () => {
  it("normalises the prompt to a list", () => {
    expect(parseCompletionRequest(completion()).prompt).toEqual(["Once upon"]);
    expect(parseCompletionRequest(completion({ prompt: ["a", "b"] })).prompt).toEqual(["a", "b"]);
    expect(parseCompletionRequest(completion({ prompt: "" })).prompt).toEqual([""]);
  });

  it("shares sampling parsing with chat", () => {
    const request = parseCompletionRequest(completion({ max_tokens: 4, stop: "x", n: 2, echo: true, best_of: 2, suffix: "" }));
    expect(request).toMatchObject({ max_tokens: 4, stop: ["x"], n: 2, temperature: 1, echo: true, top_logprobs: null });
    expect(parseCompletionRequest(completion({ logprobs: 5 })).top_logprobs).toBe(5);
    expect(parseCompletionRequest(completion({ logprobs: 0 })).top_logprobs).toBe(0);
    expect(parseCompletionRequest(completion()).top_logprobs).toBeNull();
  });

  it.each([
    ["token ids", { prompt: [1, 2, 3] }, "prompt"],
    ["batched token ids", { prompt: [[1, 2], [3]] }, "prompt"],
    ["missing prompt", { prompt: undefined }, "prompt"],
    ["empty prompt list", { prompt: [] }, "prompt"],
    ["prompt as an object", { prompt: { text: "x" } }, "prompt"],
    ["mixed prompt list", { prompt: ["a", 1] }, "prompt[1]"],
    ["temperature 3", { temperature: 3 }, "temperature"],
    ["max_tokens 0", { max_tokens: 0 }, "max_tokens"],
    ["logprobs 6", { logprobs: 6 }, "logprobs"],
    ["best_of other than n", { best_of: 3, n: 2 }, "best_of"],
    ["echo with logprobs", { echo: true, logprobs: 1 }, "echo"],
    ["a suffix", { suffix: "end" }, "suffix"],
    ["an unknown field", { max_token: 3 }, "max_token"],
    ["a repetition_penalty", { repetition_penalty: 1.2 }, "repetition_penalty"],
    ["a watermark", { watermark: true }, "watermark"],
  ])("rejects %s with a 400 naming the field", (_name, extra, param) => {
    const error = rejection(() => parseCompletionRequest(completion(extra)));
    expect(error.status).toBe(400);
    expect(error.param).toBe(param);
  });

  it("reads the Text Generation Inference parameters @huggingface/inference sends", () => {
    const request = parseCompletionRequest(completion({ do_sample: false, temperature: 0.7, return_full_text: true, repetition_penalty: 1, watermark: false }));
    expect(request).toMatchObject({ temperature: 0, echo: true });
    expect(parseCompletionRequest(completion({ do_sample: true, temperature: 0.7 }))).toMatchObject({ temperature: 0.7, echo: false });
  });

  it("says what to send instead of token ids", () => {
    expect(rejection(() => parseCompletionRequest(completion({ prompt: [1, 2] }))).message).toBe(
      "Invalid value for 'prompt': token-id prompts are not supported; send the prompt as a string or an array of strings.",
    );
  });
});

describe("requestedModel", () => {
  it("reads adapter_id over model, and the base model's id as no adapter", () => {
    expect(requestedModel({ model: BASE_MODEL_ID })).toEqual({ adapterId: null, name: BASE_MODEL_ID, param: "model" });
    expect(requestedModel({ model: "ft:pica-base-4m:acme:x:j1" })).toEqual({
      adapterId: "ft:pica-base-4m:acme:x:j1",
      name: "ft:pica-base-4m:acme:x:j1",
      param: "model",
    });
    expect(requestedModel({ model: BASE_MODEL_ID, adapter_id: "a1" })).toEqual({ adapterId: "a1", name: "a1", param: "adapter_id" });
    expect(requestedModel({ model: "a1", adapter_id: BASE_MODEL_ID }).adapterId).toBeNull();
    expect(requestedModel({ model: "a1", adapter_id: null })).toEqual({ adapterId: "a1", name: "a1", param: "model" });
    expect(requestedModel({ model: "Qwen2.5-0.5B" }, "Qwen2.5-0.5B").adapterId).toBeNull();
    expect(requestedModel({ model: BASE_MODEL_ID }, "Qwen2.5-0.5B").adapterId).toBe(BASE_MODEL_ID);
  });

  it("reads parsed requests", () => {
    expect(requestedModel(parseChatCompletionRequest(chat({ adapter_id: "a1" }))).adapterId).toBe("a1");
    expect(requestedModel(parseCompletionRequest(completion())).adapterId).toBeNull();
  });
});

describe("response schemas", () => {
  const usage = { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 };
  const header = { id: "chatcmpl-1", created: 1_700_000_000, model: BASE_MODEL_ID };

  it("accept the bodies the API sends", () => {
    chatCompletionSchema.parse({
      ...header,
      object: "chat.completion",
      choices: [{ index: 0, message: { role: "assistant", content: "Hi", refusal: null }, finish_reason: "stop", logprobs: null }],
      usage,
    });
    chatCompletionSchema.parse({
      ...header,
      object: "chat.completion",
      choices: [
        {
          index: 0,
          message: {
            role: "assistant",
            content: null,
            refusal: null,
            tool_calls: [{ id: "call_1", type: "function", function: { name: "f", arguments: "{}" } }],
          },
          finish_reason: "tool_calls",
          logprobs: { content: [{ token: "{", logprob: -0.1, bytes: [123], top_logprobs: [{ token: "{", logprob: -0.1, bytes: [123] }] }], refusal: null },
        },
      ],
      usage,
    });
    chatCompletionChunkSchema.parse({
      ...header,
      object: "chat.completion.chunk",
      choices: [{ index: 0, delta: { role: "assistant", content: "H" }, finish_reason: null, logprobs: null }],
      usage: null,
    });
    chatCompletionChunkSchema.parse({ ...header, object: "chat.completion.chunk", choices: [], usage });
    textCompletionSchema.parse({
      ...header,
      object: "text_completion",
      choices: [
        {
          index: 0,
          text: " a time",
          finish_reason: "length",
          logprobs: { tokens: [" a", " time"], token_logprobs: [-1, -2], top_logprobs: [{ " a": -1 }, { " time": -2 }], text_offset: [0, 2] },
        },
      ],
      usage,
    });
    modelListSchema.parse({
      object: "list",
      data: [{ id: BASE_MODEL_ID, object: "model", created: 0, owned_by: "system" }],
    });
  });

  it("reject unknown finish reasons", () => {
    const body = {
      ...header,
      object: "chat.completion",
      choices: [{ index: 0, message: { role: "assistant", content: "", refusal: null }, finish_reason: "content_filter", logprobs: null }],
      usage,
    };
    expect(chatCompletionSchema.safeParse(body).success).toBe(false);
  });
});
