/**
 * A scripted OpenAI-compatible runner for edge tests: answers /v1/chat/completions and
 * /v1/completions the way gpu-runner/server/app.ts does (SSE chunks, a usage chunk only when
 * asked, `[DONE]`), its bodies typed by the protocol's response types the real runner's
 * completion-bodies.ts returns (`refusal: null`, `logprobs` objects when asked, a tool call with
 * finish_reason `tool_calls` when a request makes the model call one), records what it was sent, and can be told to fail in the ways that matter to
 * the edge: refuse to connect, answer 5xx or 4xx, die mid-stream, or hold a chunk back. Like a
 * runner with a secret, it refuses (401) any request without the edge's runner secret, so every
 * test that gets an answer through it proves the edge sent the secret.
 */
import { env } from "cloudflare:test";
import type { ChatTokenLogprob, CompletionLogprobs } from "../../src/protocol/logprobs.ts";
import type { ChatCompletion, ChatCompletionChunk, FinishReason, TextCompletion } from "../../src/protocol/openai.ts";
import { PEFT_PATHS, RUNNER_PATHS } from "../../src/protocol/runner.ts";
import type { ToolCall } from "../../src/protocol/structured-output.ts";
import { type RunnerHandler, withoutRunnerSecret } from "./fake-runners.ts";

export type Behaviour =
  | { kind: "ok" }
  | { kind: "network_error" } // fetch itself rejects
  | { kind: "status"; status: number; body?: unknown; headers?: Record<string, string> }
  | { kind: "die_after_first_chunk" } // the body errors after the first event
  | { kind: "close_after"; events: number } // the body ends cleanly after this many events (0: before any byte)
  | { kind: "hold_second_chunk"; release: Promise<void> }; // waits before the second event

export interface ReceivedRequest {
  path: string;
  body: Record<string, unknown>;
}

/** Tokens every fake completion streams (none a part of a chunk's keys, so a test can tell which have arrived), and the usage it reports. */
export const FAKE_PIECES = ["Hel", "p me", "!"];
export const FAKE_USAGE = { prompt_tokens: 7, completion_tokens: FAKE_PIECES.length, total_tokens: 7 + FAKE_PIECES.length };

export class FakeOpenAiRunner {
  readonly received: ReceivedRequest[] = [];
  cancelledStreams = 0; // streams the edge stopped reading (the client went away)
  refusedSecrets = 0; // requests without the right runner secret
  secret: string = env.RUNNER_SECRET; // the secret this runner was started with
  behaviour: Behaviour = { kind: "ok" };

  constructor(readonly origin: string) {}

  /** The handler to pass to installFakeRunners. */
  readonly handler: RunnerHandler = async (request) => {
    const path = new URL(request.url).pathname;
    const refused = withoutRunnerSecret(request, this.secret);
    if (refused !== null) {
      this.refusedSecrets++;
      await request.body?.cancel();
      return refused;
    }
    if (path === PEFT_PATHS.import || path === PEFT_PATHS.export) {
      // Converts nothing: refuses every adapter the way a runner refuses one it cannot read.
      await request.body?.cancel();
      return Response.json(
        {
          error: {
            message: "adapter_model: not a PEFT adapter this runner can read",
            type: "invalid_request_error",
            param: "adapter_model",
            code: "invalid_peft_adapter",
          },
        },
        { status: 400 },
      );
    }
    const body = (await request.json()) as Record<string, unknown>;
    this.received.push({ path, body });
    const behaviour = this.behaviour;
    if (behaviour.kind === "network_error") throw new TypeError(`connection refused by ${this.origin}`);
    if (behaviour.kind === "status") {
      return Response.json(behaviour.body ?? { error: { message: "boom", type: "server_error", param: null, code: null } }, {
        status: behaviour.status,
        headers: behaviour.headers,
      });
    }
    const events = completionEvents(path, body, this.origin);
    if (!Array.isArray(events)) return Response.json(events);
    const lines = [...events.map((event) => `data: ${JSON.stringify(event)}\n\n`), "data: [DONE]\n\n"];
    let sent = 0;
    const stream = new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (sent === 1 && behaviour.kind === "die_after_first_chunk") {
          controller.error(new Error("runner process died"));
          return;
        }
        if (sent === 1 && behaviour.kind === "hold_second_chunk") await behaviour.release;
        if (behaviour.kind === "close_after" && sent === behaviour.events) {
          controller.close();
          return;
        }
        if (sent === lines.length) {
          controller.close();
          return;
        }
        controller.enqueue(encoder.encode(lines[sent++]));
      },
      cancel: () => {
        this.cancelledStreams++;
      },
    });
    return new Response(stream, { headers: { "content-type": "text/event-stream" } });
  };

  /** How many completion requests reached this runner. */
  get hits(): number {
    return this.received.length;
  }
}

const encoder = new TextEncoder();

/**
 * The body of a non-streamed completion, or the events of a streamed one: the text FAKE_PIECES,
 * one piece per event, then the finish and, when asked, the usage. A chat request with
 * `tool_choice` "required" or a named function gets a call of that (or the first) tool instead.
 */
function completionEvents(
  path: string,
  body: Record<string, unknown>,
  origin: string,
): ChatCompletion | TextCompletion | (ChatCompletionChunk | TextCompletion)[] {
  const chat = path === RUNNER_PATHS.chatCompletions;
  const header = { id: `${chat ? "chatcmpl" : "cmpl"}-${origin}`, created: 1, model: String(body.model) };
  const includeUsage = (body.stream_options as { include_usage?: boolean } | undefined)?.include_usage === true;
  if (!chat) {
    const alternatives = typeof body.logprobs === "number" ? body.logprobs : null;
    const piece = (text: string, offset: number, reason: FinishReason | null): TextCompletion["choices"][number] => ({
      index: 0,
      text,
      finish_reason: reason,
      logprobs: alternatives === null ? null : completionLogprobs(text === "" ? [] : [text], offset),
    });
    if (body.stream !== true) {
      const text = FAKE_PIECES.join("");
      const choice = { ...piece(text, 0, "stop"), logprobs: alternatives === null ? null : completionLogprobs(FAKE_PIECES, 0) };
      return { ...header, object: "text_completion", choices: [choice], usage: FAKE_USAGE } satisfies TextCompletion;
    }
    const offsets = FAKE_PIECES.map((_, index) => FAKE_PIECES.slice(0, index).join("").length);
    const events: TextCompletion[] = FAKE_PIECES.map((text, index) => ({ ...header, object: "text_completion", choices: [piece(text, offsets[index], null)] }));
    events.push({ ...header, object: "text_completion", choices: [piece("", FAKE_PIECES.join("").length, "stop")] });
    if (includeUsage) events.push({ ...header, object: "text_completion", choices: [], usage: FAKE_USAGE });
    return events;
  }

  const logprobs = body.logprobs === true ? { alternatives: typeof body.top_logprobs === "number" ? body.top_logprobs : 0 } : null;
  const call = toolCall(body);
  const reason: FinishReason = call === null ? "stop" : "tool_calls";
  const tokenLogprobs = (pieces: string[]) => (logprobs === null ? null : { content: chatLogprobs(pieces, logprobs.alternatives), refusal: null });
  if (body.stream !== true) {
    const message: ChatCompletion["choices"][number]["message"] =
      call === null
        ? { role: "assistant", content: FAKE_PIECES.join(""), refusal: null }
        : { role: "assistant", content: null, refusal: null, tool_calls: [call] };
    const choice = { index: 0, message, finish_reason: reason, logprobs: tokenLogprobs(call === null ? FAKE_PIECES : []) };
    return { ...header, object: "chat.completion", choices: [choice], usage: FAKE_USAGE } satisfies ChatCompletion;
  }
  const chunk = (delta: ChatCompletionChunk["choices"][number]["delta"], finish: FinishReason | null, pieces: string[] | null): ChatCompletionChunk => ({
    ...header,
    object: "chat.completion.chunk",
    choices: [{ index: 0, delta, finish_reason: finish, logprobs: pieces === null ? null : tokenLogprobs(pieces) }],
  });
  const events: ChatCompletionChunk[] =
    call === null ? FAKE_PIECES.map((text) => chunk({ content: text }, null, [text])) : [chunk({ tool_calls: [{ index: 0, ...call }] }, null, null)];
  events.push(chunk({}, reason, null));
  if (includeUsage) events.push({ ...header, object: "chat.completion.chunk", choices: [], usage: FAKE_USAGE });
  return events;
}

/** The call a chat request makes the model answer with, or null when it may answer in text. */
function toolCall(body: Record<string, unknown>): ToolCall | null {
  const tools = (body.tools ?? []) as { function: { name: string } }[];
  const choice = body.tool_choice as string | { function: { name: string } } | undefined;
  if (tools.length === 0 || choice === undefined || choice === "none" || choice === "auto") return null;
  const name = typeof choice === "object" ? choice.function.name : tools[0].function.name;
  return { id: "call_fake0000000000000000000", type: "function", function: { name, arguments: "{}" } };
}

// Every piece is one token with log-probability -0.5; its alternatives are single letters, likelier first.
function chatLogprobs(pieces: string[], alternatives: number): ChatTokenLogprob[] {
  return pieces.map((token) => ({
    token,
    logprob: -0.5,
    bytes: [...encoder.encode(token)],
    top_logprobs: Array.from({ length: alternatives }, (_, rank) => {
      const other = String.fromCharCode(97 + rank);
      return { token: other, logprob: -1 - rank, bytes: [...encoder.encode(other)] };
    }),
  }));
}

function completionLogprobs(pieces: string[], offset: number): CompletionLogprobs {
  const text_offset = pieces.map((_, index) => offset + pieces.slice(0, index).join("").length);
  return { tokens: pieces, token_logprobs: pieces.map(() => -0.5), top_logprobs: pieces.map((token) => ({ [token]: -0.5 })), text_offset };
}
