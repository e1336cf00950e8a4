/**
 * Reading the API's server-sent events: OpenAI's streams are `data: <json>` events ending with
 * `data: [DONE]`, and an OpenAI-shaped `{"error": …}` event when a stream fails after it began.
 * eventsource-parser does the framing (events split across chunks, CRLF, multi-line data,
 * comments, a byte-order mark), so every reader of a stream — the client, the CLI, the benches,
 * the tests — agrees on what an event is.
 */
import { createParser } from "eventsource-parser";
import { EventSourceParserStream } from "eventsource-parser/stream";

/** The data of the event that ends a completed stream. */
export const SSE_DONE = "[DONE]";

/**
 * Each event's data as it arrives, `[DONE]` included, so that a caller can tell a stream that
 * finished from one that was cut. Stopping early cancels the body (the connection is freed).
 */
export async function* readSseData(body: ReadableStream<Uint8Array>): AsyncGenerator<string, void, undefined> {
  // DOM's lib types TextDecoderStream's input as BufferSource, Node's as Uint8Array: the same bytes.
  const decoder = new TextDecoderStream() as unknown as TransformStream<Uint8Array, string>;
  const reader = body.pipeThrough(decoder).pipeThrough(new EventSourceParserStream()).getReader();
  let finished = false;
  try {
    for (let next = await reader.read(); !next.done; next = await reader.read()) yield next.value.data;
    finished = true;
  } finally {
    if (!finished) await reader.cancel().catch(() => undefined);
  }
}

/** Each event's data parsed as JSON, up to `[DONE]` (error events included: the caller decides what they mean). */
export async function* readSseJson(body: ReadableStream<Uint8Array>): AsyncGenerator<unknown, void, undefined> {
  for await (const data of readSseData(body)) {
    if (data === SSE_DONE) return;
    yield JSON.parse(data);
  }
}

/** The data of every complete event in a whole SSE body, `[DONE]` included (an unfinished last event is left out). */
export function parseSseData(text: string): string[] {
  const data: string[] = [];
  const parser = createParser({ onEvent: (event) => data.push(event.data) });
  parser.feed(text);
  return data;
}
