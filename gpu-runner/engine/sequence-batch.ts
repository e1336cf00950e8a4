/**
 * The rows an engine runs together: each row is one sequence with its cached keys/values and
 * its adapter (or the base model). Rows stay compact (slots 0..rows-1): a removed row's slot is
 * taken by the last row, in the cache and the adapter inputs alike.
 */
import { rankBucket } from "../model/adapter-layout.ts";
import type { ModelConfig } from "../model/config.ts";
import type { AdapterRegistry } from "./adapter-registry.ts";
import { AdapterRows } from "./adapter-rows.ts";
import type { DeviceKvCache } from "./device-kv-cache.ts";
import type { KvCache } from "./kv-cache.ts";

export class SequenceBatch {
  readonly adapterRows: AdapterRows | null;
  readonly maxRows: number;
  private readonly adapterIds: (string | null)[] = [];

  constructor(
    config: ModelConfig,
    /** The rows' keys and values: on the host, or on the device. */
    readonly cache: KvCache | DeviceKvCache,
    private readonly registry: AdapterRegistry | null,
  ) {
    this.maxRows = cache.maxRows;
    this.adapterRows = registry === null ? null : new AdapterRows(config, cache.maxRows, (rank) => rankBucket(rank, registry.maxRank), registry.targetModules);
  }

  /** Active rows. */
  get rows(): number {
    return this.cache.rows;
  }

  /** Cached tokens per row. */
  get lengths(): readonly number[] {
    return this.cache.lengths;
  }

  /** Token slots per row before the cache grows. */
  get capacity(): number {
    return this.cache.capacity;
  }

  /** Adapter id of each row (null: base model). */
  get rowAdapterIds(): readonly (string | null)[] {
    return this.adapterIds;
  }

  /** Adds an empty row served by `adapterId` (a registered adapter) or the base model; returns its index. */
  addRow(adapterId: string | null = null): number {
    let adapter = null;
    if (adapterId !== null) {
      if (this.registry === null) throw new Error(`this engine serves no adapters (asked for ${adapterId})`);
      adapter = this.registry.get(adapterId).adapter;
    }
    if (this.rows >= this.maxRows) throw new Error(`batch is full (${this.maxRows} rows)`);
    this.cache.addRow();
    this.adapterRows?.addRow(adapter);
    this.adapterIds.push(adapterId);
    return this.rows - 1;
  }

  /** Removes a row; the last row moves into its slot (returns the moved row's old index, or null). */
  removeRow(row: number): number | null {
    const moved = this.cache.removeRow(row);
    this.adapterRows?.removeRow(row);
    const last = this.adapterIds.length - 1;
    this.adapterIds[row] = this.adapterIds[last];
    this.adapterIds.pop();
    return moved;
  }
}
