import { describe, expect, it } from "vitest";
import { StopSequenceFilter } from "./stop-sequences.ts";

function run(stops: string[], pieces: string[]): { out: string; done: boolean } {
  const filter = new StopSequenceFilter(stops);
  let out = "";
  for (const piece of pieces) out += filter.push(piece);
  if (!filter.done) out += filter.flush();
  return { out, done: filter.done };
}

describe("StopSequenceFilter", () => {
  it("cuts before a stop sequence split across pieces and sends no part of it", () => {
    const filter = new StopSequenceFilter(["END"]);
    expect(filter.push("hello E")).toBe("hello ");
    expect(filter.push("N")).toBe("");
    expect(filter.push("D and more")).toBe("");
    expect(filter.done).toBe(true);
  });

  it("releases a held prefix that turns out not to be a stop", () => {
    expect(run(["END"], ["a E", "Nx", "y"])).toEqual({ out: "a ENxy", done: false });
    expect(run(["END"], ["a EN"])).toEqual({ out: "a EN", done: false });
  });

  it("takes the earliest of several stops", () => {
    expect(run(["world", "lo"], ["hello world"])).toEqual({ out: "hel", done: true });
    expect(run(["\n\n"], ["one\n", "\ntwo"])).toEqual({ out: "one", done: true });
  });

  it("rejects an empty stop sequence", () => {
    expect(() => new StopSequenceFilter([""])).toThrow(/must not be empty/);
  });
});
