import { describe, expect, it } from "vitest";
import { Sampler, argmax } from "./sampler.ts";

function frequencies(sampler: Sampler, logits: Float32Array, draws: number): number[] {
  const counts = new Array(logits.length).fill(0);
  for (let i = 0; i < draws; i++) counts[sampler.sample(logits)]++;
  return counts.map((c) => c / draws);
}

describe("Sampler", () => {
  const logits = Float32Array.from([0, Math.log(3), Math.log(2), Math.log(4)]); // p = 0.1, 0.3, 0.2, 0.4

  it("greedy picks the argmax, lowest id on ties", () => {
    expect(new Sampler({ temperature: 0 }).sample(logits)).toBe(3);
    expect(argmax(Float32Array.from([1, 5, 5, 2]))).toBe(1);
  });

  it("samples in proportion to softmax(logits / temperature)", () => {
    const f = frequencies(new Sampler({ seed: 1 }), logits, 40000);
    [0.1, 0.3, 0.2, 0.4].forEach((p, i) => expect(f[i]).toBeCloseTo(p, 1.5));
    // temperature 0.5 squares the odds: p ∝ 1, 9, 4, 16
    const cold = frequencies(new Sampler({ seed: 2, temperature: 0.5 }), logits, 40000);
    [1 / 30, 9 / 30, 4 / 30, 16 / 30].forEach((p, i) => expect(cold[i]).toBeCloseTo(p, 1.5));
  });

  it("top-k keeps only the k most likely tokens, renormalised", () => {
    const f = frequencies(new Sampler({ seed: 3, topK: 2 }), logits, 20000);
    expect(f[0]).toBe(0);
    expect(f[2]).toBe(0);
    expect(f[1]).toBeCloseTo(3 / 7, 1.5);
    expect(f[3]).toBeCloseTo(4 / 7, 1.5);
  });

  it("top-p keeps the smallest set reaching p", () => {
    // sorted: 0.4, 0.3, 0.2, 0.1 → p = 0.65 keeps {3, 1}
    const f = frequencies(new Sampler({ seed: 4, topP: 0.65 }), logits, 20000);
    expect(f[0] + f[2]).toBe(0);
    expect(f[3]).toBeCloseTo(4 / 7, 1.5);
    expect(new Sampler({ seed: 5, topP: 0.01 }).sample(logits)).toBe(3);
  });

  it("the same seed gives the same draws; another seed differs", () => {
    const draw = (seed: number) =>
      Array.from(
        { length: 50 },
        (
          (s) => () =>
            s.sample(logits)
        )(new Sampler({ seed })),
      );
    expect(draw(42)).toEqual(draw(42));
    expect(draw(42)).not.toEqual(draw(43));
  });

  it("rejects bad options naming the field", () => {
    expect(() => new Sampler({ temperature: -1 })).toThrow(/temperature/);
    expect(() => new Sampler({ topP: 0 })).toThrow(/topP/);
    expect(() => new Sampler({ topK: 1.5 })).toThrow(/topK/);
    expect(() => new Sampler({ seed: Number.NaN })).toThrow(/seed/);
  });
});
