/**
 * Grammar-constrained decoding: structured output (`response_format` json_object / json_schema)
 * and tool calls, for any tokenizer, on xgrammar's WebAssembly build. The sampler holds one
 * TokenConstraint per constrained sequence, calls mask() before drawing and accept() after.
 */
export { CompiledGrammar, COMPILED_GRAMMAR_CACHE_SIZE, GrammarCompiler } from "./compiler.ts";
export type { SchemaGrammarOptions } from "./json-schema-grammar.ts";
export type { TokenConstraint } from "./token-constraint.ts";
export {
  DEFAULT_TOOL_CALLS,
  type FunctionTool,
  formatToolCalls,
  HERMES_TOOL_CALLS,
  LLAMA3_JSON_TOOL_CALLS,
  type ParsedToolCall,
  type ParsedToolCalls,
  parseToolCalls,
  type ToolCallFormat,
  type ToolCallOptions,
  type ToolChoice,
  toolCallFormatFor,
} from "./tool-calls.ts";
export { UnsupportedSchemaError } from "./unsupported-schema-error.ts";
