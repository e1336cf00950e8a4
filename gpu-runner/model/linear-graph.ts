/**
 * Linear layers in the decoder graph: each group of layers that reads the same input (q/k/v,
 * o, gate/up, down) is ONE product on its stacked, transposed weights (nn.Linear's y = x Wᵀ + b),
 * and an adapter path adds each adapted module's ΔW·x. Where weights and adapters come from is
 * pluggable, so inference (frozen weights, per-row adapters), PiCa or LoRA training (frozen
 * weights, trainable adapters) and full training (trainable weights) share this code.
 */
import type { DataType, Dim, GraphBuilder, Value } from "../graph/builder.ts";
import { binary, matMul, split, splitBySizes } from "../graph/ops.ts";
import { quantizeMatrix, type QuantizedMatrix, type QuantizedProducts, type Quantization, type WeightBits } from "../quantize/block-format.ts";
import { quantizedMatMul, quantizedShapes, type QuantizedValue } from "../quantize/quantized-graph.ts";
import { groupLayouts, type GroupLayout } from "./adapter-layout.ts";
import type { ModelConfig } from "./config.ts";
import { hasBias, linearName, linearShape, weight, type LinearGroup, type LinearModule, type WeightMap } from "./weights.ts";

/** Where weight tensors come from: frozen initializers, or trainable graph inputs. */
export interface WeightSource {
  /**
   * The graph value for a weight of the given graph name; `data` is called at most once. Float32
   * unless `dtype` says otherwise (the uint8 codes of quantized weights).
   */
  tensor(g: GraphBuilder, name: string, shape: number[], data: () => Float32Array | Uint8Array, dtype?: "float32" | "uint8"): Value;
}

/** How adapted modules add ΔW·x to their outputs. */
export interface AdapterPath {
  readonly modules: readonly LinearModule[];
  /**
   * The projections of a group's adapted modules, transposed and side by side ([in, Σ rank]: PiCa's
   * Pᵀ of every adapted module, so x is shrunk by one product for all of them), with each module's
   * rank; null when each module shrinks x itself (LoRA). Ranks known only at run time are one
   * symbolic dim shared by every module, with `sizes`, the int64 vector of the ranks to split by.
   */
  projection(g: GraphBuilder, name: string, layer: number, layout: GroupLayout): { value: Value; ranks: Dim[]; sizes?: Value } | null;
  /** ΔW·x for a module from its slice of the shared shrink (or from x itself when it has none). */
  expand(g: GraphBuilder, name: string, layer: number, module: LinearModule, x: Value, shrunk: Value | null): Value;
}

/** Everything a linear group needs to know about the graph being built. */
export interface LinearContext {
  g: GraphBuilder;
  config: ModelConfig;
  weights: WeightMap;
  dtype: DataType;
  source: WeightSource;
  adapters: AdapterPath | null;
  layouts: GroupLayout[];
  quantization: Quantization | null; // frozen weights held quantized (block-format.ts), or float
  products: QuantizedProducts; // how products with quantized weights multiply
}

/** Group layouts for the modules an adapter path adapts. */
export function linearLayouts(config: ModelConfig, adapters: AdapterPath | null): GroupLayout[] {
  return groupLayouts(config, adapters?.modules ?? []);
}

/** Frozen weights: every tensor is an initializer. */
export function frozenWeights(dtype: DataType): WeightSource {
  return {
    tensor(g, name, shape, data, stored = "float32") {
      const existing = g.values.get(name);
      if (existing !== undefined) return existing;
      const values = data();
      return stored === "uint8" ? g.initializer(name, "uint8", shape, values) : g.initializer(name, dtype, shape, toDtype(values as Float32Array, dtype));
    },
  };
}

/**
 * The linear layers of one group as a single product on their stacked, transposed weights, and
 * the adapted modules' deltas from one shared shrink:
 *
 *   x [b, t, in] ─MatMul([W₁ ⊕ W₂ ⊕ …]ᵀ)─(+bias)─Split─┬─ y₁ ──────────────────────Add─▶ y₁
 *                                                      └─ …                         │
 *   x ─MatMul([P₁ ⊕ P₂ …]ᵀ)─Split─ x P₁ᵀ ─expand(M₁)───────────────────────────────┘
 *
 * With `deferAdd`, a single-module group returns [base, delta] for the caller to Sum.
 */
export function linearGroup(ctx: LinearContext, layer: number, groupName: LinearGroup["name"], x: Value, name: string, deferAdd = false): Value[] {
  const { g, config } = ctx;
  const layout = ctx.layouts.find((l) => l.group.name === groupName)!;
  const { group, outputs, width, adapted } = layout;
  const inputs = linearShape(config, group.modules[0])[1];
  const rows = () => group.modules.map((m) => weight(ctx.weights, linearName(layer, m)).data);
  let y: Value; // [batch, tokens, N]
  if (ctx.quantization === null) {
    const w = ctx.source.tensor(g, `${name}/weight_t`, [inputs, width], () => transposeRows(rows(), width, inputs));
    y = matMul(g, `${name}/MatMul`, x, w);
  } else {
    const w = quantizedWeight(ctx, name, width, inputs, ctx.quantization.linearBits, rows);
    y = quantizedMatMul(g, `${name}/MatMulNBits`, x, w, ctx.products);
  }
  if (group.modules.some((m) => hasBias(config, m))) {
    const bias = ctx.source.tensor(g, `${name}/bias`, [width], () => {
      const data = new Float32Array(width);
      for (const m of group.modules) {
        if (hasBias(config, m)) data.set(weight(ctx.weights, linearName(layer, m, "bias")).data, layout.columnOffset.get(m)!);
      }
      return data;
    });
    y = binary(g, "Add", `${name}/bias/Add`, y, bias);
  }
  const parts = outputs.length === 1 ? [y] : split(g, `${name}/Split`, y, outputs, -1);
  if (adapted.length === 0) return parts;

  const projection = ctx.adapters!.projection(g, name, layer, layout);
  let slices: (Value | null)[] = adapted.map(() => null);
  if (projection !== null) {
    const shrunk = matMul(g, `${name}/shrink/MatMul`, x, projection.value); // [batch, tokens, Σ rank]
    const { ranks, sizes } = projection;
    if (ranks.length === 1) slices = [shrunk];
    else if (sizes !== undefined) slices = splitBySizes(g, `${name}/shrink/Split`, shrunk, sizes, -1, ranks[0]);
    else if (ranks.every((rank) => typeof rank === "number")) slices = split(g, `${name}/shrink/Split`, shrunk, ranks, -1);
    else throw new Error(`${name}: symbolic ranks [${ranks.join(", ")}] need their sizes to split by`);
  }
  const deltas = adapted.map((module, i) => ctx.adapters!.expand(g, `${name}/adapter/${module}`, layer, module, x, slices[i])); // [batch, tokens, out]
  if (deferAdd && outputs.length === 1) return [parts[0], deltas[0]];
  adapted.forEach((module, i) => {
    const at = group.modules.indexOf(module);
    parts[at] = binary(g, "Add", `${name}/adapter/${module}/Add`, parts[at], deltas[i]);
  });
  return parts;
}

/**
 * A frozen weight held quantized, from its float rows ([out, in], several stacked blocks of rows
 * in order): the codes under `${name}/codes` and the scales under `${name}/scales`. The rows are
 * quantized once, when the source first asks for the codes, and dropped once it has the scales.
 */
export function quantizedWeight(ctx: LinearContext, name: string, rows: number, cols: number, bits: WeightBits, values: () => Float32Array[]): QuantizedValue {
  const { blockSize } = ctx.quantization!;
  const shapes = quantizedShapes(rows, cols, bits, blockSize);
  let matrix: QuantizedMatrix | null = null;
  const quantized = () => (matrix ??= quantizeMatrix(values(), rows, cols, bits, blockSize));
  const codes = ctx.source.tensor(ctx.g, `${name}/codes`, shapes.codes, () => quantized().data, "uint8");
  const scales = ctx.source.tensor(ctx.g, `${name}/scales`, shapes.scales, () => {
    const { scales } = quantized();
    matrix = null;
    return scales;
  });
  return { codes, scales, bits, blockSize, rows, cols };
}

/** Stacks row-major [rowsᵢ, cols] blocks and transposes the result to [cols, totalRows]. */
export function transposeRows(blocks: Float32Array[], totalRows: number, cols: number): Float32Array {
  const out = new Float32Array(cols * totalRows);
  let row = 0;
  for (const block of blocks) {
    const count = block.length / cols;
    for (let r = 0; r < count; r++, row++) {
      const offset = r * cols;
      for (let c = 0; c < cols; c++) out[c * totalRows + row] = block[offset + c];
    }
  }
  return out;
}

/** Float32 data in the graph's element type. */
export function toDtype(data: Float32Array, dtype: DataType): Float32Array | Float64Array {
  return dtype === "float64" ? Float64Array.from(data) : data;
}

/**
 * Hugging Face weights from trained graph parameters: stacked groups ([in, N] under
 * `/model/layers.{l}/{block}/{group}/weight_t`) are split per module and transposed back to
 * [out, in]; tensors the graph keeps under their Hugging Face names are copied as they are.
 */
export function weightsFromParameters(config: ModelConfig, parameters: Map<string, Float32Array>): WeightMap {
  const weights: WeightMap = new Map();
  for (const [name, data] of parameters) {
    if (!name.startsWith("/model/layers.")) {
      const shape = name === "model.embed_tokens.weight" || name === "lm_head.weight" ? [config.vocabSize, config.hiddenSize] : [config.hiddenSize];
      weights.set(name, { shape, data: Float32Array.from(data) });
    }
  }
  for (let layer = 0; layer < config.numLayers; layer++) {
    for (const layout of linearLayouts(config, null)) {
      const { group, outputs, width } = layout;
      const prefix = `/model/layers.${layer}/${group.block}/${group.name}`;
      const stacked = parameters.get(`${prefix}/weight_t`);
      if (stacked === undefined) throw new Error(`parameters have no ${prefix}/weight_t`);
      const inputs = linearShape(config, group.modules[0])[1];
      group.modules.forEach((module, i) => {
        const out = outputs[i];
        const column = layout.columnOffset.get(module)!;
        const data = new Float32Array(out * inputs);
        for (let o = 0; o < out; o++) for (let c = 0; c < inputs; c++) data[o * inputs + c] = stacked[c * width + column + o];
        weights.set(linearName(layer, module), { shape: [out, inputs], data });
        const bias = parameters.get(`${prefix}/bias`);
        if (bias !== undefined && hasBias(config, module))
          weights.set(linearName(layer, module, "bias"), { shape: [out], data: bias.slice(column, column + out) });
      });
    }
  }
  return weights;
}
