/**
 * Per-row adapter inputs of a batch, laid out as the graph takes them (adapter-layout.ts): for
 * each layer and adapted module, [rows, rank, out] with row r holding its adapter's Mᵀ.
 *
 * A row's weights are written once, when the row joins, and fed as they lie on every step. While
 * every row's adapter is shared across layers (the default) one buffer per module serves all
 * layers; per-layer buffers are allocated only once a per-layer adapter joins.
 */
import type { ModelConfig } from "../model/config.ts";
import { linearShape, type LinearModule } from "../model/weights.ts";
import type { PicaAdapter } from "../pica/types.ts";
import { AdapterRegistry } from "./adapter-registry.ts";

export class AdapterRows {
  readonly modules: readonly LinearModule[];
  private readonly widths: number[]; // out of each module
  private readonly shared: Float32Array[]; // per module: [maxRows, rank, out]
  private perLayer: Float32Array[][] | null = null; // per layer, per module
  private readonly adapters: (PicaAdapter | null)[] = [];
  private perLayerRows = 0;
  /** Bumped whenever the inputs' contents change, so a copy kept on a device knows it is stale. */
  version = 0;

  constructor(
    private readonly config: ModelConfig,
    readonly maxRows: number,
    readonly rank: number,
    targetModules: readonly LinearModule[],
  ) {
    this.modules = [...targetModules];
    this.widths = this.modules.map((m) => linearShape(config, m)[0]);
    this.shared = this.widths.map((out) => new Float32Array(maxRows * rank * out));
  }

  /** Number of rows. */
  get rows(): number {
    return this.adapters.length;
  }

  /** Appends a row using `adapter` (null: the base model, whose weights are zeros). */
  addRow(adapter: PicaAdapter | null): void {
    this.version++;
    if (this.rows >= this.maxRows) throw new Error(`batch is full (${this.maxRows} rows)`);
    const row = this.adapters.length;
    this.adapters.push(adapter);
    if (adapter?.sharing === "per_layer") {
      this.perLayerRows++;
      this.ensurePerLayer();
    }
    this.writeRow(row, adapter);
  }

  /** Removes a row; the last row moves into its place, as the KV cache does. */
  removeRow(row: number): void {
    this.version++;
    const last = this.rows - 1;
    if (this.adapters[row]?.sharing === "per_layer") this.perLayerRows--;
    if (row !== last) {
      this.widths.forEach((out, i) => {
        const block = this.rank * out;
        this.shared[i].copyWithin(row * block, last * block, (last + 1) * block);
        for (const buffers of this.perLayer ?? []) buffers[i].copyWithin(row * block, last * block, (last + 1) * block);
      });
      this.adapters[row] = this.adapters[last];
    }
    this.adapters.pop();
  }

  /** The input of a layer's module (index into `modules`) for rows [first, first + count): [count, rank, out]. */
  input(layer: number, moduleIndex: number, first = 0, count = this.rows): Float32Array {
    const block = this.rank * this.widths[moduleIndex];
    const buffer = this.perLayerRows > 0 ? this.perLayer![layer][moduleIndex] : this.shared[moduleIndex];
    return buffer.subarray(first * block, (first + count) * block);
  }

  /** Shape of a module's input for `count` rows (default: the active rows). */
  inputShape(moduleIndex: number, count = this.rows): number[] {
    return [count, this.rank, this.widths[moduleIndex]];
  }

  private ensurePerLayer(): void {
    if (this.perLayer !== null) return;
    // Shared rows already written must appear in every layer's buffer too.
    this.perLayer = Array.from({ length: this.config.numLayers }, () => this.shared.map((b) => b.slice()));
  }

  private writeRow(row: number, adapter: PicaAdapter | null): void {
    this.modules.forEach((module, i) => {
      if (this.perLayer !== null) {
        for (let layer = 0; layer < this.config.numLayers; layer++) this.fill(this.perLayer[layer][i], row, i, adapter, module, layer);
      }
      // Shared buffers stay valid for the moment all per-layer rows have left.
      if (adapter?.sharing !== "per_layer") this.fill(this.shared[i], row, i, adapter, module, 0);
    });
  }

  /** Writes Mᵀ ([rank, out], zero-padded past the adapter's rank) into row `row`. */
  private fill(buffer: Float32Array, row: number, moduleIndex: number, adapter: PicaAdapter | null, module: LinearModule, layer: number): void {
    const out = this.widths[moduleIndex];
    const block = buffer.subarray(row * this.rank * out, (row + 1) * this.rank * out);
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
