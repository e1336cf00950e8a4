/**
 * Deterministic tiny checkpoints, one per architecture variant the engine must get right, written
 * in the Hugging Face layout (config.json, model.safetensors, tokenizer files) so tests exercise
 * the same loading path as real models. Nothing here is downloaded.
 */
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { writeSafetensorsFile } from "../checkpoint/safetensors.ts";
import { parseModelConfig, type ModelConfig } from "../model/config.ts";
import { randomWeights } from "../model/random-weights.ts";
import type { WeightMap } from "../model/weights.ts";
import { makeByteLevelTokenizerFiles } from "../tokenizer/byte-level.ts";

/** The variants: each stresses one thing the families differ in. */
export const TINY_VARIANTS = [
  "llama-gqa",
  "qwen2-bias",
  "smollm-tied",
  "mistral-head-dim",
  "llama3-rope",
  "qwen3-qk-norm",
  "mistral-sliding",
  "qwen2-window-layers",
] as const;
export type TinyVariant = (typeof TINY_VARIANTS)[number];

const BYTE_VOCABULARY = 259; // 256 bytes + <|endoftext|>, <|im_start|>, <|im_end|>

const BASE = {
  vocab_size: BYTE_VOCABULARY,
  hidden_size: 64,
  intermediate_size: 112,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  rms_norm_eps: 1e-5,
  max_position_embeddings: 512,
  hidden_act: "silu",
  bos_token_id: 256,
  eos_token_id: 258,
  torch_dtype: "float32",
};

/** The raw config.json of a variant. */
export function tinyConfigJson(variant: TinyVariant): Record<string, unknown> {
  switch (variant) {
    case "llama-gqa": // grouped-query attention: 4 query heads share 2 KV heads
      return { ...BASE, architectures: ["LlamaForCausalLM"], model_type: "llama", num_key_value_heads: 2, rope_theta: 10000 };
    case "qwen2-bias": // q/k/v biases, a large rope_theta
      return {
        ...BASE,
        architectures: ["Qwen2ForCausalLM"],
        model_type: "qwen2",
        num_key_value_heads: 2,
        rope_theta: 1000000,
        tie_word_embeddings: false,
        use_sliding_window: false,
      };
    case "smollm-tied": // tied embeddings (a stored lm_head must be ignored), full multi-head attention
      return { ...BASE, architectures: ["LlamaForCausalLM"], model_type: "llama", num_key_value_heads: 4, rope_theta: 100000, tie_word_embeddings: true };
    case "mistral-head-dim": // head_dim ≠ hidden/heads, one KV head
      return {
        ...BASE,
        architectures: ["MistralForCausalLM"],
        model_type: "mistral",
        num_key_value_heads: 1,
        head_dim: 24,
        rope_theta: 10000,
        sliding_window: null,
      };
    case "llama3-rope": // transformers 5 style rope_parameters with llama3 frequency scaling
      return {
        ...BASE,
        architectures: ["LlamaForCausalLM"],
        model_type: "llama",
        num_key_value_heads: 2,
        rope_parameters: { rope_type: "llama3", rope_theta: 500000, factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 },
      };
    case "qwen3-qk-norm": // per-head RMSNorm of q and k before RoPE, an explicit head_dim ≠ hidden/heads, no biases
      return {
        ...BASE,
        architectures: ["Qwen3ForCausalLM"],
        model_type: "qwen3",
        num_key_value_heads: 2,
        head_dim: 24,
        rope_theta: 1000000,
        tie_word_embeddings: true,
        attention_bias: false,
      };
    case "mistral-sliding": // every layer attends to the last 5 positions only
      return { ...BASE, architectures: ["MistralForCausalLM"], model_type: "mistral", num_key_value_heads: 2, rope_theta: 10000, sliding_window: 5 };
    case "qwen2-window-layers": // use_sliding_window with max_window_layers 1: layer 0 sees everything, layer 1 the last 4 positions
      return { ...tinyConfigJson("qwen2-bias"), use_sliding_window: true, sliding_window: 4, max_window_layers: 1 };
  }
}

/** A variant's parsed config and deterministic weights, in memory. */
export function tinyModel(variant: TinyVariant, seed = 7): { config: ModelConfig; weights: WeightMap } {
  const config = parseModelConfig(tinyConfigJson(variant));
  const weights = randomWeights(config, seed);
  if (config.tieWordEmbeddings) {
    // A stale lm_head next to tied embeddings: transformers ignores it, and so must we.
    const embed = weights.get("model.embed_tokens.weight")!;
    weights.set("lm_head.weight", { shape: embed.shape, data: embed.data.map((v) => -v) });
  }
  return { config, weights };
}

/** Writes a variant as a Hugging Face checkpoint directory. */
export async function writeTinyCheckpoint(directory: string, variant: TinyVariant, seed = 7): Promise<void> {
  await mkdir(directory, { recursive: true });
  const { weights } = tinyModel(variant, seed);
  const { tokenizerJson, tokenizerConfig } = makeByteLevelTokenizerFiles();
  await writeFile(join(directory, "config.json"), JSON.stringify(tinyConfigJson(variant), null, 2));
  await writeSafetensorsFile(join(directory, "model.safetensors"), weights, { format: "pt" });
  await writeFile(join(directory, "tokenizer.json"), JSON.stringify(tokenizerJson));
  await writeFile(join(directory, "tokenizer_config.json"), JSON.stringify(tokenizerConfig, null, 2));
}
