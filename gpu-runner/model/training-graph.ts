/**
 * Training graphs: the decoder without a KV cache, every position's logits, and a per-token
 * weighted cross-entropy. What is trainable is the method's choice:
 *   - PiCa: M per module type (shared by all layers) or per layer and module; P and W frozen;
 *   - LoRA: A and B per layer and module (for comparison); W frozen;
 *   - full: every weight of the model (pre-training the shipped base model).
 * Trainable tensors are graph inputs, so the host owns their values and the optimiser, and one
 * session serves every step. Gradients are appended by the autodiff (graph/autodiff.ts).
 */
import { GraphBuilder, type DataType, type Value } from "../graph/builder.ts";
import { argMax, binary, cast, equal, gemmTransB, matMul, reduceSum, reshape } from "../graph/ops.ts";
import { weightedCrossEntropy } from "../graph/loss.ts";
import { adapterKey, type Basis, type SharingMode } from "../pica/types.ts";
import { Rng } from "../random.ts";
import { stackedProjection } from "./adapter-layout.ts";
import { DEFAULT_QUANTIZED_PRODUCTS, type QuantizedProducts, type Quantization } from "../quantize/block-format.ts";
import type { ModelConfig } from "./config.ts";
import { buildDecoder, quantizedLogits, weightTensor } from "./decoder-graph.ts";
import { frozenWeights, linearLayouts, toDtype, type AdapterPath, type LinearContext, type WeightSource } from "./linear-graph.ts";
import { lmHeadName, linearShape, validateWeights, type LinearModule, type WeightMap } from "./weights.ts";

/** What a training graph trains. */
export type TrainingMethod =
  | { kind: "pica"; basis: Basis; rank: number; sharing: SharingMode; targetModules?: LinearModule[] }
  | { kind: "lora"; rank: number; alpha?: number; targetModules: LinearModule[]; seed: number }
  | { kind: "full" };

/** Inputs and outputs of a training graph. */
export const TRAINING_IO = {
  inputIds: "input_ids", // int64 [batch, tokens]
  positionIds: "position_ids", // int64 [batch, tokens]
  attentionBias: "attention_bias", // float [batch, tokens, tokens]: causal and padding mask
  windowBias: "attention_window_bias", // the same within each sliding window (only when a layer has one)
  labels: "labels", // int64 [batch·tokens]: the next token at each position
  lossWeights: "loss_weights", // float [batch·tokens]: 1 where the position's label is trained on, else 0
  loss: "loss", // float scalar
  tokenAccuracy: "token_accuracy", // float scalar: weighted share of positions whose argmax is the label
} as const;

/** Additive bias for a masked attention position: finite, so a fully masked row gives no NaN. */
export const MASK_VALUE = -1e30;

/** A trainable tensor: a graph input whose value the host feeds and updates. */
export interface TrainableParameter {
  name: string;
  shape: number[];
  initial: Float32Array;
  value: Value;
}

export interface TrainingGraph {
  graph: GraphBuilder;
  loss: Value;
  parameters: TrainableParameter[];
}

/** Builds the forward half of a training graph (the caller appends gradients). */
export function buildTrainingGraph(
  config: ModelConfig,
  weights: WeightMap,
  method: TrainingMethod,
  options: { dtype?: "float32" | "float64"; source?: WeightSource; quantization?: Quantization | null; products?: QuantizedProducts } = {},
): TrainingGraph {
  validateWeights(config, weights);
  const dtype: DataType = options.dtype ?? "float32";
  const g = new GraphBuilder(`train-${method.kind}-${config.numLayers}x${config.hiddenSize}`);
  const inputIds = g.input(TRAINING_IO.inputIds, "int64", ["batch", "tokens"]);
  const positionIds = g.input(TRAINING_IO.positionIds, "int64", ["batch", "tokens"]);
  const attentionBias = g.input(TRAINING_IO.attentionBias, dtype, ["batch", "tokens", "tokens"]);
  const windowBias = config.attentionWindows.some((w) => w !== null) ? g.input(TRAINING_IO.windowBias, dtype, ["batch", "tokens", "tokens"]) : null;
  const labels = g.input(TRAINING_IO.labels, "int64", ["batch_tokens"]);
  const lossWeights = g.input(TRAINING_IO.lossWeights, dtype, ["batch_tokens"]);

  const parameters: TrainableParameter[] = [];
  const declare = (name: string, shape: number[], initial: Float32Array): Value => {
    const existing = g.values.get(name);
    if (existing !== undefined) return existing;
    const value = g.input(name, dtype, shape);
    parameters.push({ name, shape, initial, value });
    return value;
  };
  if (method.kind === "full" && options.source !== undefined) throw new Error("full training makes every weight trainable; it takes no frozen weight source");
  const source: WeightSource =
    method.kind === "full" ? { tensor: (_g, name, shape, data) => declare(name, shape, Float32Array.from(data())) } : (options.source ?? frozenWeights(dtype));
  const adapters = method.kind === "pica" ? picaPath(config, method, dtype, declare) : method.kind === "lora" ? loraPath(config, method, dtype, declare) : null;
  if (method.kind === "full" && options.quantization != null) throw new Error("full training trains every weight in float; it takes no quantized weights");
  const quantization = options.quantization ?? null;
  const products = options.products ?? DEFAULT_QUANTIZED_PRODUCTS;
  const linear: LinearContext = { g, config, weights, dtype, source, adapters, layouts: linearLayouts(config, adapters), quantization, products };

  const normed = buildDecoder(linear, inputIds, positionIds, { kind: "sequence", bias: attentionBias, windowBias }); // [batch, tokens, hidden]
  const flat = reshape(g, "/model/norm/Reshape", normed, [-1, config.hiddenSize], { outShape: ["batch_tokens", config.hiddenSize] });
  const logits = quantization === null ? gemmTransB(g, "/lm_head/Gemm", flat, weightTensor(linear, lmHeadName(config))) : quantizedLogits(linear, flat); // [batch·tokens, vocab]
  const loss = g.output(weightedCrossEntropy(g, "/loss", logits, labels, lossWeights), TRAINING_IO.loss);
  g.output(tokenAccuracy(g, logits, labels, lossWeights), TRAINING_IO.tokenAccuracy);
  return { graph: g, loss, parameters };
}

/** Σ w·[argmax(logits) = label] / Σ w: mean token accuracy over the trained positions (no gradient). */
function tokenAccuracy(g: GraphBuilder, logits: Value, labels: Value, weights: Value): Value {
  const hits = cast(g, "/accuracy/Cast", equal(g, "/accuracy/Equal", argMax(g, "/accuracy/ArgMax", logits, 1), labels), weights.dtype);
  const hitWeight = reduceSum(g, "/accuracy/hits/ReduceSum", binary(g, "Mul", "/accuracy/Mul", hits, weights), [0], false);
  const total = reduceSum(g, "/accuracy/total/ReduceSum", weights, [0], false);
  const floor = g.constFloat(1e-9, weights.dtype as "float32" | "float64");
  return binary(g, "Div", "/accuracy/Div", hitWeight, g.addNode("Max", [total, floor], [{ dtype: weights.dtype, shape: [] }], { name: "/accuracy/Max" })[0]);
}

/** Name of a PiCa parameter (Mᵀ, [rank, out]) in a training graph. */
export function picaParameterName(sharing: SharingMode, module: LinearModule, layer: number): string {
  return `pica.${adapterKey(sharing, module, layer)}.m_t`;
}

/** Names of a LoRA layer's parameters (Aᵀ [in, rank], Bᵀ [rank, out]). */
export function loraParameterNames(layer: number, module: LinearModule): { a: string; b: string } {
  return { a: `lora.${layer}.${module}.a_t`, b: `lora.${layer}.${module}.b_t` };
}

/**
 * PiCa: P[:rank] of a group's modules is a frozen weight of the graph, and ΔW·x = (x Pᵀ) Mᵀ with Mᵀ
 * a trainable input, zero at the start so training begins exactly at the base model. With
 * sharing, all layers read the same input and the autodiff sums their gradients.
 */
function picaPath(
  config: ModelConfig,
  method: Extract<TrainingMethod, { kind: "pica" }>,
  dtype: DataType,
  declare: (name: string, shape: number[], initial: Float32Array) => Value,
): AdapterPath {
  const { basis, rank, sharing } = method;
  if (!Number.isInteger(rank) || rank < 1 || rank > basis.rMax) throw new Error(`PiCa rank must be an integer in [1, ${basis.rMax}], got ${rank}`);
  const modules = method.targetModules ?? basis.targetModules;
  for (const module of modules) {
    if (!basis.targetModules.includes(module)) throw new Error(`module ${module} is not in the basis (${basis.targetModules.join(", ")})`);
  }
  return {
    modules,
    projection(g, name, layer, layout) {
      const inputs = linearShape(config, layout.group.modules[0])[1];
      const columns = rank * layout.adapted.length;
      const value = g.initializer(`${name}/projection_t`, dtype, [inputs, columns], toDtype(stackedProjection(config, basis, rank, layer, layout), dtype));
      return { value, ranks: layout.adapted.map(() => rank) };
    },
    expand(g, name, layer, module, _x, shrunk) {
      const out = linearShape(config, module)[0];
      const m = declare(picaParameterName(sharing, module, layer), [rank, out], new Float32Array(rank * out));
      return matMul(g, `${name}/MatMul`, shrunk!, m);
    },
  };
}

/**
 * LoRA for comparison: ΔW·x = (alpha / r)·(x Aᵀ) Bᵀ with A drawn as PEFT does (kaiming-uniform,
 * bound 1/sqrt(in)) and B zero, so training also starts at the base model.
 */
function loraPath(
  config: ModelConfig,
  method: Extract<TrainingMethod, { kind: "lora" }>,
  dtype: DataType,
  declare: (name: string, shape: number[], initial: Float32Array) => Value,
): AdapterPath {
  const { rank, targetModules } = method;
  if (!Number.isInteger(rank) || rank < 1) throw new Error(`LoRA rank must be a positive integer, got ${rank}`);
  const scale = (method.alpha ?? rank) / rank;
  const rng = new Rng(method.seed);
  return {
    modules: targetModules,
    projection: () => null,
    expand(g, name, layer, module, x) {
      const [out, inputs] = linearShape(config, module);
      const names = loraParameterNames(layer, module);
      const bound = 1 / Math.sqrt(inputs);
      const a = declare(
        names.a,
        [inputs, rank],
        Float32Array.from({ length: inputs * rank }, () => (2 * rng.uniform() - 1) * bound),
      );
      const b = declare(names.b, [rank, out], new Float32Array(rank * out));
      const delta = matMul(g, `${name}/B/MatMul`, matMul(g, `${name}/A/MatMul`, x, a), b);
      if (scale === 1) return delta;
      return binary(g, "Mul", `${name}/scale/Mul`, delta, g.initializer(`${name}/scale`, dtype, [], toDtype(Float32Array.of(scale), dtype)));
    },
  };
}
