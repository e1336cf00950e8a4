import { describe, expect, it } from "vitest";
import { PicaApiError, PicaClient } from "./pica-client.ts";

/** A client whose fetch answers with `events` as an SSE body, cut into chunks of `chunkSize` bytes, and records what it was sent. */
function streamingClient(events: string, chunkSize = 7) {
  const sent: { url: string; body: unknown }[] = [];
  const fetch = (async (url: string, init: RequestInit) => {
    sent.push({ url, body: JSON.parse(init.body as string) });
    const bytes = new TextEncoder().encode(events);
    let offset = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (offset >= bytes.length) return controller.close();
        controller.enqueue(bytes.slice(offset, offset + chunkSize));
        offset += chunkSize;
      },
    });
    return new Response(body, { headers: { "content-type": "text/event-stream" } });
  }) as typeof globalThis.fetch;
  return { client: new PicaClient({ baseUrl: "http://edge.test", apiKey: "sk-test", fetch }), sent };
}

async function collect(pieces: AsyncIterable<string>): Promise<string[]> {
  const out: string[] = [];
  for await (const piece of pieces) out.push(piece);
  return out;
}

const delta = (content: string) => `data: ${JSON.stringify({ choices: [{ index: 0, delta: { content }, finish_reason: null }] })}\n\n`;
const text = (piece: string) => `data: ${JSON.stringify({ choices: [{ index: 0, text: piece, finish_reason: null }] })}\n\n`;

describe("PicaClient streams", () => {
  it("yields a chat completion's pieces however the body is cut, and stops at [DONE]", async () => {
    const events = `${delta("Hel")}${delta("lo, ")}${delta("wörld")}data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n`;
    for (const chunkSize of [1, 3, 7, 1000]) {
      const { client, sent } = streamingClient(events, chunkSize);
      expect(await collect(client.chat("ft:m", [{ role: "user", content: "hi" }], { max_tokens: 4 }))).toEqual(["Hel", "lo, ", "wörld"]);
      expect(sent).toEqual([
        { url: "http://edge.test/v1/chat/completions", body: { model: "ft:m", messages: [{ role: "user", content: "hi" }], max_tokens: 4, stream: true } },
      ]);
    }
  });

  it("yields a text completion's pieces from CRLF-framed events", async () => {
    const { client } = streamingClient(`${text("Once")}${text(" upon")}data: [DONE]\n\n`.replaceAll("\n", "\r\n"));
    expect(await collect(client.complete("base", "Ada"))).toEqual(["Once", " upon"]);
  });

  it("throws the stream's error event as a PicaApiError after the pieces before it", async () => {
    const error = { message: "The runner serving this request failed", type: "server_error", param: null, code: "runner_failed" };
    const { client } = streamingClient(`${text("a")}data: ${JSON.stringify({ error })}\n\n`);
    const seen: string[] = [];
    const failure = await (async () => {
      for await (const piece of client.complete("base", "x")) seen.push(piece);
    })().then(
      () => null,
      (thrown: unknown) => thrown,
    );
    expect(seen).toEqual(["a"]);
    expect(failure).toBeInstanceOf(PicaApiError);
    expect(failure).toMatchObject({ status: 500, body: error, message: error.message });
  });
});
