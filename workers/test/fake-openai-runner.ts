/**
 * A scripted OpenAI-compatible runner for edge tests: answers /v1/chat/completions and
 * /v1/completions the way gpu-runner/server/app.ts does (SSE chunks, a usage chunk only when
 * asked, `[DONE]`), records what it was sent, and can be told to fail in the ways that matter to
 * the edge: refuse to connect, answer 5xx or 4xx, die mid-stream, or hold a chunk back. Like a
 * runner with a secret, it refuses (401) any request without the edge's runner secret, so every
 * test that gets an answer through it proves the edge sent the secret.
 */
import { env } from "cloudflare:test";
import { PEFT_PATHS } from "../../src/protocol/runner.ts";
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

/** Tokens every fake completion streams, and the usage it reports. */
export const FAKE_PIECES = ["Hel", "lo", "!"];
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
    const chat = path === "/v1/chat/completions";
    const id = `${chat ? "chatcmpl" : "cmpl"}-${this.origin}`;
    const header = { id, object: chat ? "chat.completion.chunk" : "text_completion", created: 1, model: body.model };
    if (body.stream !== true) {
      const text = FAKE_PIECES.join("");
      const choice = chat ? { index: 0, message: { role: "assistant", content: text }, finish_reason: "stop" } : { index: 0, text, finish_reason: "stop" };
      return Response.json({ ...header, object: chat ? "chat.completion" : "text_completion", choices: [choice], usage: FAKE_USAGE });
    }
    const piece = (text: string | null, reason: string | null) =>
      chat
        ? { ...header, choices: [{ index: 0, delta: text === null ? {} : { content: text }, finish_reason: reason }] }
        : { ...header, choices: [{ index: 0, text: text ?? "", finish_reason: reason }] };
    const events: unknown[] = FAKE_PIECES.map((text) => piece(text, null));
    events.push(piece(null, "stop"));
    if ((body.stream_options as { include_usage?: boolean } | undefined)?.include_usage === true) events.push({ ...header, choices: [], usage: FAKE_USAGE });
    const encoder = new TextEncoder();
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
