import { describe, expect, it } from "vitest";
import { parseSseData, readSseData, readSseJson, SSE_DONE } from "./sse.ts";

/** A body that sends `pieces` as separate chunks, then ends (or, `open`, stays open like a runner still generating). */
function chunked(pieces: string[], open = false): { body: ReadableStream<Uint8Array>; cancelled: Promise<void> } {
  const encoder = new TextEncoder();
  let sent = 0;
  let markCancelled = () => {};
  const cancelled = new Promise<void>((resolve) => (markCancelled = resolve));
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (sent < pieces.length) controller.enqueue(encoder.encode(pieces[sent++]));
      else if (!open) controller.close();
      else return new Promise<void>(() => {}); // nothing more, ever
    },
    cancel: markCancelled,
  });
  return { body, cancelled };
}

async function collect<T>(items: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of items) out.push(item);
  return out;
}

describe("readSseData", () => {
  it("joins events split across chunks, anywhere, and keeps [DONE]", async () => {
    const stream = 'data: {"a":1}\n\ndata: {"b":"x y"}\n\ndata: [DONE]\n\n';
    for (const cut of [1, 5, 12, 15, 20, stream.length - 3]) {
      const { body } = chunked([stream.slice(0, cut), stream.slice(cut)]);
      expect(await collect(readSseData(body))).toEqual(['{"a":1}', '{"b":"x y"}', SSE_DONE]);
    }
  });

  it("reads CRLF line ends, multi-line data, a missing space after the colon and skips comments", async () => {
    const { body } = chunked(["data:one\r\n\r\n: keep-alive\n\ndata: two\ndata: lines\n\nevent: x\nid: 7\ndata: three\n\n"]);
    expect(await collect(readSseData(body))).toEqual(["one", "two\nlines", "three"]);
  });

  it("splits a multi-byte character cut between chunks correctly", async () => {
    const bytes = new TextEncoder().encode('data: {"t":"é"}\n\n');
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent === 2) return controller.close();
        controller.enqueue(sent === 0 ? bytes.slice(0, 13) : bytes.slice(13)); // "é" is bytes 12–13
        sent++;
      },
    });
    expect(await collect(readSseData(body))).toEqual(['{"t":"é"}']);
  });

  it("leaves out an unfinished last event: a cut stream shows no [DONE]", async () => {
    const { body } = chunked(['data: {"a":1}\n\n', "data: [DO"]);
    expect(await collect(readSseData(body))).toEqual(['{"a":1}']);
  });

  it("cancels the body when the reader stops early", async () => {
    const { body, cancelled } = chunked(["data: 1\n\n", "data: 2\n\n"], true);
    for await (const data of readSseData(body)) if (data === "1") break;
    await cancelled; // the test times out when the cancel never reaches the body
  });

  it("passes on an error of the body", async () => {
    let sent = false;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent) return controller.error(new Error("connection reset"));
        controller.enqueue(new TextEncoder().encode("data: 1\n\n"));
        sent = true;
      },
    });
    const seen: string[] = [];
    await expect(
      (async () => {
        for await (const data of readSseData(body)) seen.push(data);
      })(),
    ).rejects.toThrow("connection reset");
    expect(seen).toEqual(["1"]);
  });
});

describe("readSseJson", () => {
  it("parses each event up to [DONE], error events included, and stops reading there", async () => {
    const { body, cancelled } = chunked(
      ['data: {"choices":[{"text":"a"}]}\n\n', 'data: {"error":{"message":"m","type":"server_error"}}\n\n', "data: [DONE]\n\n", "data: not json\n\n"],
      true,
    );
    expect(await collect(readSseJson(body))).toEqual([{ choices: [{ text: "a" }] }, { error: { message: "m", type: "server_error" } }]);
    await cancelled;
  });

  it("throws on an event that is not JSON", async () => {
    const { body } = chunked(["data: {oops\n\n"]);
    await expect(collect(readSseJson(body))).rejects.toThrow(SyntaxError);
  });
});

describe("parseSseData", () => {
  it("reads a whole body, [DONE] included, without an unfinished last event", () => {
    expect(parseSseData('data: {"a":1}\r\n\r\ndata: [DONE]\n\n')).toEqual(['{"a":1}', SSE_DONE]);
    expect(parseSseData("data: 1\n\ndata: 2")).toEqual(["1"]);
    expect(parseSseData("")).toEqual([]);
  });
});
