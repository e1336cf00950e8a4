import { describe, expect, it } from "vitest";
import { rankByRendezvous } from "./rendezvous.ts";

const nodes = ["http://r1.test", "http://r2.test", "http://r3.test", "http://r4.test", "http://r5.test"];
const keys = Array.from({ length: 2000 }, (_, i) => `ft:pica-base-4m:tenant_x::job${i}`);
const owner = (key: string, among: string[]) => rankByRendezvous(key, among, (n) => n)[0];

describe("rendezvous hashing", () => {
  it("is stable: the same key always ranks the runners the same way, whatever their order", () => {
    for (const key of keys.slice(0, 50)) {
      expect(rankByRendezvous(key, [...nodes].reverse(), (n) => n)).toEqual(rankByRendezvous(key, nodes, (n) => n));
    }
  });

  it("spreads keys evenly", () => {
    const counts = new Map<string, number>();
    for (const key of keys) counts.set(owner(key, nodes), (counts.get(owner(key, nodes)) ?? 0) + 1);
    expect(counts.size).toBe(nodes.length);
    for (const count of counts.values()) expect(Math.abs(count - keys.length / nodes.length)).toBeLessThan(keys.length / nodes.length / 4);
  });

  it("moves only the leaving runner's keys, each to its own second choice", () => {
    const leaving = nodes[2];
    const remaining = nodes.filter((n) => n !== leaving);
    let moved = 0;
    for (const key of keys) {
      const before = rankByRendezvous(key, nodes, (n) => n);
      const after = owner(key, remaining);
      if (before[0] === leaving) {
        moved++;
        expect(after).toBe(before[1]);
      } else {
        expect(after).toBe(before[0]); // nobody else's adapter moves
      }
    }
    expect(moved / keys.length).toBeGreaterThan(0.15);
    expect(moved / keys.length).toBeLessThan(0.25); // ≈ 1/5 of the keys, the minimum possible
  });

  it("a returning runner takes back exactly its keys", () => {
    const remaining = nodes.slice(0, 4);
    for (const key of keys.slice(0, 500)) {
      const after = owner(key, nodes);
      if (after !== nodes[4]) expect(after).toBe(owner(key, remaining));
    }
  });
});
