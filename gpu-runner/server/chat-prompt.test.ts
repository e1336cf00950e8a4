import { describe, expect, it } from "vitest";
import { parseChatCompletionRequest } from "../../src/protocol/openai.ts";
import { DEFAULT_TOOL_CALLS, HERMES_TOOL_CALLS } from "../generate/grammar/index.ts";
import { makeByteLevelTokenizerFiles } from "../tokenizer/byte-level.ts";
import { QWEN3_DIRECTORY } from "../tokenizer/real-tokenizer-fixtures.ts";
import { loadTokenizer, TextTokenizer } from "../tokenizer/tokenizer.ts";
import { renderChatPrompt } from "./chat-prompt.ts";

const WEATHER = {
  type: "function",
  function: { name: "get_weather", description: "Weather by city", parameters: { type: "object", properties: { city: { type: "string" } } } },
};
const conversation = [
  { role: "user", content: "Weather in Oslo?" },
  { role: "assistant", content: null, tool_calls: [{ id: "call_1", type: "function", function: { name: "get_weather", arguments: '{"city": "Oslo"}' } }] },
  { role: "tool", tool_call_id: "call_1", content: "sunny" },
];

describe("renderChatPrompt", () => {
  it("describes the tools in a system message for a template without tools, and writes past calls in the default format", () => {
    const files = makeByteLevelTokenizerFiles();
    const tokenizer = TextTokenizer.fromJson(files.tokenizerJson, files.tokenizerConfig);
    expect(tokenizer.templateTakesTools).toBe(false);
    const request = parseChatCompletionRequest({ model: "m", messages: conversation, tools: [WEATHER] });
    const prompt = renderChatPrompt(tokenizer, request, DEFAULT_TOOL_CALLS);
    expect(prompt).toBe(
      "<|im_start|>system\nFunctions you may call:\n" +
        '{"name":"get_weather","description":"Weather by city","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}\n' +
        'Call one as <tool_call>{"name": <name>, "arguments": <arguments>}</tool_call><|im_end|>\n' +
        "<|im_start|>user\nWeather in Oslo?<|im_end|>\n" +
        '<|im_start|>assistant\n<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call><|im_end|>\n' +
        "<|im_start|>tool\nsunny<|im_end|>\n" +
        "<|im_start|>assistant\n",
    );
    // tool_choice "none": the model is not told about the tools.
    const none = renderChatPrompt(
      tokenizer,
      parseChatCompletionRequest({ model: "m", messages: [conversation[0]], tools: [WEATHER], tool_choice: "none" }),
      DEFAULT_TOOL_CALLS,
    );
    expect(none).toBe("<|im_start|>user\nWeather in Oslo?<|im_end|>\n<|im_start|>assistant\n");
  });

  it("hands tools, calls and results to a template that renders them (Qwen3)", async () => {
    const tokenizer = await loadTokenizer(QWEN3_DIRECTORY);
    expect(tokenizer.templateTakesTools).toBe(true);
    const prompt = renderChatPrompt(tokenizer, parseChatCompletionRequest({ model: "m", messages: conversation, tools: [WEATHER] }), HERMES_TOOL_CALLS);
    expect(prompt).toContain("<tools>");
    expect(prompt).toContain('"name": "get_weather"');
    expect(prompt).toContain('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>');
    expect(prompt).toContain("<tool_response>\nsunny\n</tool_response>");
    expect(prompt.endsWith("<|im_start|>assistant\n")).toBe(true);
  });
});
