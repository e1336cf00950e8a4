/**
 * The key/value cache of a batch on the device (WebGPU): per layer, keys and values of every slot,
 * [maxRows, kv_heads, capacity, head_dim] (the layout onnxruntime's GroupQueryAttention reads),
 * kept in the provider's memory from one step to the next. Nothing about the cache crosses to the
 * host: a step feeds the buffers and takes back the updated ones.
 *
 * Rows are compact like the host cache's (a removed row's slot is taken by the last row), but moving
 * a row, growing the capacity or taking a few rows out for a prompt are device work, done by two
 * small graphs on the same provider: one selects slots (Gather) and pads the capacity (Pad), the
 * other writes rows back (ScatterND). Moves and growth are recorded when asked for and applied
 * together before the next run.
 */
import type { GraphBuilder, Value } from "../graph/builder.ts";
import { GraphBuilder as Builder } from "../graph/builder.ts";
import type { ModelConfig } from "../model/config.ts";
import { type DeviceTensor, OnnxSession, type OnnxSessionOptions } from "../runtime/onnx-session.ts";
import { CacheRows, type KvCacheOptions } from "./kv-cache.ts";

/** A layer's keys and values on the device. */
export interface DeviceLayerCache {
  key: DeviceTensor;
  value: DeviceTensor;
}

/** The device graphs that allocate, select, pad and write back cache rows for one model. */
export class DeviceCacheOps {
  private constructor(
    private readonly zeros: OnnxSession,
    private readonly select: OnnxSession,
    private readonly scatter: OnnxSession,
    private readonly tensors: number, // 2 per layer
  ) {}

  /** Builds the three graphs for `config` on the session options' provider (WebGPU). */
  static async create(config: ModelConfig, options: OnnxSessionOptions): Promise<DeviceCacheOps> {
    const count = 2 * config.numLayers;
    const build = async (name: string, body: (g: GraphBuilder) => Value[]) => {
      const g = new Builder(name);
      const outputs = body(g).map((value, i) => g.output(value, `out.${i}`));
      return OnnxSession.create(g.serialize(), { inputs: g.inputs, outputs: g.outputs }, { ...options, deviceOutputs: outputs.map((o) => o.name) });
    };
    const shape = ["rows", config.numKvHeads, "capacity", config.headDim];
    const zeros = await build("kv-zeros", (g) => {
      const size = g.input("shape", "int64", [4]);
      return Array.from({ length: count }, (_, i) => g.addNode("ConstantOfShape", [size], [{ dtype: "float32", shape }], { name: `/zeros.${i}` })[0]);
    });
    // Gather the slots `order` names (a permutation, or the rows a prompt run needs), then append `pads` slots.
    const select = await build("kv-select", (g) => {
      const order = g.input("order", "int64", ["selected"]);
      const pads = g.input("pads", "int64", [8]);
      return Array.from({ length: count }, (_, i) => {
        const cache = g.input(`cache.${i}`, "float32", shape);
        const gathered = g.addNode("Gather", [cache, order], [{ dtype: "float32", shape: ["selected", ...shape.slice(1)] }], {
          name: `/gather.${i}`,
          attributes: { axis: 0 },
        })[0];
        return g.addNode("Pad", [gathered, pads], [{ dtype: "float32", shape: ["selected", shape[1], "padded", shape[3]] }], { name: `/pad.${i}` })[0];
      });
    });
    const scatter = await build("kv-scatter", (g) => {
      const rows = g.input("rows", "int64", ["selected", 1]);
      return Array.from({ length: count }, (_, i) => {
        const cache = g.input(`cache.${i}`, "float32", shape);
        const updates = g.input(`rows.${i}`, "float32", ["selected", ...shape.slice(1)]);
        return g.addNode("ScatterND", [cache, rows, updates], [{ dtype: "float32", shape }], { name: `/scatter.${i}` })[0];
      });
    });
    return new DeviceCacheOps(zeros, select, scatter, count);
  }

  /** New zeroed buffers for every layer: [rows, kv_heads, capacity, head_dim]. */
  async allocate(config: ModelConfig, rows: number, capacity: number): Promise<DeviceLayerCache[]> {
    const shape = BigInt64Array.from([rows, config.numKvHeads, capacity, config.headDim].map(BigInt));
    const { device } = await this.zeros.runMixed({ shape: { dtype: "int64", shape: [4], data: shape } });
    return pairs(device, this.tensors);
  }

  /** Slots `order` of every layer's buffers, each with `extraSlots` more positions (zeros). */
  async selectRows(layers: DeviceLayerCache[], order: number[], extraSlots: number): Promise<DeviceLayerCache[]> {
    const feeds: Record<string, DeviceTensor | { dtype: "int64"; shape: number[]; data: BigInt64Array }> = {
      order: { dtype: "int64", shape: [order.length], data: BigInt64Array.from(order.map(BigInt)) },
      pads: { dtype: "int64", shape: [8], data: BigInt64Array.from([0, 0, 0, 0, 0, 0, extraSlots, 0].map(BigInt)) },
    };
    layers.forEach((layer, l) => {
      feeds[`cache.${2 * l}`] = layer.key;
      feeds[`cache.${2 * l + 1}`] = layer.value;
    });
    return pairs((await this.select.runMixed(feeds)).device, this.tensors);
  }

  /** Every layer's buffers with `rows[i]`'s slot replaced by `updates[l]` row i. */
  async writeRows(layers: DeviceLayerCache[], rows: number[], updates: DeviceLayerCache[]): Promise<DeviceLayerCache[]> {
    const feeds: Record<string, DeviceTensor | { dtype: "int64"; shape: number[]; data: BigInt64Array }> = {
      rows: { dtype: "int64", shape: [rows.length, 1], data: BigInt64Array.from(rows.map(BigInt)) },
    };
    layers.forEach((layer, l) => {
      feeds[`cache.${2 * l}`] = layer.key;
      feeds[`cache.${2 * l + 1}`] = layer.value;
      feeds[`rows.${2 * l}`] = updates[l].key;
      feeds[`rows.${2 * l + 1}`] = updates[l].value;
    });
    return pairs((await this.scatter.runMixed(feeds)).device, this.tensors);
  }

  /** Releases the graphs. */
  async dispose(): Promise<void> {
    await Promise.all([this.zeros.dispose(), this.select.dispose(), this.scatter.dispose()]);
  }
}

function pairs(outputs: Record<string, DeviceTensor>, count: number): DeviceLayerCache[] {
  const layers: DeviceLayerCache[] = [];
  for (let i = 0; i < count; i += 2) layers.push({ key: outputs[`out.${i}`], value: outputs[`out.${i + 1}`] });
  return layers;
}

/** Releases every buffer of a set of layers. */
export function releaseLayers(layers: DeviceLayerCache[]): void {
  for (const layer of layers) {
    layer.key.dispose();
    layer.value.dispose();
  }
}

export class DeviceKvCache extends CacheRows {
  private layers: DeviceLayerCache[] = [];
  private allocatedCapacity = 0;
  private order: number[] | null = null; // pending move: slot i takes slot order[i]

  constructor(
    config: ModelConfig,
    maxRows: number,
    options: KvCacheOptions,
    private readonly ops: DeviceCacheOps,
  ) {
    super(config, maxRows, options);
  }

  /** Removes a row; the last row moves into its slot (returns the moved row's old index, or null). */
  removeRow(row: number): number | null {
    this.checkRow(row);
    const last = this.rows - 1;
    if (row !== last) {
      this.order ??= Array.from({ length: this.maxRows }, (_, i) => i);
      this.order[row] = this.order[last]; // applied at the next run, with any other move
      this.lengths[row] = this.lengths[last];
    }
    this.lengths.pop();
    return row !== last ? last : null;
  }

  /** Makes room for `newTokensPerRow[r]` more tokens in each active row (applied at the next `prepare`). */
  reserve(newTokensPerRow: readonly number[]): void {
    this.capacityTokens = this.neededCapacity(newTokensPerRow);
  }

  /** Applies pending row moves and growth (or allocates the buffers), so the layers are current. */
  async prepare(): Promise<void> {
    if (this.layers.length === 0) {
      this.layers = await this.ops.allocate(this.config, this.maxRows, this.capacityTokens);
      this.allocatedCapacity = this.capacityTokens;
      this.order = null;
      return;
    }
    const extra = this.capacityTokens - this.allocatedCapacity;
    if (this.order === null && extra === 0) return;
    const order = this.order ?? Array.from({ length: this.maxRows }, (_, i) => i);
    const next = await this.ops.selectRows(this.layers, order, extra);
    releaseLayers(this.layers);
    this.layers = next;
    this.allocatedCapacity = this.capacityTokens;
    this.order = null;
  }

  /** A layer's buffers (after `prepare`). */
  layer(layer: number): DeviceLayerCache {
    return this.layers[layer];
  }

  /** Takes a run's present buffers as the cache, releasing the old ones. */
  replace(layers: DeviceLayerCache[]): void {
    releaseLayers(this.layers);
    this.layers = layers;
  }

  /** Rows [first, first + count) as buffers of their own, for a run over those rows alone. */
  selectRows(first: number, count: number): Promise<DeviceLayerCache[]> {
    return this.ops.selectRows(
      this.layers,
      Array.from({ length: count }, (_, i) => first + i),
      0,
    );
  }

  /** Writes rows [first, first + updates' rows) back from a run over those rows alone. */
  async writeRows(first: number, count: number, updates: DeviceLayerCache[]): Promise<void> {
    const next = await this.ops.writeRows(
      this.layers,
      Array.from({ length: count }, (_, i) => first + i),
      updates,
    );
    releaseLayers(this.layers);
    this.layers = next;
  }

  /** Releases the buffers. */
  dispose(): void {
    releaseLayers(this.layers);
    this.layers = [];
  }
}
