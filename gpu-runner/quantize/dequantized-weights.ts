/**
 * The float weights a quantized model stands for: every tensor the graphs hold quantized (the
 * linear modules at the linear bits; the embedding and an untied lm_head at the embedding bits)
 * replaced by its dequantised values, the rest as it is. The reference forward on these weights is
 * what a quantized engine must compute; a llama.cpp file of the same blocks holds the same values.
 */
import type { ModelConfig } from "../model/config.ts";
import { LINEAR_MODULES, linearName, type WeightMap } from "../model/weights.ts";
import { dequantizeMatrix, quantizeMatrix, type Quantization, type WeightBits } from "./block-format.ts";

/** The bits a checkpoint tensor is held at under `quantization`, or null when it stays float. */
export function quantizedBits(config: ModelConfig, name: string, quantization: Quantization): WeightBits | null {
  if (name === "model.embed_tokens.weight" || (name === "lm_head.weight" && !config.tieWordEmbeddings)) return quantization.embeddingBits;
  for (let layer = 0; layer < config.numLayers; layer++) {
    if (LINEAR_MODULES.some((module) => linearName(layer, module) === name)) return quantization.linearBits;
  }
  return null;
}

/** `weights` with every quantized tensor replaced by its dequantised values. */
export function dequantizedWeights(config: ModelConfig, weights: WeightMap, quantization: Quantization): WeightMap {
  const out: WeightMap = new Map();
  for (const [name, tensor] of weights) {
    const bits = quantizedBits(config, name, quantization);
    if (bits === null || tensor.shape.length !== 2) {
      out.set(name, tensor);
      continue;
    }
    const [rows, cols] = tensor.shape;
    out.set(name, { shape: [rows, cols], data: dequantizeMatrix(quantizeMatrix(tensor.data, rows, cols, bits, quantization.blockSize)) });
  }
  return out;
}
