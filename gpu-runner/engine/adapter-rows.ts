/**
 * Per-row adapter inputs of a batch, laid out as the graph takes them (adapter-layout.ts): for
 * each layer and adapted module, [rows, rank, out] with row r holding its adapter's Mᵀ.
 *
 * Rows are laid out at one rank, the bucket of the largest adapter rank among them (0 while no row
 * has an adapter), and smaller adapters are zero-padded to it: exact, because the rows of P are
 * nested. A row's weights are written once, when the row joins; the layout changes only when a
 * joining row needs a larger bucket or the row that needed it leaves. While every row's adapter
 * is shared across layers (the default) one buffer per module serves all layers; per-layer
 * buffers are allocated only once a per-layer adapter joins.
 */
import type { ModelConfig } from "../model/config.ts";
import { linearShape, type LinearModule } from "../model/weights.ts";
import type { PicaAdapter } from "../pica/types.ts";
import { AdapterRegistry } from "./adapter-registry.ts";

export class AdapterRows {
  readonly modules: readonly LinearModule[];
  private readonly widths: number[]; // out of each module
  private layoutRank = 0; // the rank every row is laid out at
  private shared: Float32Array[]; // per module: [maxRows, layoutRank, out]
  private perLayer: Float32Array[][] | null = null; // per layer, per module
  private readonly adapters: (PicaAdapter | null)[] = [];
  private perLayerRows = 0;
  /** Bumped whenever the inputs' contents change, so a copy kept on a device knows it is stale. */
  version = 0;

  constructor(
    private readonly config: ModelConfig,
    readonly maxRows: number,
    /** The rank rows of an adapter of rank r are laid out at (adapter-layout.ts: rankBucket). */
    private readonly bucketOf: (rank: number) => number,
    targetModules: readonly LinearModule[],
  ) {
    this.modules = [...targetModules];
    this.widths = this.modules.map((m) => linearShape(config, m)[0]);
    this.shared = this.widths.map(() => new Float32Array(0));
  }

  /** Number of rows. */
  get rows(): number {
    return this.adapters.length;
  }

  /** The rank the rows are laid out at: the bucket of the largest adapter rank among them (0: none has an adapter). */
  get rank(): number {
    return this.layoutRank;
  }

  /** Appends a row using `adapter` (null: the base model, whose weights are zeros). */
  addRow(adapter: PicaAdapter | null): void {
    if (this.rows >= this.maxRows) throw new Error(`batch is full (${this.maxRows} rows)`);
    const bucket = adapter === null ? 0 : this.bucketOf(adapter.rank);
    this.version++;
    const row = this.adapters.length;
    this.adapters.push(adapter);
    if (adapter?.sharing === "per_layer") this.perLayerRows++;
    if (bucket > this.layoutRank) {
      this.layOut(bucket);
      return;
    }
    if (adapter?.sharing === "per_layer") this.ensurePerLayer();
    this.writeRow(row, adapter);
  }

  /** Removes a row; the last row moves into its place, as the KV cache does. */
  removeRow(row: number): void {
    this.version++;
    const last = this.rows - 1;
    const removed = this.adapters[row];
    if (removed?.sharing === "per_layer") this.perLayerRows--;
    if (row !== last) {
      this.widths.forEach((out, i) => {
        const block = this.layoutRank * out;
        this.shared[i].copyWithin(row * block, last * block, (last + 1) * block);
        for (const buffers of this.perLayer ?? []) buffers[i].copyWithin(row * block, last * block, (last + 1) * block);
      });
      this.adapters[row] = this.adapters[last];
    }
    this.adapters.pop();
    // The rows that stay may fit a smaller rank: later runs then do less work.
    if (removed !== null && this.bucketOf(removed.rank) === this.layoutRank) {
      const needed = this.rankOf(0, this.rows);
      if (needed < this.layoutRank) this.layOut(needed);
    }
  }

  /** Whether every layer reads the same buffer (no per-layer adapter among the rows). */
  get sharedAcrossLayers(): boolean {
    return this.perLayerRows === 0;
  }

  /** The rank a run over rows [first, first + count) needs: the bucket of its largest adapter rank (0: base rows only). */
  rankOf(first: number, count: number): number {
    let largest = 0;
    const end = Math.min(first + count, this.rows);
    for (let row = first; row < end; row++) largest = Math.max(largest, this.adapters[row]?.rank ?? 0);
    return largest === 0 ? 0 : this.bucketOf(largest);
  }

  /**
   * The input of a layer's module (index into `modules`) for rows [first, first + count) at
   * `rank` (default: the rows' layout): [count, rank, out]. At the layout rank it is a view of the
   * rows' buffer; at another (at least every rank among these rows), a copy, cut or zero-padded.
   */
  input(layer: number, moduleIndex: number, first = 0, count = this.rows, rank = this.layoutRank): Float32Array {
    const out = this.widths[moduleIndex];
    const block = this.layoutRank * out;
    const buffer = this.perLayerRows > 0 ? this.perLayer![layer][moduleIndex] : this.shared[moduleIndex];
    if (rank === this.layoutRank) return buffer.subarray(first * block, (first + count) * block);
    // Row-major [rank, out] per row: the first `rank` slots of a row are its first rank·out values.
    const kept = Math.min(rank, this.layoutRank) * out;
    const copy = new Float32Array(count * rank * out);
    if (kept > 0) for (let i = 0; i < count; i++) copy.set(buffer.subarray((first + i) * block, (first + i) * block + kept), i * rank * out);
    return copy;
  }

  /** Shape of a module's input for `count` rows (default: the active rows) at `rank` (default: the layout's). */
  inputShape(moduleIndex: number, count = this.rows, rank = this.layoutRank): number[] {
    return [count, rank, this.widths[moduleIndex]];
  }

  /** Lays every row out again at `rank` (a larger bucket joined, or the largest left). */
  private layOut(rank: number): void {
    this.layoutRank = rank;
    this.shared = this.widths.map((out) => new Float32Array(this.maxRows * rank * out));
    this.perLayer = null;
    if (this.perLayerRows > 0) this.ensurePerLayer();
    this.adapters.forEach((adapter, row) => this.writeRow(row, adapter));
  }

  private ensurePerLayer(): void {
    if (this.perLayer !== null) return;
    // Shared rows already written must appear in every layer's buffer too.
    this.perLayer = Array.from({ length: this.config.numLayers }, () => this.shared.map((b) => b.slice()));
  }

  private writeRow(row: number, adapter: PicaAdapter | null): void {
    if (this.layoutRank === 0) return;
    this.modules.forEach((module, i) => {
      if (this.perLayer !== null) {
        for (let layer = 0; layer < this.config.numLayers; layer++) this.fill(this.perLayer[layer][i], row, i, adapter, module, layer);
      }
      // Shared buffers stay valid for the moment all per-layer rows have left.
      if (adapter?.sharing !== "per_layer") this.fill(this.shared[i], row, i, adapter, module, 0);
    });
  }

  /** Writes Mᵀ ([layout rank, out], zero-padded past the adapter's rank) into row `row`. */
  private fill(buffer: Float32Array, row: number, moduleIndex: number, adapter: PicaAdapter | null, module: LinearModule, layer: number): void {
    const out = this.widths[moduleIndex];
    const block = buffer.subarray(row * this.layoutRank * out, (row + 1) * this.layoutRank * out);
    block.fill(0);
    const m = adapter === null ? null : AdapterRegistry.moduleWeights(adapter, module, layer); // [out, adapter rank]
    if (m === null) return;
    const rank = adapter!.rank;
    for (let j = 0; j < rank; j++) {
      const target = j * out;
      for (let o = 0; o < out; o++) block[target + o] = m[o * rank + j];
    }
  }
}
