/**
 * The Workers project's filter of workerd's benign disconnect line (test/workerd-log-filter.ts):
 * exactly that line is dropped, on stdout and stderr, and everything else, the same exception with
 * a stack or other workerd errors included, is written as it came.
 */
import { PassThrough } from "node:stream";
import { describe, expect, it } from "vitest";
import { filterWrites, isBenignWorkerdLine } from "./workerd-log-filter.ts";

const BENIGN = "exception = workerd/api/web-socket.c++:821: disconnected: WebSocket peer disconnected\n";

describe("the workerd log filter", () => {
  it("knows the benign line, at any source line, as text or bytes, and nothing else", () => {
    expect(isBenignWorkerdLine(BENIGN)).toBe(true);
    expect(isBenignWorkerdLine(BENIGN.replace("821", "1034"))).toBe(true);
    expect(isBenignWorkerdLine(new TextEncoder().encode(BENIGN))).toBe(true);
    for (const other of [
      `${BENIGN}stack: /work/main/node_modules/@cloudflare/workerd-linux-64/bin/workerd@51f50be\n`,
      `${BENIGN}${BENIGN}`,
      "e = kj/async-io-unix.c++:1298: failed: DNS lookup failed.; params.host = runner-a.test\n",
      "exception = workerd/api/web-socket.c++:821: disconnected: WebSocket was aborted\n",
      "Error: WebSocket peer disconnected\n",
      "",
    ]) {
      expect(isBenignWorkerdLine(other), other).toBe(false);
    }
    expect(isBenignWorkerdLine(undefined)).toBe(false);
  });

  it("drops that write (calling its callback) and passes every other one through unchanged", () => {
    const stream = new PassThrough() as unknown as NodeJS.WriteStream;
    const written: string[] = [];
    (stream as unknown as PassThrough).on("data", (chunk: Buffer) => written.push(chunk.toString()));
    filterWrites(stream);
    let calledBack = 0;
    expect(stream.write(BENIGN, () => calledBack++)).toBe(true);
    stream.write("a real error\n");
    stream.write(Buffer.from(`${BENIGN}stack: 0x1 0x2\n`));
    expect(calledBack).toBe(1);
    expect(written).toEqual(["a real error\n", `${BENIGN}stack: 0x1 0x2\n`]);
  });
});
