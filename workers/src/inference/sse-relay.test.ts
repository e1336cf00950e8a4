import { describe, expect, it } from "vitest";
import { parseSseData } from "../../../src/protocol/sse.ts";
import { relaySse } from "./sse-relay.ts";

const encoder = new TextEncoder();
const USAGE = { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 };
const piece = (text: string) => JSON.stringify({ object: "text_completion", choices: [{ index: 0, text, finish_reason: null }] });
const usageChunk = JSON.stringify({ object: "text_completion", choices: [], usage: USAGE });
const COMPLETE = `data: ${piece("Hel")}\n\ndata: ${piece("lo")}\n\ndata: ${usageChunk}\n\ndata: [DONE]\n\n`;

/** Relays `text` cut into chunks at `cuts` (character offsets) and returns what the client read and the outcome. */
async function relay(text: string, cuts: number[], forwardUsage = false) {
  const bytes = encoder.encode(text);
  const bounds = [0, ...cuts, bytes.length];
  const chunks = bounds.slice(1).map((end, i) => bytes.slice(bounds[i], end));
  const [first, ...rest] = chunks;
  const upstream = new ReadableStream<Uint8Array>({
    pull(controller) {
      const next = rest.shift();
      if (next === undefined) controller.close();
      else controller.enqueue(next);
    },
  }).getReader();
  const { body, finished } = relaySse(first, upstream, { forwardUsage });
  const received = await new Response(body).text();
  return { received, outcome: await finished };
}

describe("relaySse", () => {
  it("passes the events on wherever the chunks are cut, reads the usage and drops its chunk unless asked", async () => {
    for (const cuts of [[], [1], [7, 30], [COMPLETE.indexOf("\n\n") + 1], [COMPLETE.length - 2], Array.from({ length: 40 }, (_, i) => i * 5 + 3)]) {
      const { received, outcome } = await relay(COMPLETE, cuts);
      expect(parseSseData(received)).toEqual([piece("Hel"), piece("lo"), "[DONE]"]);
      expect(outcome).toEqual({ end: "completed", usage: USAGE });
    }
    const { received, outcome } = await relay(COMPLETE, [20], true);
    expect(received).toBe(COMPLETE);
    expect(outcome).toEqual({ end: "completed", usage: USAGE });
  });

  it("reads CRLF line ends and multi-line data, and keeps event names, ids and comments", async () => {
    const text = `: warming up\r\n\r\nevent: note\r\nid: 4\r\ndata: line one\r\ndata: line two\r\n\r\ndata: ${piece("x")}\r\n\r\ndata: [DONE]\r\n\r\n`;
    const { received, outcome } = await relay(text, [9, 40]);
    expect(received).toBe(`: warming up\n\nevent: note\nid: 4\ndata: line one\ndata: line two\n\ndata: ${piece("x")}\n\ndata: [DONE]\n\n`);
    expect(outcome).toEqual({ end: "completed", usage: null });
  });

  it("ends a stream cut without [DONE] with a runner_failed event, leaving out the half event", async () => {
    const cut = COMPLETE.indexOf(usageChunk) + 10;
    const { received, outcome } = await relay(COMPLETE.slice(0, cut), [12]);
    const events = parseSseData(received);
    expect(events.slice(0, 2)).toEqual([piece("Hel"), piece("lo")]);
    expect(events).toHaveLength(3);
    expect(JSON.parse(events[2])).toMatchObject({ error: { type: "server_error", code: "runner_failed" } });
    expect(received.endsWith("\n\n")).toBe(true);
    expect(outcome).toEqual({ end: "runner_failed", usage: null });
  });

  it("passes the runner's own error event on without adding another", async () => {
    const error = JSON.stringify({ error: { message: "adapter cache is full", type: "rate_limit_error", param: null, code: null } });
    const { received, outcome } = await relay(`data: ${piece("a")}\n\ndata: ${error}\n\n`, [5]);
    expect(parseSseData(received)).toEqual([piece("a"), error]);
    expect(outcome.end).toBe("runner_failed");
  });
});
