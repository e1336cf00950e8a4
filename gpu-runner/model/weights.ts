/**
 * Named access to a Llama-family checkpoint's weights, with every shape checked against the
 * config before any graph is built (a wrong checkpoint fails here, naming the tensor).
 */
import type { ModelConfig } from "./config.ts";
import type { FloatTensor } from "../tensor.ts";
import { ATTENTION_MODULES, LINEAR_MODULES as SHARED_LINEAR_MODULES, type LinearModule, type LinearShapes } from "../../src/protocol/adapter-rank.ts";

export type WeightMap = Map<string, FloatTensor>;

/** The linear modules of a decoder layer, by their Hugging Face names (defined once, in the shared protocol). */
export { ATTENTION_MODULES, MLP_MODULES, type LinearModule } from "../../src/protocol/adapter-rank.ts";
export const LINEAR_MODULES: readonly LinearModule[] = SHARED_LINEAR_MODULES;

/** Hugging Face tensor name of a layer's linear weight (or bias). */
export function linearName(layer: number, module: LinearModule, part: "weight" | "bias" = "weight"): string {
  const block = (ATTENTION_MODULES as readonly string[]).includes(module) ? "self_attn" : "mlp";
  return `model.layers.${layer}.${block}.${module}.${part}`;
}

/** Hugging Face name of a layer's per-head query or key RMSNorm weight (Qwen3). */
export function headNormName(layer: number, norm: "q_norm" | "k_norm"): string {
  return `model.layers.${layer}.self_attn.${norm}.weight`;
}

/** `[out, in]` of a linear module, as PyTorch stores it. */
export function linearShape(config: ModelConfig, module: LinearModule): [number, number] {
  const { hiddenSize, intermediateSize, numHeads, numKvHeads, headDim } = config;
  switch (module) {
    case "q_proj":
      return [numHeads * headDim, hiddenSize];
    case "k_proj":
    case "v_proj":
      return [numKvHeads * headDim, hiddenSize];
    case "o_proj":
      return [hiddenSize, numHeads * headDim];
    case "gate_proj":
    case "up_proj":
      return [intermediateSize, hiddenSize];
    case "down_proj":
      return [hiddenSize, intermediateSize];
  }
}

/** `[out, in]` of every linear module, as the rank rule (src/protocol/adapter-rank.ts) reads them. */
export function linearShapes(config: ModelConfig): LinearShapes {
  return Object.fromEntries(LINEAR_MODULES.map((module) => [module, linearShape(config, module)])) as unknown as LinearShapes;
}

/** Whether a linear module carries a bias in this config. */
export function hasBias(config: ModelConfig, module: LinearModule): boolean {
  if (module === "q_proj" || module === "k_proj" || module === "v_proj") return config.qkvBias;
  if (module === "o_proj") return config.oBias;
  return config.mlpBias;
}

/** Every tensor the model reads, with its expected shape. */
export function expectedWeights(config: ModelConfig): Map<string, number[]> {
  const expected = new Map<string, number[]>();
  expected.set("model.embed_tokens.weight", [config.vocabSize, config.hiddenSize]);
  for (let layer = 0; layer < config.numLayers; layer++) {
    expected.set(`model.layers.${layer}.input_layernorm.weight`, [config.hiddenSize]);
    expected.set(`model.layers.${layer}.post_attention_layernorm.weight`, [config.hiddenSize]);
    if (config.qkNorm) {
      expected.set(headNormName(layer, "q_norm"), [config.headDim]);
      expected.set(headNormName(layer, "k_norm"), [config.headDim]);
    }
    for (const module of LINEAR_MODULES) {
      const shape = linearShape(config, module);
      expected.set(linearName(layer, module), shape);
      if (hasBias(config, module)) expected.set(linearName(layer, module, "bias"), [shape[0]]);
    }
  }
  expected.set("model.norm.weight", [config.hiddenSize]);
  if (!config.tieWordEmbeddings) expected.set("lm_head.weight", [config.vocabSize, config.hiddenSize]);
  return expected;
}

/** Checks that every expected tensor is present with the right shape; names the first that is not. */
export function validateWeights(config: ModelConfig, weights: WeightMap): void {
  for (const [name, shape] of expectedWeights(config)) {
    const tensor = weights.get(name);
    if (tensor === undefined) throw new Error(`checkpoint is missing tensor ${name} (expected shape [${shape.join(", ")}])`);
    if (tensor.shape.length !== shape.length || tensor.shape.some((d, i) => d !== shape[i])) {
      throw new Error(`checkpoint tensor ${name} has shape [${tensor.shape.join(", ")}], expected [${shape.join(", ")}]`);
    }
  }
}

/** Fetches a weight that `validateWeights` has already checked. */
export function weight(weights: WeightMap, name: string): FloatTensor {
  const tensor = weights.get(name);
  if (tensor === undefined) throw new Error(`checkpoint is missing tensor ${name}`);
  return tensor;
}

/** The output projection: `lm_head`, or the embedding when tied (a stored lm_head is then ignored). */
export function lmHeadName(config: ModelConfig): string {
  return config.tieWordEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight";
}

/**
 * Linear layers that read the same input and therefore run as one stacked product: q/k/v,
 * gate/up, and o and down alone. Adapters follow the same grouping.
 */
export interface LinearGroup {
  name: "qkv_proj" | "o_proj" | "gate_up_proj" | "down_proj";
  block: "attn" | "mlp";
  modules: readonly LinearModule[];
}

export const LINEAR_GROUPS: readonly LinearGroup[] = [
  { name: "qkv_proj", block: "attn", modules: ["q_proj", "k_proj", "v_proj"] },
  { name: "o_proj", block: "attn", modules: ["o_proj"] },
  { name: "gate_up_proj", block: "mlp", modules: ["gate_proj", "up_proj"] },
  { name: "down_proj", block: "mlp", modules: ["down_proj"] },
];

/** The group a module runs in. */
export function groupOf(module: LinearModule): LinearGroup {
  return LINEAR_GROUPS.find((group) => group.modules.includes(module))!;
}
