/**
 * Tool calls: how models write them, the structural tag that constrains them, and reading them
 * back out of generated text.
 *
 * A call is always `prefix + {"name": "<function>", "<argumentsKey>": <arguments>} + suffix`,
 * which covers Qwen2.5/Qwen3/Hermes (`<tool_call>\n…\n</tool_call>`), Llama 3.1's bare JSON with
 * "parameters", and the format used for models whose template has none. The structural tag lets
 * text run free until the call's opening appears (tool_choice "auto"), or starts with a call
 * ("required", a named function); inside a call the arguments follow the function's schema.
 */
import type { StructuralTag, TagFormat } from "@mlc-ai/web-xgrammar";
import { jsonSchemaGrammar, jsonText } from "./json-schema-grammar.ts";
import { UnsupportedSchemaError } from "./unsupported-schema-error.ts";

/** A function the model may call: OpenAI's `tools[].function`. */
export interface FunctionTool {
  name: string;
  description?: string;
  /** JSON schema of the arguments object; absent means no arguments. */
  parameters?: unknown;
  /** OpenAI's strict flag for this function's schema. */
  strict?: boolean;
}

/** OpenAI's tool_choice, with `{type: "function", function: {name}}` reduced to `{name}`. */
export type ToolChoice = "auto" | "required" | { name: string };

/** How a model writes one tool call. */
export interface ToolCallFormat {
  /** A short name for logs and errors. */
  readonly name: string;
  /** Text before the call's JSON; it opens a call in free text (empty: the JSON's own `{"name": `). */
  readonly prefix: string;
  /** Key of the arguments in the call's JSON: "arguments", or Llama 3.1's "parameters". */
  readonly argumentsKey: string;
  /** Text after the call's JSON. */
  readonly suffix: string;
  /** Text between two calls of one turn. */
  readonly separator: string;
}

/** Qwen2.5, Qwen3 and Hermes chat templates: `<tool_call>\n{"name": …, "arguments": …}\n</tool_call>`. */
export const HERMES_TOOL_CALLS: ToolCallFormat = {
  name: "hermes",
  prefix: "<tool_call>\n",
  argumentsKey: "arguments",
  suffix: "\n</tool_call>",
  separator: "\n",
};

/** Llama 3.1/3.2's JSON tool calls: `{"name": …, "parameters": …}`, several joined by "; ". */
export const LLAMA3_JSON_TOOL_CALLS: ToolCallFormat = { name: "llama3-json", prefix: "", argumentsKey: "parameters", suffix: "", separator: "; " };

/** For models whose template has no tool format (the shipped byte-level model): `<tool_call>{…}</tool_call>`. */
export const DEFAULT_TOOL_CALLS: ToolCallFormat = {
  name: "default",
  prefix: "<tool_call>",
  argumentsKey: "arguments",
  suffix: "</tool_call>",
  separator: "\n",
};

/** The tool-call format a chat template teaches, or the default one. */
export function toolCallFormatFor(chatTemplate: string | null): ToolCallFormat {
  if (chatTemplate === null) return DEFAULT_TOOL_CALLS;
  if (chatTemplate.includes("<tool_call>")) return HERMES_TOOL_CALLS;
  if (chatTemplate.includes('"parameters"') && /<\|python_tag\|>|ipython/.test(chatTemplate)) return LLAMA3_JSON_TOOL_CALLS;
  return DEFAULT_TOOL_CALLS;
}

/** Options of tool-call grammars. */
export interface ToolCallOptions {
  /** OpenAI's parallel_tool_calls: several calls in one turn (default true). */
  parallelToolCalls?: boolean;
}

/** The structural tag for these tools and this choice; tool schemas that cannot be honoured throw UnsupportedSchemaError. */
export function toolCallStructuralTag(
  tools: readonly FunctionTool[],
  choice: ToolChoice,
  format: ToolCallFormat,
  options: ToolCallOptions = {},
): StructuralTag {
  checkTools(tools);
  const parallel = options.parallelToolCalls ?? true;
  let offered = tools;
  if (typeof choice === "object") {
    offered = tools.filter((tool) => tool.name === choice.name);
    if (offered.length === 0) throw new Error(`tool_choice names ${JSON.stringify(choice.name)}, which is not among the tools`);
  }
  const tags = offered.map((tool) => callTag(tool, format));
  if (typeof choice === "object") return { type: "structural_tag", format: tags[0] };
  if (choice === "required") {
    return {
      type: "structural_tag",
      format: { type: "tags_with_separator", tags, separator: format.separator, at_least_one: true, stop_after_first: !parallel },
    };
  }
  const trigger = format.prefix === "" ? callOpening() : format.prefix.trimEnd() || format.prefix;
  return { type: "structural_tag", format: { type: "triggered_tags", triggers: [trigger], tags, at_least_one: false, stop_after_first: !parallel } };
}

function checkTools(tools: readonly FunctionTool[]): void {
  if (tools.length === 0) throw new Error("tool calls need at least one tool");
  const names = new Set<string>();
  for (const tool of tools) {
    if (typeof tool.name !== "string" || tool.name === "") throw new Error("every tool needs a non-empty name");
    if (names.has(tool.name)) throw new Error(`tool ${JSON.stringify(tool.name)} is listed twice`);
    names.add(tool.name);
  }
}

function callOpening(): string {
  return '{"name": ';
}

function callTag(tool: FunctionTool, format: ToolCallFormat): TagFormat {
  // A function without parameters takes none: its arguments are "{}".
  const parameters = tool.parameters ?? { type: "object", properties: {}, additionalProperties: false };
  let grammar: string;
  try {
    grammar = jsonSchemaGrammar(parameters, { strict: tool.strict === true });
  } catch (error) {
    if (error instanceof UnsupportedSchemaError)
      throw new UnsupportedSchemaError(error.path, error.keyword, error.reason, `parameters of tool ${JSON.stringify(tool.name)}`);
    throw error;
  }
  return {
    type: "tag",
    begin: `${format.prefix}${callOpening()}${JSON.stringify(tool.name)}, ${JSON.stringify(format.argumentsKey)}: `,
    content: { type: "grammar", grammar },
    end: `}${format.suffix}`,
  };
}

/** A call read back from text; `arguments` is JSON text, as OpenAI's API carries it. */
export interface ParsedToolCall {
  name: string;
  arguments: string;
}

/** Generated text split into the assistant's content and its tool calls. */
export interface ParsedToolCalls {
  /** The text outside the calls, trimmed; null when nothing is left. */
  content: string | null;
  toolCalls: ParsedToolCall[];
}

/** Reads the tool calls written in `format` out of `text`; anything that is not a well-formed call stays content. */
export function parseToolCalls(text: string, format: ToolCallFormat): ParsedToolCalls {
  const toolCalls: ParsedToolCall[] = [];
  const content: string[] = [];
  const opening = format.prefix === "" ? null : format.prefix.trimEnd() || format.prefix;
  let position = 0;
  let search = 0;
  while (search < text.length) {
    const start = opening === null ? findBareCall(text, search) : text.indexOf(opening, search);
    if (start < 0) break;
    const call = readCall(text, start + (opening?.length ?? 0), format);
    if (call === null) {
      search = start + 1;
      continue;
    }
    content.push(text.slice(position, start));
    toolCalls.push(call.call);
    position = call.end;
    search = call.end;
  }
  content.push(text.slice(position));
  // What sits between calls is their separator, not content.
  const kept = content.filter((segment, index) => !(index > 0 && index < content.length - 1 && segment.trim() === format.separator.trim()));
  const joined = kept.join("").trim();
  return { content: joined === "" ? null : joined, toolCalls };
}

/** The text of these calls in `format`, as the grammar writes them. */
export function formatToolCalls(calls: readonly ParsedToolCall[], format: ToolCallFormat): string {
  return calls
    .map(
      (call) =>
        `${format.prefix}${callOpening()}${JSON.stringify(call.name)}, ${JSON.stringify(format.argumentsKey)}: ${jsonText(JSON.parse(call.arguments))}}${format.suffix}`,
    )
    .join(format.separator);
}

function findBareCall(text: string, from: number): number {
  const match = /\{\s*"name"\s*:/g;
  match.lastIndex = from;
  return match.exec(text)?.index ?? -1;
}

// A call's JSON starting at (or after whitespace from) `from`, then the suffix; null if malformed.
function readCall(text: string, from: number, format: ToolCallFormat): { call: ParsedToolCall; end: number } | null {
  let start = from;
  while (start < text.length && /\s/.test(text[start])) start++;
  const end = jsonObjectEnd(text, start);
  if (end < 0) return null;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text.slice(start, end));
  } catch {
    return null;
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) return null;
  const { name } = parsed as { name?: unknown };
  const args =
    (parsed as Record<string, unknown>)[format.argumentsKey] ??
    (parsed as Record<string, unknown>).arguments ??
    (parsed as Record<string, unknown>).parameters ??
    {};
  if (typeof name !== "string" || typeof args !== "object" || args === null || Array.isArray(args)) return null;
  let after = end;
  const suffix = format.suffix.trim();
  if (suffix !== "") {
    while (after < text.length && /\s/.test(text[after])) after++;
    if (!text.startsWith(suffix, after)) return null;
    after += suffix.length;
  }
  return { call: { name, arguments: JSON.stringify(args) }, end: after };
}

// Index just past the JSON object that opens at `start`, or -1.
function jsonObjectEnd(text: string, start: number): number {
  if (text[start] !== "{") return -1;
  let depth = 0;
  let inString = false;
  for (let index = start; index < text.length; index++) {
    const character = text[index];
    if (inString) {
      if (character === "\\") index++;
      else if (character === '"') inString = false;
    } else if (character === '"') {
      inString = true;
    } else if (character === "{" || character === "[") {
      depth++;
    } else if (character === "}" || character === "]") {
      depth--;
      if (depth === 0) return index + 1;
    }
  }
  return -1;
}
