/**
 * The Llama-family decoder as one ONNX inference graph, for prefill and decode alike.
 *
 * One session serves every batch size, prompt length and cache length (the dims are symbolic),
 * so the weights live in memory once. Each run takes `tokens` new tokens per row and the rows'
 * cached keys/values from earlier runs (`past` slots, possibly 0), and returns the new tokens'
 * keys/values for the host to append. The past cache is only read, never concatenated, so a
 * decode step does not copy the cache: attention scores against past and new keys are computed
 * separately and joined before the softmax.
 *
 * Linear layers that share an input run as one MatMul on their stacked, transposed weights
 * (q/k/v, gate/up). With PiCa adapters, each group's stack also holds the projections P of its
 * targeted modules, so the shrink x Pᵀ costs no extra pass over x and is computed once for all
 * rows; only the small expand by each row's own M differs per row (see adapter-layout.ts).
 */
import { GraphBuilder, type DataType, type Value } from "../graph/builder.ts";
import { gather, gemmTransB, matMul, reshape } from "../graph/ops.ts";
import { adapterInputName, type AdapterGraphSpec } from "./adapter-layout.ts";
import type { ModelConfig } from "./config.ts";
import { buildDecoder, weightTensor, type LayerCache } from "./decoder-graph.ts";
import { frozenWeights, linearLayouts, type AdapterPath, type LinearContext } from "./linear-graph.ts";
import { lmHeadName, linearShape, validateWeights, type WeightMap } from "./weights.ts";

/** Names of the graph's inputs and outputs: the contract with the session wrapper. */
export const LLAMA_IO = {
  inputIds: "input_ids", // int64 [batch, tokens]
  positionIds: "position_ids", // int64 [batch, tokens]
  attentionBias: "attention_bias", // float [batch, tokens, context]: 0 where allowed, MASK_VALUE elsewhere
  logitsRows: "logits_rows", // int64 [rows]: flat indices into batch·tokens whose logits are wanted
  pastKey: (layer: number) => `past.${layer}.key_t`, // float [batch, kv_heads, head_dim, past]
  pastValue: (layer: number) => `past.${layer}.value`, // float [batch, kv_heads, past, head_dim]
  logits: "logits", // float [rows, vocab]
  presentKey: (layer: number) => `present.${layer}.key_t`, // float [batch, kv_heads, head_dim, tokens]
  presentValue: (layer: number) => `present.${layer}.value`, // float [batch, kv_heads, tokens, head_dim]
} as const;

/** Additive bias for a masked attention position: finite, so a fully masked row gives no NaN. */
export const MASK_VALUE = -1e30;

export interface LlamaGraphOptions {
  dtype?: "float32" | "float64";
  adapters?: AdapterGraphSpec; // absent: a base-only graph without adapter inputs
}

/** Builds the inference graph from a config and validated weights. */
export function buildLlamaGraph(config: ModelConfig, weights: WeightMap, options: LlamaGraphOptions = {}): GraphBuilder {
  validateWeights(config, weights);
  const dtype: DataType = options.dtype ?? "float32";
  const g = new GraphBuilder(`llama-${config.numLayers}x${config.hiddenSize}`);
  const { numKvHeads, headDim } = config;

  const inputIds = g.input(LLAMA_IO.inputIds, "int64", ["batch", "tokens"]);
  const positionIds = g.input(LLAMA_IO.positionIds, "int64", ["batch", "tokens"]);
  const attentionBias = g.input(LLAMA_IO.attentionBias, dtype, ["batch", "tokens", "context"]);
  const logitsRows = g.input(LLAMA_IO.logitsRows, "int64", ["rows"]);
  const caches: LayerCache[] = [];
  for (let layer = 0; layer < config.numLayers; layer++) {
    caches.push({
      pastKey: g.input(LLAMA_IO.pastKey(layer), dtype, ["batch", numKvHeads, headDim, "past"]),
      pastValue: g.input(LLAMA_IO.pastValue(layer), dtype, ["batch", numKvHeads, "past", headDim]),
      onPresent(keyT, value) {
        g.output(keyT, LLAMA_IO.presentKey(layer));
        g.output(value, LLAMA_IO.presentValue(layer));
      },
    });
  }
  const adapters = options.adapters === undefined ? null : perRowAdapters(config, dtype, options.adapters);
  const linear: LinearContext = { g, config, weights, dtype, source: frozenWeights(dtype), adapters, layouts: linearLayouts(config, adapters) };

  const normed = buildDecoder(linear, inputIds, positionIds, attentionBias, caches); // [batch, tokens, hidden]
  const flat = reshape(g, "/model/norm/Reshape", normed, [-1, config.hiddenSize], { outShape: ["batch_tokens", config.hiddenSize] });
  // Only the requested rows reach the vocabulary projection: [rows, hidden] → [rows, vocab]
  const selected = gather(g, "/model/logits_rows/Gather", flat, logitsRows);
  const logits = gemmTransB(g, "/lm_head/Gemm", selected, weightTensor(linear, lmHeadName(config)));
  g.output(logits, LLAMA_IO.logits);
  return g;
}

/**
 * Serving adapters: P[:rank] rides in the stacked products, and each layer takes one input per
 * adapted module, [batch, rank, out], holding every row's own Mᵀ (adapter-layout.ts).
 */
function perRowAdapters(config: ModelConfig, dtype: DataType, spec: AdapterGraphSpec): AdapterPath {
  return {
    modules: spec.targetModules,
    stackedShrink: (layer, module) => spec.projection(layer, module),
    expand(g, name, layer, module, _x, shrunk) {
      const inputName = adapterInputName(layer, module);
      const input: Value = g.values.get(inputName) ?? g.input(inputName, dtype, ["batch", spec.rank, linearShape(config, module)[0]]);
      return matMul(g, `${name}/MatMul`, shrunk!, input);
    },
  };
}
