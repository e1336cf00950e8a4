/**
 * The bodies the runner answers completions with, in OpenAI's shapes (the schemas of
 * src/protocol/openai.ts): whole responses, streamed chunks, and the log-probabilities of each
 * generated token, for chat (a list of tokens) and for legacy completions (parallel arrays).
 */
import type { ChatTokenLogprob, CompletionLogprobs } from "../../src/protocol/logprobs.ts";
import type { ChatCompletion, ChatCompletionChunk, FinishReason, TextCompletion, Usage } from "../../src/protocol/openai.ts";
import type { ToolCall } from "../../src/protocol/structured-output.ts";
import type { TokenLogprob } from "../generate/logprobs.ts";
import type { TokenBytes } from "../tokenizer/token-bytes.ts";

/** A generated token as the response reports it: its id, the text it released, its log-probability. */
export interface GeneratedToken {
  id: number;
  text: string;
  logprob: TokenLogprob | undefined;
}

/** What every body of one response shares. */
export interface ResponseHeader {
  id: string;
  created: number;
  model: string;
}

/** One finished choice, ready to be written out. */
export interface FinishedChoice {
  content: string | null;
  toolCalls: ToolCall[];
  reason: FinishReason;
  tokens: GeneratedToken[];
}

/** Chat's per-token log-probabilities. */
export function chatLogprobs(tokens: readonly GeneratedToken[], bytes: TokenBytes): ChatTokenLogprob[] {
  return tokens.map((token) => {
    const own = bytes.of(token.id);
    return {
      token: own.text,
      logprob: token.logprob!.logprob,
      bytes: own.bytes,
      top_logprobs: token.logprob!.top.map((other) => {
        const spelled = bytes.of(other.id);
        return { token: spelled.text, logprob: other.logprob, bytes: spelled.bytes };
      }),
    };
  });
}

/**
 * Legacy completions' log-probabilities; `offset` is where the first token's text starts in the
 * choice's text. As OpenAI does, each position's alternatives include the sampled token.
 */
export function completionLogprobs(tokens: readonly GeneratedToken[], bytes: TokenBytes, offset: number): CompletionLogprobs {
  const result: CompletionLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
  let start = offset;
  for (const token of tokens) {
    const text = bytes.of(token.id).text;
    const alternatives: Record<string, number> = {};
    for (const other of token.logprob!.top) alternatives[bytes.of(other.id).text] ??= other.logprob;
    alternatives[text] ??= token.logprob!.logprob;
    result.tokens.push(text);
    result.token_logprobs.push(token.logprob!.logprob);
    result.top_logprobs!.push(alternatives);
    // Text a token completes is released with it, after what earlier tokens left pending (the
    // rest of a character): the token's own text ends where its release ends.
    offset += token.text.length;
    start = Math.max(start, offset - text.length);
    result.text_offset.push(start);
  }
  return result;
}

/** The body of a non-streamed chat completion. */
export function chatCompletionBody(header: ResponseHeader, choices: FinishedChoice[], usage: Usage, bytes: TokenBytes | null): ChatCompletion {
  return {
    ...header,
    object: "chat.completion",
    choices: choices.map((choice, index) => ({
      index,
      message: {
        role: "assistant",
        content: choice.content,
        refusal: null,
        ...(choice.toolCalls.length > 0 ? { tool_calls: choice.toolCalls } : {}),
      },
      finish_reason: choice.reason,
      logprobs: bytes === null ? null : { content: chatLogprobs(choice.tokens, bytes), refusal: null },
    })),
    usage,
  };
}

/** The body of a non-streamed legacy completion; `echo` is each choice's prompt when it is echoed. */
export function textCompletionBody(
  header: ResponseHeader,
  choices: FinishedChoice[],
  echo: readonly string[],
  usage: Usage,
  bytes: TokenBytes | null,
): TextCompletion {
  return {
    ...header,
    object: "text_completion",
    choices: choices.map((choice, index) => ({
      index,
      text: echo[index] + (choice.content ?? ""),
      finish_reason: choice.reason,
      logprobs: bytes === null ? null : completionLogprobs(choice.tokens, bytes, echo[index].length),
    })),
    usage,
  };
}

/** A streamed chat chunk carrying one choice's delta (text, tool calls, or the role) and its tokens' log-probabilities. */
export function chatChunk(
  header: ResponseHeader,
  index: number,
  delta: ChatCompletionChunk["choices"][number]["delta"],
  reason: FinishReason | null,
  tokens: readonly GeneratedToken[] | null,
  bytes: TokenBytes | null,
): ChatCompletionChunk {
  const logprobs = bytes === null || tokens === null ? null : { content: chatLogprobs(tokens, bytes), refusal: null };
  return { ...header, object: "chat.completion.chunk", choices: [{ index, delta, finish_reason: reason, logprobs }] };
}

/** A streamed legacy completion chunk; `offset` is where `text` starts in the choice's text. */
export function textChunk(
  header: ResponseHeader,
  index: number,
  text: string,
  reason: FinishReason | null,
  tokens: readonly GeneratedToken[] | null,
  bytes: TokenBytes | null,
  offset: number,
): TextCompletion {
  const logprobs = bytes === null || tokens === null ? null : completionLogprobs(tokens, bytes, offset);
  return { ...header, object: "text_completion", choices: [{ index, text, finish_reason: reason, logprobs }] };
}

/** The last chunk of a stream that asked for usage: no choices, only the counts. */
export function usageChunk(header: ResponseHeader, kind: "chat" | "text", usage: Usage): ChatCompletionChunk | TextCompletion {
  return kind === "chat" ? { ...header, object: "chat.completion.chunk", choices: [], usage } : { ...header, object: "text_completion", choices: [], usage };
}
