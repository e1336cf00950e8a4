import { describe, expect, it } from "vitest";
import { makeBatches, splitTrainValidation, type Batch } from "./batching.ts";
import type { TokenizedExample } from "./tokenize.ts";

// Example i has length `length`, ids 1000·i + position, labels one higher, a trained last position.
function example(index: number, length: number): TokenizedExample {
  const inputIds = Array.from({ length }, (_, position) => 1000 * index + position + 1);
  return {
    inputIds,
    labels: inputIds.map((id) => id + 1),
    lossWeights: inputIds.map((_, position) => (position === length - 1 || position % 3 === 0 ? 1 : 0)),
  };
}

const lengths = [3, 17, 5, 30, 8, 8, 2, 31, 16, 12, 9, 4, 25, 7, 1, 14, 20, 6, 11, 29, 3, 18, 10];
const examples = lengths.map((length, index) => example(index, length));
const buckets = [8, 16, 32];

const signature = (batches: Batch[]) => batches.map((batch) => batch.exampleIndices.join(","));

describe("makeBatches", () => {
  const options = { batchSize: 4, seed: 7, epoch: 0, lengthBuckets: buckets };

  it("covers every example exactly once, in ceil(n / batchSize) batches with at most one short", () => {
    const batches = makeBatches(examples, options);
    expect(batches).toHaveLength(Math.ceil(examples.length / 4));
    expect(batches.flatMap((batch) => batch.exampleIndices).sort((a, b) => a - b)).toEqual(examples.map((_, i) => i));
    expect(batches.filter((batch) => batch.rows < 4)).toHaveLength(1);
  });

  it("is deterministic per (seed, epoch) and differs across epochs and seeds", () => {
    const first = signature(makeBatches(examples, options));
    expect(signature(makeBatches(examples, options))).toEqual(first);
    expect(signature(makeBatches(examples, { ...options, epoch: 1 }))).not.toEqual(first);
    expect(signature(makeBatches(examples, { ...options, seed: 8 }))).not.toEqual(first);
  });

  it("pads each row to the smallest bucket holding the batch's longest row, with weight 0 on padding", () => {
    for (const batch of makeBatches(examples, { ...options, padId: 99 })) {
      const longest = Math.max(...batch.lengths);
      expect(batch.bucket).toBe(buckets.find((bucket) => bucket >= longest));
      expect(batch.length).toBe(batch.bucket);
      expect(batch.inputIds).toHaveLength(batch.rows * batch.bucket);
      let weightSum = 0;
      batch.exampleIndices.forEach((index, row) => {
        const source = examples[index]!;
        const offset = row * batch.bucket;
        expect(batch.lengths[row]).toBe(source.inputIds.length);
        for (let position = 0; position < batch.bucket; position++) {
          const real = position < source.inputIds.length;
          expect(batch.inputIds[offset + position]).toBe(real ? source.inputIds[position] : 99);
          expect(batch.labels[offset + position]).toBe(real ? source.labels[position] : 99);
          expect(batch.lossWeights[offset + position]).toBe(real ? source.lossWeights[position] : 0);
          if (real) weightSum += source.lossWeights[position]!;
        }
      });
      expect(batch.lossTokenCount).toBe(weightSum);
    }
  });

  it("groups similar lengths: far less padding than batching in a random order", () => {
    const padding = (batches: Batch[]) => batches.reduce((sum, batch) => sum + batch.rows * batch.bucket - batch.lengths.reduce((a, b) => a + b, 0), 0);
    const grouped = padding(makeBatches(examples, options));
    // Reference: one bucket of 32, as if lengths were not grouped at all.
    const naive = padding(makeBatches(examples, { ...options, lengthBuckets: [32] }));
    expect(grouped).toBeLessThan(naive / 2);
    // Only the carried remainder of a bucket is padded past its own bucket.
    const overPadded = makeBatches(examples, options).flatMap((batch) =>
      batch.lengths.filter((length) => batch.bucket > buckets.find((bucket) => bucket >= length)!),
    );
    expect(overPadded.length).toBeLessThan(4 * (buckets.length - 1));
  });

  it("fills the short batch with empty rows when asked, so every batch has one shape per bucket", () => {
    const batches = makeBatches(examples, { ...options, fillRows: true });
    for (const batch of batches) expect(batch.rows).toBe(4);
    const short = batches.find((batch) => batch.exampleIndices.includes(-1))!;
    const filler = short.exampleIndices.indexOf(-1);
    expect(short.lengths[filler]).toBe(0);
    expect(short.lossWeights.slice(filler * short.bucket).every((weight) => weight === 0)).toBe(true);
  });

  it("rejects an example longer than the largest bucket and bad options", () => {
    expect(() => makeBatches([example(0, 40)], options)).toThrow(/example 0 has 40 input tokens.*largest length bucket 32/);
    expect(() => makeBatches(examples, { ...options, batchSize: 0 })).toThrow(/batchSize/);
    expect(() => makeBatches(examples, { ...options, lengthBuckets: [] })).toThrow(/lengthBuckets/);
    expect(() => makeBatches([{ inputIds: [1, 2], labels: [2], lossWeights: [1, 1] }], options)).toThrow(/malformed/);
  });
});

describe("splitTrainValidation", () => {
  const items = Array.from({ length: 50 }, (_, i) => i);

  it("holds out floor(fraction · n), deterministically per seed, keeping order", () => {
    const split = splitTrainValidation(items, { fraction: 0.1, seed: 3 });
    expect(split.validation).toHaveLength(5);
    expect(split.train).toHaveLength(45);
    expect([...split.train, ...split.validation].sort((a, b) => a - b)).toEqual(items);
    expect(split.validation).toEqual([...split.validation].sort((a, b) => a - b));
    expect(splitTrainValidation(items, { fraction: 0.1, seed: 3 })).toEqual(split);
    expect(splitTrainValidation(items, { fraction: 0.1, seed: 4 }).validation).not.toEqual(split.validation);
  });

  it("holds out at least one example from 10 on, none below unless the fraction asks", () => {
    expect(splitTrainValidation(items.slice(0, 10), { fraction: 0.01, seed: 1 }).validation).toHaveLength(1);
    expect(splitTrainValidation(items.slice(0, 9), { fraction: 0.1, seed: 1 }).validation).toHaveLength(0);
    expect(splitTrainValidation(items.slice(0, 9), { fraction: 0.5, seed: 1 }).validation).toHaveLength(4);
    expect(splitTrainValidation(items, { fraction: 0, seed: 1 }).validation).toHaveLength(0);
    expect(splitTrainValidation([1], { fraction: 0.9, seed: 1 })).toEqual({ train: [1], validation: [] });
  });

  it("rejects a fraction outside [0, 1)", () => {
    expect(() => splitTrainValidation(items, { fraction: 1, seed: 1 })).toThrow(/fraction/);
    expect(() => splitTrainValidation(items, { fraction: -0.1, seed: 1 })).toThrow(/fraction/);
  });
});
