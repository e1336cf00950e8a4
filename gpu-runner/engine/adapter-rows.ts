/**
 * Per-row adapter inputs of a batch, laid out as the graph takes them (adapter-layout.ts):
 * for each layer and adapted group, [rows, R, N] with row r holding its adapter's Mᵀ blocks.
 *
 * A row's blocks are written once, when the row joins, and fed as they lie on every step. While
 * every row's adapter is shared across layers (the default) one buffer per group serves all
 * layers; per-layer buffers are allocated only once a per-layer adapter joins.
 */
import { groupLayouts, type GroupLayout } from "../model/adapter-layout.ts";
import type { ModelConfig } from "../model/config.ts";
import type { LinearModule } from "../model/weights.ts";
import type { PicaAdapter } from "../pica/types.ts";
import { AdapterRegistry } from "./adapter-registry.ts";

export class AdapterRows {
  readonly layouts: GroupLayout[];
  private readonly shared: Float32Array[]; // per adapted group: [maxRows, R, N]
  private perLayer: Float32Array[][] | null = null; // per layer, per adapted group
  private readonly adapters: (PicaAdapter | null)[] = [];
  private perLayerRows = 0;

  constructor(
    private readonly config: ModelConfig,
    readonly maxRows: number,
    readonly rank: number,
    targetModules: readonly LinearModule[],
  ) {
    this.layouts = groupLayouts(config, targetModules, rank).filter((l) => l.rows > 0);
    this.shared = this.layouts.map((l) => new Float32Array(maxRows * l.rows * l.width));
  }

  /** Number of rows. */
  get rows(): number {
    return this.adapters.length;
  }

  /** The adapter of each row (null: base model). */
  get rowAdapters(): readonly (PicaAdapter | null)[] {
    return this.adapters;
  }

  /** Appends a row using `adapter` (null: the base model, whose blocks are zeros). */
  addRow(adapter: PicaAdapter | null): void {
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
    const last = this.rows - 1;
    if (this.adapters[row]?.sharing === "per_layer") this.perLayerRows--;
    if (row !== last) {
      this.layouts.forEach((layout, g) => {
        const block = layout.rows * layout.width;
        this.shared[g].copyWithin(row * block, last * block, (last + 1) * block);
        for (const buffers of this.perLayer ?? []) buffers[g].copyWithin(row * block, last * block, (last + 1) * block);
      });
      this.adapters[row] = this.adapters[last];
    }
    this.adapters.pop();
  }

  /** The input for a layer's group: [rows, R, N] over the active rows. */
  input(layer: number, groupIndex: number): Float32Array {
    const layout = this.layouts[groupIndex];
    const size = this.rows * layout.rows * layout.width;
    const buffer = this.perLayerRows > 0 ? this.perLayer![layer][groupIndex] : this.shared[groupIndex];
    return buffer.subarray(0, size);
  }

  private ensurePerLayer(): void {
    if (this.perLayer !== null) return;
    // Shared rows already written must appear in every layer's buffer too.
    this.perLayer = Array.from({ length: this.config.numLayers }, () => this.shared.map((b) => b.slice()));
  }

  private writeRow(row: number, adapter: PicaAdapter | null): void {
    const layers = this.perLayer === null ? [null] : Array.from({ length: this.config.numLayers }, (_, l) => l);
    this.layouts.forEach((layout, g) => {
      for (const layer of layers) {
        const buffer = layer === null ? this.shared[g] : this.perLayer![layer][g];
        this.fillBlock(buffer, row, layout, adapter, layer ?? 0);
      }
      // Shared buffers stay valid for the moment all per-layer rows have left.
      if (this.perLayer !== null && adapter?.sharing !== "per_layer") this.fillBlock(this.shared[g], row, layout, adapter, 0);
    });
  }

  /** Writes row `row`'s [R, N] block: Mᵢᵀ of each adapted module in its columns, zeros elsewhere. */
  private fillBlock(buffer: Float32Array, row: number, layout: GroupLayout, adapter: PicaAdapter | null, layer: number): void {
    const { rows, width } = layout;
    const block = buffer.subarray(row * rows * width, (row + 1) * rows * width);
    block.fill(0);
    if (adapter === null) return;
    layout.adapted.forEach((module, i) => {
      const m = AdapterRegistry.moduleWeights(adapter, module, layer); // [out, adapter rank]
      if (m === null) return;
      const out = m.length / adapter.rank;
      const column = layout.columnOffset.get(module)!;
      for (let j = 0; j < adapter.rank; j++) {
        const target = (i * this.rank + j) * width + column;
        for (let o = 0; o < out; o++) block[target + o] = m[o * adapter.rank + j];
      }
    });
  }
}
