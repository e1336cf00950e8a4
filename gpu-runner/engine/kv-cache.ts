/**
 * The host-side key/value cache for a batch of sequences.
 *
 * Rows are slots 0..rows-1 (kept compact so a run feeds a prefix view, not a copy). Per layer,
 * keys are stored transposed, [rows, kv_heads, head_dim, capacity], and values as
 * [rows, kv_heads, capacity, head_dim]: exactly the layouts the graph multiplies with, so the
 * buffers are fed as they are. Capacity grows (doubling) when a row would overflow it; slots
 * past a row's length hold stale data that the attention bias masks out.
 */
import type { ModelConfig } from "../model/config.ts";

export class KvCache {
  readonly keys: Float32Array[] = []; // per layer [maxRows, kv_heads, head_dim, capacity]
  readonly values: Float32Array[] = []; // per layer [maxRows, kv_heads, capacity, head_dim]
  readonly lengths: number[] = []; // cached tokens per active row
  private capacityTokens: number;

  constructor(
    readonly config: ModelConfig,
    readonly maxRows: number,
    initialCapacity = 64,
  ) {
    if (!Number.isInteger(maxRows) || maxRows < 1) throw new Error(`KV cache needs at least one row, got ${maxRows}`);
    this.capacityTokens = Math.min(Math.max(1, initialCapacity), config.maxPositionEmbeddings);
    this.allocate(this.capacityTokens, null);
  }

  /** Active rows. */
  get rows(): number {
    return this.lengths.length;
  }

  /** Token slots per row. */
  get capacity(): number {
    return this.capacityTokens;
  }

  /** Adds an empty row and returns its index. */
  addRow(): number {
    if (this.rows >= this.maxRows) throw new Error(`KV cache is full (${this.maxRows} rows)`);
    this.lengths.push(0);
    return this.rows - 1;
  }

  /** Removes a row; the last row moves into its slot (returns the moved row's old index, or null). */
  removeRow(row: number): number | null {
    this.checkRow(row);
    const last = this.rows - 1;
    if (row !== last) {
      const { numLayers } = this.config;
      const block = this.rowBlock();
      for (let layer = 0; layer < numLayers; layer++) {
        this.keys[layer].copyWithin(row * block, last * block, (last + 1) * block);
        this.values[layer].copyWithin(row * block, last * block, (last + 1) * block);
      }
      this.lengths[row] = this.lengths[last];
    }
    this.lengths.pop();
    return row !== last ? last : null;
  }

  /** Removes every row. */
  clear(): void {
    this.lengths.length = 0;
  }

  /** Makes room for `tokens` more positions in every active row that needs them. */
  reserve(newTokensPerRow: number[]): void {
    let needed = 0;
    newTokensPerRow.forEach((n, row) => (needed = Math.max(needed, this.lengths[row] + n)));
    const limit = this.config.maxPositionEmbeddings;
    if (needed > limit) throw new Error(`sequence of ${needed} tokens exceeds the model's context of ${limit}`);
    if (needed <= this.capacityTokens) return;
    let capacity = this.capacityTokens;
    while (capacity < needed) capacity *= 2;
    this.allocate(Math.min(capacity, limit), this.capacityTokens);
  }

  /** The active rows' past keys of a layer, as the graph takes them: [rows, kv_heads, head_dim, capacity]. */
  pastKeys(layer: number): Float32Array {
    return this.keys[layer].subarray(0, this.rows * this.rowBlock());
  }

  /** The active rows' past values of a layer: [rows, kv_heads, capacity, head_dim]. */
  pastValues(layer: number): Float32Array {
    return this.values[layer].subarray(0, this.rows * this.rowBlock());
  }

  /**
   * Appends a run's new keys/values (`[rows, kv, head_dim, tokens]` and `[rows, kv, tokens,
   * head_dim]`, padded to `tokens`) for the first `counts[row]` tokens of each row.
   */
  append(layer: number, presentKeys: Float32Array, presentValues: Float32Array, tokens: number, counts: number[]): void {
    const { numKvHeads, headDim } = this.config;
    const capacity = this.capacityTokens;
    const keys = this.keys[layer];
    const values = this.values[layer];
    for (let row = 0; row < counts.length; row++) {
      const start = this.lengths[row];
      const count = counts[row];
      for (let head = 0; head < numKvHeads; head++) {
        const rowHead = row * numKvHeads + head;
        for (let d = 0; d < headDim; d++) {
          const src = (rowHead * headDim + d) * tokens;
          keys.set(presentKeys.subarray(src, src + count), (rowHead * headDim + d) * capacity + start);
        }
        const src = rowHead * tokens * headDim;
        values.set(presentValues.subarray(src, src + count * headDim), (rowHead * capacity + start) * headDim);
      }
    }
  }

  /** Advances each row's length after all layers have been appended. */
  advance(counts: number[]): void {
    counts.forEach((n, row) => (this.lengths[row] += n));
  }

  private rowBlock(): number {
    return this.config.numKvHeads * this.config.headDim * this.capacityTokens;
  }

  private checkRow(row: number): void {
    if (!Number.isInteger(row) || row < 0 || row >= this.rows) throw new Error(`KV cache has no row ${row} (rows: ${this.rows})`);
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
        }
        for (let rowHead = 0; rowHead < this.rows * numKvHeads; rowHead++) {
          values.set(oldValues.subarray(rowHead * previous * headDim, (rowHead + 1) * previous * headDim), rowHead * capacity * headDim);
        }
      }
      this.keys[layer] = keys;
      this.values[layer] = values;
    }
    this.capacityTokens = capacity;
  }
}
