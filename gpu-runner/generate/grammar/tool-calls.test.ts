import { Validator } from "@cfworker/json-schema";
import { beforeAll, describe, expect, it } from "vitest";
import { QWEN3_DIRECTORY } from "../../tokenizer/real-tokenizer-fixtures.ts";
import { loadTokenizer, type TextTokenizer } from "../../tokenizer/tokenizer.ts";
import { GrammarCompiler } from "./compiler.ts";
import { byteLevelTokenizer, randomWalk } from "./random-walk.ts";
import {
  DEFAULT_TOOL_CALLS,
  type FunctionTool,
  formatToolCalls,
  HERMES_TOOL_CALLS,
  LLAMA3_JSON_TOOL_CALLS,
  type ParsedToolCalls,
  parseToolCalls,
  type ToolCallFormat,
  type ToolCallOptions,
  type ToolChoice,
  toolCallFormatFor,
} from "./tool-calls.ts";
import { UnsupportedSchemaError } from "./unsupported-schema-error.ts";

const TOOLS: FunctionTool[] = [
  {
    name: "get_weather",
    description: "Current weather in a city",
    parameters: { type: "object", properties: { city: { type: "string", maxLength: 10 }, unit: { enum: ["c", "f"] } }, required: ["city", "unit"] },
  },
  {
    name: "get_time",
    parameters: { type: "object", properties: { zone: { type: "string", pattern: "^[A-Z][a-z]{1,8}/[A-Z][a-z]{1,8}$" } }, required: ["zone"] },
  },
  { name: "ping" },
];

function checkCalls(parsed: ParsedToolCalls, text: string): void {
  for (const call of parsed.toolCalls) {
    const tool = TOOLS.find((candidate) => candidate.name === call.name);
    expect(tool, text).toBeDefined();
    const schema = (tool!.parameters ?? { type: "object", properties: {}, additionalProperties: false }) as never;
    const result = new Validator(schema, "2020-12", false).validate(JSON.parse(call.arguments));
    expect(result.valid, `${text}\n${JSON.stringify(result.errors.at(-1))}`).toBe(true);
  }
}

interface Setup {
  tokenizer: TextTokenizer;
  compiler: GrammarCompiler;
  format: ToolCallFormat;
}

async function walkCalls(setup: Setup, choice: ToolChoice, walks: number, options: ToolCallOptions = {}, forced: number[] = []): Promise<ParsedToolCalls[]> {
  const grammar = await setup.compiler.toolCalls(TOOLS, choice, setup.format, options);
  const results: ParsedToolCalls[] = [];
  for (let seed = 0; seed < walks; seed++) {
    const constraint = grammar.createConstraint();
    const walk = randomWalk(constraint, { seed, vocabSize: setup.compiler.vocabSize, stopTokenIds: setup.compiler.stopTokenIds, forced });
    constraint.dispose();
    if (!walk.ended) continue;
    const text = setup.tokenizer.decode(walk.ids);
    const parsed = parseToolCalls(text, setup.format);
    checkCalls(parsed, text);
    results.push(parsed);
  }
  expect(results.length).toBeGreaterThanOrEqual(Math.ceil(walks * 0.8));
  return results;
}

describe("tool calls over the byte-level vocabulary, in the default format", () => {
  const setup = { format: DEFAULT_TOOL_CALLS } as Setup;
  beforeAll(async () => {
    setup.tokenizer = byteLevelTokenizer();
    setup.compiler = await GrammarCompiler.create(setup.tokenizer);
  });

  it('"required" writes only calls, each with valid arguments', async () => {
    for (const parsed of await walkCalls(setup, "required", 30)) {
      expect(parsed.content).toBeNull();
      expect(parsed.toolCalls.length).toBeGreaterThanOrEqual(1);
    }
  });

  it('"required" without parallel calls writes exactly one', async () => {
    for (const parsed of await walkCalls(setup, "required", 20, { parallelToolCalls: false })) expect(parsed.toolCalls).toHaveLength(1);
  });

  it("a named function is called exactly once", async () => {
    for (const parsed of await walkCalls(setup, { name: "get_time" }, 20)) {
      expect(parsed.toolCalls.map((call) => call.name)).toEqual(["get_time"]);
      expect(parsed.content).toBeNull();
    }
  });

  it('"auto" lets plain text through and ends it at will', async () => {
    const grammar = await setup.compiler.toolCalls(TOOLS, "auto", DEFAULT_TOOL_CALLS);
    const constraint = grammar.createConstraint();
    const logits = new Float32Array(setup.compiler.vocabSize);
    constraint.mask(logits);
    expect(logits["H".charCodeAt(0)]).toBe(0);
    expect(logits[setup.tokenizer.eosTokenIds[0]]).toBe(0);
    for (const id of setup.tokenizer.encode("Hi there", { addSpecialTokens: false })) constraint.accept(id);
    constraint.accept(setup.tokenizer.eosTokenIds[0]);
    constraint.dispose();
    expect(parseToolCalls("Hi there", DEFAULT_TOOL_CALLS)).toEqual({ content: "Hi there", toolCalls: [] });
    for (const parsed of await walkCalls(setup, "auto", 10)) expect(parsed.content ?? "").not.toContain("<tool_call>{");
  });

  it('"auto" constrains what follows the call marker', async () => {
    const marker = setup.tokenizer.encode("Sure. <tool_call>", { addSpecialTokens: false });
    for (const parsed of await walkCalls(setup, "auto", 20, {}, marker)) {
      expect(parsed.toolCalls.length).toBeGreaterThanOrEqual(1);
      expect(parsed.content?.startsWith("Sure.")).toBe(true);
    }
  });

  it("refuses a tool schema it cannot honour, naming the tool", async () => {
    const tools = [...TOOLS, { name: "bad", parameters: { type: "object", properties: { a: { type: "string", format: "iri" } } } }];
    const error = await setup.compiler.toolCalls(tools, "auto", DEFAULT_TOOL_CALLS).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(UnsupportedSchemaError);
    expect((error as UnsupportedSchemaError).subject).toBe('parameters of tool "bad"');
    expect((error as UnsupportedSchemaError).path).toBe("#/properties/a");
    await expect(setup.compiler.toolCalls(TOOLS, { name: "missing" }, DEFAULT_TOOL_CALLS)).rejects.toThrow(/not among the tools/);
  });
});

describe("tool calls over Qwen3's vocabulary, in its own format", () => {
  const setup = { format: HERMES_TOOL_CALLS } as Setup;
  beforeAll(async () => {
    setup.tokenizer = await loadTokenizer(QWEN3_DIRECTORY);
    setup.compiler = await GrammarCompiler.create(setup.tokenizer);
  });

  it("finds the format in the chat template", () => {
    expect(toolCallFormatFor(setup.tokenizer.chatTemplate)).toBe(HERMES_TOOL_CALLS);
  });

  it('"required" writes valid calls', async () => {
    for (const parsed of await walkCalls(setup, "required", 6)) expect(parsed.toolCalls.length).toBeGreaterThanOrEqual(1);
  });

  it('"auto" constrains what follows the <tool_call> token', async () => {
    const marker = [setup.tokenizer.tokenToId("<tool_call>")!];
    for (const parsed of await walkCalls(setup, "auto", 6, { parallelToolCalls: false }, marker)) expect(parsed.toolCalls).toHaveLength(1);
  });
});

describe("reading tool calls back", () => {
  const calls = [
    { name: "get_weather", arguments: '{"city":"Paris","unit":"c"}' },
    { name: "ping", arguments: "{}" },
  ];

  it.each([DEFAULT_TOOL_CALLS, HERMES_TOOL_CALLS, LLAMA3_JSON_TOOL_CALLS])("round-trips calls written in the $name format", (format) => {
    expect(parseToolCalls(formatToolCalls(calls, format), format)).toEqual({ content: null, toolCalls: calls });
    expect(parseToolCalls(`Let me look.\n${formatToolCalls(calls, format)}`, format)).toEqual({ content: "Let me look.", toolCalls: calls });
  });

  it("leaves malformed calls and text in the content", () => {
    const text = 'Plan: <tool_call>{"name": "ping", "arguments": {</tool_call> done';
    expect(parseToolCalls(text, DEFAULT_TOOL_CALLS)).toEqual({ content: text, toolCalls: [] });
    expect(parseToolCalls("no calls here", HERMES_TOOL_CALLS)).toEqual({ content: "no calls here", toolCalls: [] });
  });

  it("reads Llama 3.1's bare JSON calls", () => {
    expect(parseToolCalls('{"name": "get_weather", "parameters": {"city": "Oslo", "unit": "f"}}', LLAMA3_JSON_TOOL_CALLS).toolCalls).toEqual([
      { name: "get_weather", arguments: '{"city":"Oslo","unit":"f"}' },
    ]);
  });

  it("picks the format a chat template teaches", () => {
    expect(toolCallFormatFor(null)).toBe(DEFAULT_TOOL_CALLS);
    expect(toolCallFormatFor('{{ "<|python_tag|>" }}Respond in the format {"name": function name, "parameters": dictionary}')).toBe(LLAMA3_JSON_TOOL_CALLS);
    expect(toolCallFormatFor("{% for m in messages %}{{ m.content }}{% endfor %}")).toBe(DEFAULT_TOOL_CALLS);
  });
});
