/**
 * The host-side key/value cache for a batch of sequences.
 *
 * Rows are slots 0..rows-1 (kept compact so a run feeds a view, not a copy). Per layer, keys and
 * values are stored transposed, [rows, kv_heads, head_dim, capacity]: exactly the layout the
 * graph multiplies with, so the buffers are fed as they lie and the CPU provider reads them in
 * place. Slots past a row's length hold stale data that the attention mask hides.
 *
 * Every row has the same capacity, which grows in steps of `growthTokens` (not by doubling, since
 * a decode step reads every slot of the capacity) up to `maxCapacity`: the model's context or
 * what the memory budget allows for a full batch, whichever is smaller.
 */
import type { ModelConfig } from "../model/config.ts";

/** Bytes one token occupies in the cache across all layers (keys and values, float32). */
export function cacheBytesPerToken(config: ModelConfig): number {
  return config.numLayers * 2 * config.numKvHeads * config.headDim * 4;
}

/** The most tokens each of `maxRows` rows can hold: the model's context, or less under a memory budget. */
export function maxCacheTokens(config: ModelConfig, maxRows: number, budgetBytes: number | undefined): number {
  const budgetTokens = budgetBytes === undefined ? Number.POSITIVE_INFINITY : Math.floor(budgetBytes / (maxRows * cacheBytesPerToken(config)));
  const tokens = Math.min(config.maxPositionEmbeddings, budgetTokens);
  if (tokens < 1)
    throw new Error(
      `a KV cache budget of ${budgetBytes} bytes cannot hold one token for each of ${maxRows} rows (${cacheBytesPerToken(config)} bytes per token)`,
    );
  return tokens;
}

/**
 * The capacity rows need for `newTokens[r]` more tokens each: the current one if it suffices, else
 * the next multiple of `growthTokens` (up to `maxCapacity`); throws naming the limit a row passes.
 */
export function grownCapacity(
  config: ModelConfig,
  lengths: readonly number[],
  newTokens: readonly number[],
  current: number,
  growthTokens: number,
  maxCapacity: number,
): number {
  let needed = 0;
  newTokens.forEach((n, row) => (needed = Math.max(needed, lengths[row] + n)));
  if (needed > maxCapacity) {
    const context = config.maxPositionEmbeddings;
    const limit = needed > context ? `the model's context of ${context}` : `the KV cache budget's ${maxCapacity} tokens per row`;
    throw new Error(`sequence of ${needed} tokens exceeds ${limit}`);
  }
  if (needed <= current) return current;
  return Math.min(Math.ceil(needed / growthTokens) * growthTokens, maxCapacity);
}

/** How a cache may grow: its first capacity, its growth step, and its memory budget. */
export interface KvCacheOptions {
  initialCapacity?: number; // token slots per row at the start (default 64)
  growthTokens?: number; // slots added when a row needs more (default 256)
  budgetBytes?: number; // cap on maxRows × capacity × bytes per token (default: the model's context for every row)
}

/**
 * What a cache's rows share wherever the cache lives: each row's cached length, the capacity
 * every row has, how it grows, and the memory budget that bounds it.
 */
export abstract class CacheRows {
  readonly lengths: number[] = []; // cached tokens per active row
  /** The most tokens a row can hold: the model's context, or less under the memory budget. */
  readonly maxCapacity: number;
  protected capacityTokens: number;
  private readonly growthTokens: number;

  constructor(
    readonly config: ModelConfig,
    readonly maxRows: number,
    options: KvCacheOptions,
  ) {
    if (!Number.isInteger(maxRows) || maxRows < 1) throw new Error(`KV cache needs at least one row, got ${maxRows}`);
    this.maxCapacity = maxCacheTokens(config, maxRows, options.budgetBytes);
    this.growthTokens = Math.max(1, options.growthTokens ?? 256);
    this.capacityTokens = Math.min(Math.max(1, options.initialCapacity ?? 64), this.maxCapacity);
  }

  /** Active rows. */
  get rows(): number {
    return this.lengths.length;
  }

  /** Token slots per row. */
  get capacity(): number {
    return this.capacityTokens;
  }

  /** Bytes the cache buffers take (every slot of every row). */
  get bytes(): number {
    return this.maxRows * this.capacityTokens * cacheBytesPerToken(this.config);
  }

  /** Adds an empty row and returns its index. */
  addRow(): number {
    if (this.rows >= this.maxRows) throw new Error(`KV cache is full (${this.maxRows} rows)`);
    this.lengths.push(0);
    return this.rows - 1;
  }

  /** Removes every row. */
  clear(): void {
    this.lengths.length = 0;
  }

  /** Advances rows' lengths once a run is written (`counts[i]` for row `first + i`). */
  advance(first: number, counts: readonly number[]): void {
    counts.forEach((n, i) => (this.lengths[first + i] += n));
  }

  /** The capacity rows need for `newTokensPerRow[r]` more tokens each (throws past the limit). */
  protected neededCapacity(newTokensPerRow: readonly number[]): number {
    return grownCapacity(this.config, this.lengths, newTokensPerRow, this.capacityTokens, this.growthTokens, this.maxCapacity);
  }

  protected checkRow(row: number): void {
    if (!Number.isInteger(row) || row < 0 || row >= this.rows) throw new Error(`KV cache has no row ${row} (rows: ${this.rows})`);
  }
}

export class KvCache extends CacheRows {
  readonly keys: Float32Array[] = []; // per layer [maxRows, kv_heads, head_dim, capacity]
  readonly values: Float32Array[] = []; // per layer [maxRows, kv_heads, head_dim, capacity]

  constructor(config: ModelConfig, maxRows: number, options: KvCacheOptions = {}) {
    super(config, maxRows, options);
    this.allocate(this.capacityTokens, null);
  }

  /** Removes a row; the last row moves into its slot (returns the moved row's old index, or null). */
  removeRow(row: number): number | null {
    this.checkRow(row);
    const last = this.rows - 1;
    if (row !== last) {
      const block = this.rowBlock();
      for (let layer = 0; layer < this.config.numLayers; layer++) {
        this.keys[layer].copyWithin(row * block, last * block, (last + 1) * block);
        this.values[layer].copyWithin(row * block, last * block, (last + 1) * block);
      }
      this.lengths[row] = this.lengths[last];
    }
    this.lengths.pop();
    return row !== last ? last : null;
  }

  /** Makes room for `newTokensPerRow[r]` more tokens in each active row. */
  reserve(newTokensPerRow: readonly number[]): void {
    const capacity = this.neededCapacity(newTokensPerRow);
    if (capacity !== this.capacityTokens) this.allocate(capacity, this.capacityTokens);
  }

  /** Past keys of rows [first, first + count) of a layer, transposed: [count, kv_heads, head_dim, capacity]. */
  pastKeys(layer: number, first = 0, count = this.rows): Float32Array {
    const block = this.rowBlock();
    return this.keys[layer].subarray(first * block, (first + count) * block);
  }

  /** Past values of rows [first, first + count) of a layer, transposed: [count, kv_heads, head_dim, capacity]. */
  pastValues(layer: number, first = 0, count = this.rows): Float32Array {
    const block = this.rowBlock();
    return this.values[layer].subarray(first * block, (first + count) * block);
  }

  /**
   * Writes a run's new keys/values (both `[runRows, kv, head_dim, tokens]`, padded to `tokens`) for
   * rows `first + i`, taking the first `counts[i]` tokens of each (0: a row that only rode along),
   * at each row's current length.
   */
  write(layer: number, first: number, newKeys: Float32Array, newValues: Float32Array, tokens: number, counts: readonly number[]): void {
    const { numKvHeads, headDim } = this.config;
    const capacity = this.capacityTokens;
    const keys = this.keys[layer];
    const values = this.values[layer];
    for (let i = 0; i < counts.length; i++) {
      const count = counts[i];
      if (count === 0) continue;
      const row = first + i;
      const start = this.lengths[row];
      for (let head = 0; head < numKvHeads; head++) {
        const runHead = i * numKvHeads + head;
        const rowHead = row * numKvHeads + head;
        for (let d = 0; d < headDim; d++) {
          const from = (runHead * headDim + d) * tokens;
          const to = (rowHead * headDim + d) * capacity + start;
          keys.set(newKeys.subarray(from, from + count), to);
          values.set(newValues.subarray(from, from + count), to);
        }
      }
    }
  }

  private rowBlock(): number {
    return this.config.numKvHeads * this.config.headDim * this.capacityTokens;
  }

  private allocate(capacity: number, previous: number | null): void {
    const { numLayers, numKvHeads, headDim } = this.config;
    const size = this.maxRows * numKvHeads * headDim * capacity;
    for (let layer = 0; layer < numLayers; layer++) {
      const keys = new Float32Array(size);
      const values = new Float32Array(size);
      if (previous !== null) {
        const oldKeys = this.keys[layer];
        const oldValues = this.values[layer];
        for (let line = 0; line < this.rows * numKvHeads * headDim; line++) {
          keys.set(oldKeys.subarray(line * previous, line * previous + previous), line * capacity);
          values.set(oldValues.subarray(line * previous, line * previous + previous), line * capacity);
        }
      }
      // Replace one layer at a time so growing never holds two copies of the whole cache.
      this.keys[layer] = keys;
      this.values[layer] = values;
    }
    this.capacityTokens = capacity;
  }
}
