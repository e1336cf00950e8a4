/**
 * What a chat request asks of its output's shape, made concrete for generation: a grammar per
 * choice that constrains decoding (JSON, JSON valid against a schema, tool calls), and how the
 * finished text becomes the response's content and tool calls.
 */
import type { ToolCall } from "../../src/protocol/structured-output.ts";
import type { TokenConstraint } from "../generate/generate.ts";

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
