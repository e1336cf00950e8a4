// Tokenized examples to padded batches, one epoch at a time, and the train/validation split.
//
// Rows are padded on the right to one of a few fixed lengths (buckets) because the trainer builds
// one ONNX graph per (rows, length) shape. With causal attention a position never attends to a
// later one, so right padding changes nothing at the real positions and needs no attention mask;
// the padding is excluded from the loss by lossWeights = 0. The loss is meant to be normalised by
// the batch's `lossTokenCount` (a mean over trained tokens, as transformers does with labels of
// -100), so a long example weighs more than a short one, as in OpenAI's and Hugging Face's trainers.
import { validationHoldout } from "../../src/hyperparameters.ts";
import { Rng } from "../random.ts";
import type { TokenizedExample } from "./tokenize.ts";

/** A padded batch, row-major `[rows, bucket]`; it is also the trainer's `TrainingBatch`. */
export interface Batch {
  /** Input token ids, `[rows, bucket]`; padding holds `padId`. */
  inputIds: number[];
  /** Target token ids, `[rows, bucket]`; padding holds `padId` (a valid id, weighted 0). */
  labels: number[];
  /** Per-position loss weight, `[rows, bucket]`; 0 on padding and on untrained positions. */
  lossWeights: Float32Array;
  /** Real length of each row (before padding); 0 for a filler row. */
  lengths: number[];
  /** Index into the examples array of each row; -1 for a filler row. */
  exampleIndices: number[];
  rows: number;
  /** The padded length: the smallest bucket ≥ the longest row. */
  bucket: number;
  /** Same as `bucket`, under the name the training session reads. */
  length: number;
  /** Sum of lossWeights: the divisor of a token-mean loss. */
  lossTokenCount: number;
}

/** Options of {@link makeBatches}. */
export interface BatchOptions {
  batchSize: number;
  seed: number;
  /** 0-based epoch; each epoch gets its own order, the same for the same (seed, epoch). */
  epoch: number;
  /** Allowed padded lengths; every example must fit the largest. */
  lengthBuckets: readonly number[];
  /** Id written into padding; any valid id works since padding carries weight 0. Default 0. */
  padId?: number;
  /** Fill the last, short batch with empty rows so every batch has batchSize rows (one graph shape). */
  fillRows?: boolean;
}

/**
 * Makes one epoch of batches. Rows are grouped by bucket (the smallest bucket that holds them) so
 * that little is padded: each bucket's examples, shuffled, are cut into full batches; the
 * remainder moves up into the next bucket's pool (padded a little more), so an epoch has exactly
 * ceil(examples / batchSize) batches and at most one short one. The batches are then shuffled, so
 * long and short batches alternate rather than arriving in length order.
 */
export function makeBatches(examples: readonly TokenizedExample[], options: BatchOptions): Batch[] {
  const { batchSize, lengthBuckets } = options;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error(`batchSize must be a positive integer, got ${batchSize}`);
  const buckets = [...lengthBuckets].sort((a, b) => a - b);
  if (buckets.length === 0 || buckets.some((length) => !Number.isInteger(length) || length < 1)) {
    throw new Error(`lengthBuckets must be positive integers, got ${JSON.stringify(lengthBuckets)}`);
  }
  const rng = new Rng(epochSeed(options.seed, options.epoch));

  // Examples by the index of their bucket.
  const pools: number[][] = buckets.map(() => []);
  examples.forEach((example, index) => {
    checkExample(example, index);
    const bucket = buckets.findIndex((length) => length >= example.inputIds.length);
    if (bucket < 0) {
      throw new Error(
        `example ${index} has ${example.inputIds.length} input tokens, ` +
          `more than the largest length bucket ${buckets.at(-1)}; tokenize with maxLength ≤ ${buckets.at(-1)}`,
      );
    }
    pools[bucket]!.push(index);
  });

  const groups: number[][] = [];
  let carried: number[] = [];
  for (const pool of pools) {
    const candidates = shuffle([...carried, ...pool], rng);
    const full = candidates.length - (candidates.length % batchSize);
    for (let start = 0; start < full; start += batchSize) groups.push(candidates.slice(start, start + batchSize));
    carried = candidates.slice(full);
  }
  if (carried.length > 0) groups.push(carried);

  return shuffle(groups, rng).map((group) => padBatch(examples, group, buckets, options.padId ?? 0, options.fillRows === true ? batchSize : group.length));
}

/**
 * Cuts a batch into consecutive row slices of at most `maxTokens` padded tokens each (at least one
 * row), dropping slices with nothing to train. Gradient accumulation over the slices, each weighted
 * by its share of `lossTokenCount`, gives the whole batch's token-mean gradient; a slice is a short
 * unit of work that a busier caller (inference) can run between.
 */
export function splitBatch(batch: Batch, maxTokens: number): Batch[] {
  if (!(maxTokens >= 1)) throw new Error(`maxTokens must be ≥ 1, got ${maxTokens}`);
  const rowsPerSlice = Math.max(1, Math.floor(maxTokens / batch.length));
  if (rowsPerSlice >= batch.rows) return [batch];
  const slices: Batch[] = [];
  for (let first = 0; first < batch.rows; first += rowsPerSlice) {
    const end = Math.min(batch.rows, first + rowsPerSlice);
    const from = first * batch.length;
    const to = end * batch.length;
    const lossWeights = batch.lossWeights.slice(from, to);
    const lossTokenCount = lossWeights.reduce((sum, weight) => sum + weight, 0);
    if (lossTokenCount === 0) continue;
    slices.push({
      inputIds: batch.inputIds.slice(from, to),
      labels: batch.labels.slice(from, to),
      lossWeights,
      lossTokenCount,
      lengths: batch.lengths.slice(first, end),
      exampleIndices: batch.exampleIndices.slice(first, end),
      rows: end - first,
      bucket: batch.bucket,
      length: batch.length,
    });
  }
  return slices;
}

/** Options of {@link splitTrainValidation}. */
export interface SplitOptions {
  /** Share of the examples held out, in [0, 1). */
  fraction: number;
  seed: number;
}

/**
 * Holds out a deterministic random `floor(fraction · n)` examples for validation (at least 1 when
 * n ≥ 10 and fraction > 0; never all of them); both parts keep the original order.
 */
export function splitTrainValidation<T>(examples: readonly T[], options: SplitOptions): { train: T[]; validation: T[] } {
  const held = validationHoldout(examples.length, options.fraction);
  const order = shuffle(
    examples.map((_, index) => index),
    new Rng(options.seed),
  );
  const validationIndices = new Set(order.slice(0, held));
  const train: T[] = [];
  const validation: T[] = [];
  examples.forEach((example, index) => (validationIndices.has(index) ? validation : train).push(example));
  return { train, validation };
}

function padBatch(examples: readonly TokenizedExample[], group: readonly number[], buckets: readonly number[], padId: number, rows: number): Batch {
  const lengths = group.map((index) => examples[index]!.inputIds.length);
  const longest = Math.max(...lengths);
  const bucket = buckets.find((length) => length >= longest)!;
  const inputIds = new Array<number>(rows * bucket).fill(padId);
  const labels = new Array<number>(rows * bucket).fill(padId);
  const lossWeights = new Float32Array(rows * bucket);
  let lossTokenCount = 0;
  group.forEach((exampleIndex, row) => {
    const example = examples[exampleIndex]!;
    const offset = row * bucket;
    for (let position = 0; position < example.inputIds.length; position++) {
      inputIds[offset + position] = example.inputIds[position]!;
      labels[offset + position] = example.labels[position]!;
      lossWeights[offset + position] = example.lossWeights[position]!;
      lossTokenCount += example.lossWeights[position]!;
    }
  });
  const fillers = rows - group.length;
  return {
    inputIds,
    labels,
    lossWeights,
    rows,
    bucket,
    length: bucket,
    lossTokenCount,
    lengths: [...lengths, ...new Array<number>(fillers).fill(0)],
    exampleIndices: [...group, ...new Array<number>(fillers).fill(-1)],
  };
}

function checkExample(example: TokenizedExample, index: number): void {
  const length = example.inputIds.length;
  if (length === 0 || example.labels.length !== length || example.lossWeights.length !== length) {
    throw new Error(
      `example ${index} is malformed: inputIds, labels and lossWeights have lengths ` +
        `${length}, ${example.labels.length}, ${example.lossWeights.length} (must be equal and non-zero)`,
    );
  }
}

// Fisher–Yates in place with the seeded generator; returns the same array.
function shuffle<T>(items: T[], rng: Rng): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(rng.uniform() * (i + 1));
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  return items;
}

// One 32-bit seed per (seed, epoch): a murmur3-style mix, so neighbouring epochs (and seeds)
// get unrelated orders rather than shifted copies of one stream.
function epochSeed(seed: number, epoch: number): number {
  let hash = Math.imul((seed >>> 0) ^ 0x5bd1e995, 0xcc9e2d51);
  hash = Math.imul((hash << 15) | (hash >>> 17), 0x1b873593) ^ (epoch >>> 0);
  hash = Math.imul(hash ^ (hash >>> 16), 0x85ebca6b);
  hash = Math.imul(hash ^ (hash >>> 13), 0xc2b2ae35);
  return (hash ^ (hash >>> 16)) >>> 0;
}
