/**
 * Deterministic random weights for a config: test models and benchmarks need realistic shapes
 * and O(1) activations, not trained values, and must never be downloaded.
 */
import type { ModelConfig } from "./config.ts";
import { expectedWeights, type WeightMap } from "./weights.ts";
import { Rng } from "../random.ts";

/**
 * Every tensor the config expects, drawn from a seeded normal: linear weights with std
 * 1/sqrt(fan_in) (so activations stay O(1) and logits differ visibly), embeddings with std 1,
 * norm weights near 1, biases small.
 */
export function randomWeights(config: ModelConfig, seed: number): WeightMap {
  const rng = new Rng(seed);
  const weights: WeightMap = new Map();
  for (const [name, shape] of expectedWeights(config)) {
    const data = new Float32Array(shape.reduce((p, d) => p * d, 1));
    if (name.endsWith("norm.weight")) {
      for (let i = 0; i < data.length; i++) data[i] = 1 + 0.1 * rng.normal();
    } else if (name.endsWith(".bias")) {
      for (let i = 0; i < data.length; i++) data[i] = 0.1 * rng.normal();
    } else {
      const std = name === "model.embed_tokens.weight" ? 1 : 1 / Math.sqrt(shape[1]);
      for (let i = 0; i < data.length; i++) data[i] = std * rng.normal();
    }
    weights.set(name, { shape, data });
  }
  return weights;
}

/**
 * Initial weights for pre-training, as GPT-2 and transformers do: normal with std 0.02, the
 * projections that write into the residual stream (o_proj, down_proj) scaled by 1/sqrt(2·layers)
 * so the stream's variance does not grow with depth, norm weights 1, biases 0.
 */
export function pretrainingWeights(config: ModelConfig, seed: number): WeightMap {
  const rng = new Rng(seed);
  const weights: WeightMap = new Map();
  const residualScale = 1 / Math.sqrt(2 * config.numLayers);
  for (const [name, shape] of expectedWeights(config)) {
    const data = new Float32Array(shape.reduce((p, d) => p * d, 1));
    if (name.endsWith("norm.weight")) data.fill(1);
    else if (!name.endsWith(".bias")) {
      const std = 0.02 * (name.includes("o_proj") || name.includes("down_proj") ? residualScale : 1);
      for (let i = 0; i < data.length; i++) data[i] = std * rng.normal();
    }
    weights.set(name, { shape, data });
  }
  return weights;
}
