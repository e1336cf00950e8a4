/**
 * The Llama-family decoder as one ONNX inference graph, for prefill and decode alike.
 *
 * One session serves every batch size, prompt length and cache capacity (the dims are symbolic),
 * so the weights live in memory once. Each run takes `tokens` new tokens per row and the rows'
 * KV cache, in one of two places:
 *   - on the host (CPU provider): the cache is fed as the host holds it, [batch, kv_heads,
 *     head_dim, capacity] keys (transposed) and [batch, kv_heads, capacity, head_dim] values; the
 *     CPU provider reads those buffers where they lie, the graph attends to them without
 *     concatenating, and only the new tokens' keys and values come back, so a decode step copies
 *     neither the cache in nor out. (onnxruntime's GroupQueryAttention can update a shared
 *     past/present buffer in place, but onnxruntime-node copies every fetched output into a fresh
 *     JavaScript buffer, which for a whole-cache present output costs far more than the step.)
 *   - on the device (WebGPU): GroupQueryAttention reads the device-resident cache and returns the
 *     updated cache, which stays on the device as the next step's past.
 *
 * Linear layers that share an input run as one MatMul on their stacked, transposed weights
 * (q/k/v, gate/up). With PiCa adapters, the shrink x Pᵀ of a group's targeted modules is one more
 * product, computed once for all rows; only the small expand by each row's own M differs per row
 * (see adapter-layout.ts).
 */
import { GraphBuilder, type DataType, type Value } from "../graph/builder.ts";
import { concat, gather, gemmTransB, matMul, reshape, transpose } from "../graph/ops.ts";
import { ADAPTER_RANK_DIM, adapterInputName, projectionColumnsDim, projectionInputName, type AdapterGraphSpec } from "./adapter-layout.ts";
import { DEFAULT_QUANTIZED_PRODUCTS, type QuantizedProducts, type Quantization } from "../quantize/block-format.ts";
import type { ModelConfig } from "./config.ts";
import { buildDecoder, quantizedLogits, weightTensor, type AttentionInputs } from "./decoder-graph.ts";
import { frozenWeights, linearLayouts, type AdapterPath, type LinearContext, type WeightSource } from "./linear-graph.ts";
import { lmHeadName, linearShape, validateWeights, type LinearModule, type WeightMap } from "./weights.ts";

/** Where the KV cache lives: host buffers fed as they lie (CPU), or device buffers (WebGPU). */
export type CachePlacement = "host" | "device";

/** Names of the graph's inputs and outputs: the contract with the engine. */
export const LLAMA_IO = {
  inputIds: "input_ids", // int64 [batch, tokens]
  positionIds: "position_ids", // int64 [batch, tokens]: each token's position in its sequence
  logitsRows: "logits_rows", // int64 [rows]: flat indices into batch·tokens whose logits are wanted
  logits: "logits", // float [rows, vocab]
  // host cache
  attentionBias: "attention_bias", // float [batch, tokens, capacity + tokens]: 0 where allowed, MASK_VALUE elsewhere
  windowBias: "attention_window_bias", // the same within each sliding window (only when a layer has one)
  pastKeyT: (layer: number) => `past.${layer}.key_t`, // float [batch, kv_heads, head_dim, capacity]
  pastValueT: (layer: number) => `past.${layer}.value_t`, // float [batch, kv_heads, head_dim, capacity]
  newKeyT: (layer: number) => `new.${layer}.key_t`, // float [batch, kv_heads, head_dim, tokens]
  newValueT: (layer: number) => `new.${layer}.value_t`, // float [batch, kv_heads, head_dim, tokens]
  // device cache
  seqlensK: "seqlens_k", // int32 [batch]: cached + new tokens of each row, minus one
  totalSequenceLength: "total_sequence_length", // int32 []: the largest cached + new of the batch
  deviceKey: (layer: number) => `past_key_values.${layer}.key`, // float [batch, kv_heads, capacity, head_dim]
  deviceValue: (layer: number) => `past_key_values.${layer}.value`,
  presentKey: (layer: number) => `present.${layer}.key`, // the updated cache, same shape
  presentValue: (layer: number) => `present.${layer}.value`,
} as const;

export interface LlamaGraphOptions {
  adapters?: AdapterGraphSpec; // absent: a base-only graph without adapter inputs
  cache?: CachePlacement; // default "host"
  source?: WeightSource; // where frozen tensors come from; default: initializers holding `weights`' data
  quantization?: Quantization | null; // frozen weights held quantized (block-format.ts); default: float32
  products?: QuantizedProducts; // how products with quantized weights multiply; default DEFAULT_QUANTIZED_PRODUCTS
}

/** Builds the inference graph from a config and validated weights. */
export function buildLlamaGraph(config: ModelConfig, weights: WeightMap, options: LlamaGraphOptions = {}): GraphBuilder {
  validateWeights(config, weights);
  const dtype: DataType = "float32";
  const g = new GraphBuilder(`llama-${config.numLayers}x${config.hiddenSize}`);

  const inputIds = g.input(LLAMA_IO.inputIds, "int64", ["batch", "tokens"]);
  const positionIds = g.input(LLAMA_IO.positionIds, "int64", ["batch", "tokens"]);
  const logitsRows = g.input(LLAMA_IO.logitsRows, "int64", ["rows"]);
  const attention = options.cache === "device" ? deviceCache(g, config) : hostCache(g, config);
  const adapters = options.adapters === undefined ? null : perRowAdapters(config, dtype, options.adapters);
  const linear: LinearContext = {
    g,
    config,
    weights,
    dtype,
    source: options.source ?? frozenWeights(dtype),
    adapters,
    layouts: linearLayouts(config, adapters),
    quantization: options.quantization ?? null,
    products: options.products ?? DEFAULT_QUANTIZED_PRODUCTS,
  };

  const normed = buildDecoder(linear, inputIds, positionIds, attention); // [batch, tokens, hidden]
  const flat = reshape(g, "/model/norm/Reshape", normed, [-1, config.hiddenSize], { outShape: ["batch_tokens", config.hiddenSize] });
  // Only the requested rows reach the vocabulary projection: [rows, hidden] → [rows, vocab]
  const selected = gather(g, "/model/logits_rows/Gather", flat, logitsRows);
  const logits =
    linear.quantization !== null
      ? quantizedLogits(linear, selected)
      : config.tieWordEmbeddings
        ? tiedLogits(g, weightTensor(linear, lmHeadName(config)), selected)
        : gemmTransB(g, "/lm_head/Gemm", selected, weightTensor(linear, lmHeadName(config)));
  g.output(logits, LLAMA_IO.logits);
  return g;
}

/**
 * Logits from tied embeddings E [vocab, hidden] with E on the left: (E · xᵀ)ᵀ. The embedding Gather
 * needs E as it is, and a CPU product repacks its right operand into a private copy, so E on the
 * right would hold the largest tensor of the model twice; on the left it is streamed as it lies.
 *
 *   x [rows, hidden] ─Transpose─ xᵀ ─MatMul(E, ·)─ [vocab, rows] ─Transpose─ [rows, vocab]
 */
function tiedLogits(g: GraphBuilder, embedding: Value, x: Value): Value {
  const xT = transpose(g, "/lm_head/input/Transpose", x, [1, 0]); // [hidden, rows]
  return transpose(g, "/lm_head/Transpose", matMul(g, "/lm_head/MatMul", embedding, xT), [1, 0]); // [rows, vocab]
}

/** Inputs and outputs of a cache the host owns: masks, the cache as it lies, the new tokens' keys and values. */
function hostCache(g: GraphBuilder, config: ModelConfig): AttentionInputs {
  const { numKvHeads, headDim } = config;
  const bias = g.input(LLAMA_IO.attentionBias, "float32", ["batch", "tokens", "context"]);
  const windowBias = config.attentionWindows.some((w) => w !== null) ? g.input(LLAMA_IO.windowBias, "float32", ["batch", "tokens", "context"]) : null;
  const pasts = Array.from({ length: config.numLayers }, (_, layer) => ({
    keyT: g.input(LLAMA_IO.pastKeyT(layer), "float32", ["batch", numKvHeads, headDim, "capacity"]),
    valueT: g.input(LLAMA_IO.pastValueT(layer), "float32", ["batch", numKvHeads, headDim, "capacity"]),
  }));
  return {
    kind: "hostCache",
    bias,
    windowBias,
    past: (layer) => pasts[layer],
    onNew(layer, keyT, valueT) {
      g.output(keyT, LLAMA_IO.newKeyT(layer));
      g.output(valueT, LLAMA_IO.newValueT(layer));
    },
  };
}

/** Inputs and outputs of a cache on the device: lengths, the cache, and the updated cache. */
function deviceCache(g: GraphBuilder, config: ModelConfig): AttentionInputs {
  const { numKvHeads, headDim } = config;
  const seqlensK = g.input(LLAMA_IO.seqlensK, "int32", ["batch"]);
  const totalSequenceLength = g.input(LLAMA_IO.totalSequenceLength, "int32", []);
  const shape = ["batch", numKvHeads, "capacity", headDim];
  const pasts = Array.from({ length: config.numLayers }, (_, layer) => ({
    key: g.input(LLAMA_IO.deviceKey(layer), "float32", shape),
    value: g.input(LLAMA_IO.deviceValue(layer), "float32", shape),
  }));
  return {
    kind: "deviceCache",
    seqlensK,
    totalSequenceLength,
    past: (layer) => pasts[layer],
    onPresent(layer, key, value) {
      g.output(key, LLAMA_IO.presentKey(layer));
      g.output(value, LLAMA_IO.presentValue(layer));
    },
  };
}

/**
 * Serving adapters: each group's projections are an input ([in, modules · rank], the same for
 * every row), and each layer takes one input per adapted module, [batch, rank, out], holding
 * every row's own Mᵀ (adapter-layout.ts). The rank is symbolic: each run feeds its own, read once
 * from the first adapter input's shape to split each group's shrink by.
 *
 *   adapter.layers.0.{first module} ─Shape(start 1, end 2)─ [rank] ─Concat(×2, ×3)─ split sizes
 */
function perRowAdapters(config: ModelConfig, dtype: DataType, spec: AdapterGraphSpec): AdapterPath {
  const adapterInput = (g: GraphBuilder, layer: number, module: LinearModule): Value => {
    const name = adapterInputName(layer, module);
    return g.values.get(name) ?? g.input(name, dtype, ["batch", ADAPTER_RANK_DIM, linearShape(config, module)[0]]);
  };
  let rank: Value | null = null; // int64 [1]
  const splitSizes = new Map<number, Value>();
  const sizesFor = (g: GraphBuilder, parts: number): Value => {
    rank ??= g.addNode("Shape", [adapterInput(g, 0, spec.targetModules[0])], [{ dtype: "int64", shape: [1] }], {
      name: "/model/adapters/rank/Shape",
      attributes: { start: 1, end: 2 },
    })[0];
    let sizes = splitSizes.get(parts);
    if (sizes === undefined) {
      sizes = concat(
        g,
        `/model/adapters/rank/Concat_${parts}`,
        Array.from({ length: parts }, () => rank!),
        0,
        parts,
      );
      splitSizes.set(parts, sizes);
    }
    return sizes;
  };
  return {
    modules: spec.targetModules,
    projection(g, _name, layer, layout) {
      const inputs = linearShape(config, layout.group.modules[0])[1];
      const value = g.input(projectionInputName(layer, layout.group.name), dtype, [inputs, projectionColumnsDim(layout)]);
      const ranks = layout.adapted.map(() => ADAPTER_RANK_DIM);
      return ranks.length === 1 ? { value, ranks } : { value, ranks, sizes: sizesFor(g, ranks.length) };
    },
    expand(g, name, layer, module, _x, shrunk) {
      return matMul(g, `${name}/MatMul`, shrunk!, adapterInput(g, layer, module));
    },
  };
}
