/**
 * What a chat request asks of its output's shape, made concrete for generation: a grammar per
 * choice that constrains decoding (any JSON object, JSON valid against a schema, tool calls), and
 * how the finished text becomes the response's content and tool calls.
 */
import { badRequest } from "../../src/errors.ts";
import type { ChatCompletionRequest } from "../../src/protocol/openai.ts";
import type { ToolCall } from "../../src/protocol/structured-output.ts";
import type { TokenConstraint } from "../generate/generate.ts";
import {
  type CompiledGrammar,
  GrammarCompiler,
  parseToolCalls,
  type ToolCallFormat,
  toolCallFormatFor,
  UnsupportedSchemaError,
} from "../generate/grammar/index.ts";
import type { TextTokenizer } from "../tokenizer/tokenizer.ts";

export interface OutputShape {
  /** A fresh constraint for one choice, or null when the output is free text. */
  constraint(): TokenConstraint | null;
  /** Splits a choice's finished text into the message's content and its tool calls. */
  finish(text: string): { content: string | null; toolCalls: ToolCall[] };
  /** A stream writes the text only at the end, once tool calls can be told apart from content. */
  holdsText: boolean;
}

/** Free text: no constraint, the text is the content. */
export const FREE_TEXT: OutputShape = {
  constraint: () => null,
  finish: (text) => ({ content: text, toolCalls: [] }),
  holdsText: false,
};

/** The output shapes of one model's requests: its grammar compiler (made on first use) and its tool-call format. */
export class OutputShapes {
  /** How this model writes a tool call: its chat template's format, or the default one. */
  readonly toolFormat: ToolCallFormat;
  private compiler: Promise<GrammarCompiler> | null = null;

  constructor(private readonly tokenizer: TextTokenizer) {
    this.toolFormat = toolCallFormatFor(tokenizer.chatTemplate);
  }

  /** The shape a chat request asks for; a schema the grammar cannot honour is a 400 naming it. */
  async forChat(request: ChatCompletionRequest): Promise<OutputShape> {
    const tools = request.tool_choice === "none" ? [] : request.tools;
    const format = request.response_format;
    if (format.type === "text" && tools.length === 0) return FREE_TEXT;
    if (this.compiler === null) {
      this.compiler = GrammarCompiler.create(this.tokenizer);
      this.compiler.catch(() => (this.compiler = null)); // a failed load is retried by the next request
    }
    const compiler = await this.compiler;
    let grammar: CompiledGrammar;
    try {
      if (tools.length > 0 && request.tool_choice !== "none") {
        grammar = await compiler.toolCalls(tools, request.tool_choice, this.toolFormat, { parallelToolCalls: request.parallel_tool_calls });
      } else if (format.type === "json_schema") grammar = await compiler.jsonSchema(format.schema, { strict: format.strict });
      else grammar = await compiler.jsonObject();
    } catch (error) {
      if (!(error instanceof UnsupportedSchemaError)) throw error;
      const tool = tools.findIndex((candidate) => error.subject?.includes(`"${candidate.name}"`));
      const param = tools.length === 0 ? "response_format.json_schema.schema" : `tools[${Math.max(tool, 0)}].function.parameters`;
      throw badRequest(`The schema cannot be enforced: ${error.message}`, param, "unsupported_schema");
    }
    if (tools.length === 0) return { constraint: () => grammar.createConstraint(), finish: FREE_TEXT.finish, holdsText: false };
    return {
      constraint: () => grammar.createConstraint(),
      finish: (text) => {
        const parsed = parseToolCalls(text, this.toolFormat);
        const toolCalls = parsed.toolCalls.map((call) => ({ id: toolCallId(), type: "function" as const, function: call }));
        return { content: parsed.content, toolCalls };
      },
      holdsText: true,
    };
  }
}

/** OpenAI-style call ids: `call_` and 24 random characters. */
function toolCallId(): string {
  return `call_${crypto.randomUUID().replaceAll("-", "").slice(0, 24)}`;
}
