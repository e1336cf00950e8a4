/**
 * Relays a runner's SSE stream to the client as it arrives. A TransformStream reads the events
 * (eventsource-parser does the framing) only to watch for the usage chunk (which the edge always
 * asks for, to bill) and to drop it when the client did not ask, and writes each event on as soon
 * as its blank line arrives; nothing waits for more than the rest of the current event. A runner
 * that dies mid-stream ends the client's stream with an OpenAI-shaped error event.
 */
import { createParser, type EventSourceMessage, type EventSourceParser } from "eventsource-parser";
import { serverError } from "../../../src/errors.ts";
import { usageSchema, type Usage } from "../../../src/protocol/openai.ts";
import { SSE_DONE } from "../../../src/protocol/sse.ts";

/** How a relayed stream ended. */
export type RelayEnd = "completed" | "runner_failed" | "client_gone";

export interface RelayOutcome {
  end: RelayEnd;
  usage: Usage | null; // from the runner's usage chunk; null when it never came
}

export interface RelayOptions {
  forwardUsage: boolean; // the client asked for stream_options.include_usage
  clientGone?: AbortSignal; // the request's signal: fires when the client disconnects
}

/**
 * A client that has not taken a single event for this long is treated as gone. Behind some
 * proxies a disconnect neither cancels the body nor fires the request's signal, and the relay
 * would otherwise hold its lease until the limiter expires it.
 */
export const CLIENT_STALL_MS = 30_000;
const encoder = new TextEncoder();

/**
 * Streams `first` and then the rest of `upstream` to the returned body. `finished` settles once
 * the stream is over, however it ended (never rejects), with the usage the runner reported.
 */
export function relaySse(
  first: Uint8Array,
  upstream: ReadableStreamDefaultReader<Uint8Array>,
  options: RelayOptions,
): { body: ReadableStream<Uint8Array>; finished: Promise<RelayOutcome> } {
  const watcher = new UsageWatcher(options.forwardUsage);
  // Room for a few events on the way out, so reading the runner never waits on the client's round trip.
  const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>(watcher, undefined, { highWaterMark: 64 });
  const writer = writable.getWriter();
  let clientGone = false;
  // The client went away: stop reading the runner now rather than at its next token (so it frees
  // the row), and end the relay (so the lease goes back). Either the body is cancelled, which
  // errors the writable side, or only the request's signal says so (workerd behind a proxy keeps
  // the body open), in which case the writable side is aborted here.
  const leave = () => {
    clientGone = true;
    upstream.cancel().catch(() => undefined);
  };
  writer.closed.catch(leave);
  /** Whether a write (or the close) went through; false when it failed or stalled. */
  const delivered = async (write: Promise<void>): Promise<boolean> => {
    let timer: ReturnType<typeof setTimeout> | null = null;
    const stalled = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), CLIENT_STALL_MS)));
    const ok = await Promise.race([
      write.then(
        () => true,
        () => false,
      ),
      stalled,
    ]);
    if (timer !== null) clearTimeout(timer);
    if (!ok) {
      leave();
      writer.abort().catch(() => undefined);
    }
    return ok;
  };
  // A write stuck on backpressure from a body nobody reads any more may never settle, so the
  // signal ends the relay by itself rather than through the loop below.
  const abandoned = new Promise<RelayOutcome>((resolve) => {
    options.clientGone?.addEventListener(
      "abort",
      () => {
        leave();
        writer.abort().catch(() => undefined);
        resolve({ end: "client_gone", usage: watcher.usage });
      },
      { once: true },
    );
  });

  const relayed = (async (): Promise<RelayOutcome> => {
    let chunk: Uint8Array | undefined = first;
    while (chunk !== undefined) {
      if (!(await delivered(writer.write(chunk)))) return { end: "client_gone", usage: watcher.usage };
      try {
        const next = await upstream.read();
        chunk = next.done ? undefined : next.value;
      } catch {
        if (clientGone) return { end: "client_gone", usage: watcher.usage };
        return failRunner(writer, watcher, delivered);
      }
      if (clientGone) return { end: "client_gone", usage: watcher.usage }; // the cancel ended the read
    }
    // A runner that ends without `[DONE]` died or gave up; say so unless it already did.
    if (!watcher.sawDone && !watcher.sawError) return failRunner(writer, watcher, delivered);
    if (!(await delivered(writer.close()))) return { end: "client_gone", usage: watcher.usage };
    return { end: watcher.sawError ? "runner_failed" : "completed", usage: watcher.usage };
  })();
  return { body: readable, finished: Promise.race([relayed, abandoned]) };
}

/** The SSE event a client gets when the runner fails after the stream began. */
export function runnerFailedEvent(): Uint8Array {
  const error = serverError("The runner serving this request failed while streaming; the response is incomplete.", "runner_failed");
  return encoder.encode(`data: ${JSON.stringify(error.toBody())}\n\n`);
}

async function failRunner(
  writer: WritableStreamDefaultWriter<Uint8Array>,
  watcher: UsageWatcher,
  delivered: (write: Promise<void>) => Promise<boolean>,
): Promise<RelayOutcome> {
  watcher.discardPending(); // half an event is not JSON a client could read
  const told = (await delivered(writer.write(runnerFailedEvent()))) && (await delivered(writer.close()));
  return { end: told ? "runner_failed" : "client_gone", usage: watcher.usage };
}

/** Passes events through while reading the ones that matter: usage, `[DONE]`, errors. */
class UsageWatcher implements Transformer<Uint8Array, Uint8Array> {
  usage: Usage | null = null;
  sawDone = false;
  sawError = false;
  private readonly decoder = new TextDecoder();
  private readonly parser: EventSourceParser;
  private out = ""; // the events of the chunk being read that go on to the client

  constructor(private readonly forwardUsage: boolean) {
    this.parser = createParser({
      onEvent: (event) => {
        if (this.read(event.data) || this.forwardUsage) this.out += serializeEvent(event);
      },
      // Comments (keep-alives) go on, so that proxies between the edge and the client still see traffic.
      onComment: (comment) => {
        this.out += `: ${comment}\n\n`;
      },
    });
  }

  transform(chunk: Uint8Array, controller: TransformStreamDefaultController<Uint8Array>): void {
    this.parser.feed(this.decoder.decode(chunk, { stream: true }));
    if (this.out === "") return;
    controller.enqueue(encoder.encode(this.out));
    this.out = "";
  }

  /** Forgets the unfinished event: half an event is not one a client could read. */
  discardPending(): void {
    this.parser.reset();
    this.decoder.decode(); // resets a half-decoded character too
  }

  /** Notes what the event says; false for the usage chunk (forwarded only when asked for). */
  private read(data: string): boolean {
    if (data === SSE_DONE) {
      this.sawDone = true;
      return true;
    }
    if (data.startsWith('{"error"')) this.sawError = true;
    // Cheap test first: only the usage chunk carries a `"usage":{` object.
    if (!data.includes('"usage":{')) return true;
    try {
      const parsed = JSON.parse(data) as { choices?: unknown[]; usage?: unknown };
      const usage = usageSchema.safeParse(parsed.usage);
      if (!usage.success) return true;
      this.usage = usage.data;
      return !(Array.isArray(parsed.choices) && parsed.choices.length === 0);
    } catch {
      return true;
    }
  }
}

/** An event as SSE text again: one `data:` line per line of its data. */
function serializeEvent(event: EventSourceMessage): string {
  let text = "";
  if (event.event !== undefined) text += `event: ${event.event}\n`;
  if (event.id !== undefined) text += `id: ${event.id}\n`;
  return `${text}data: ${event.data.replaceAll("\n", "\ndata: ")}\n\n`;
}
