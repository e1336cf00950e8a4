/**
 * Loads a Hugging Face checkpoint directory: `config.json`, `*.safetensors` (single or sharded),
 * `tokenizer.json` and `tokenizer_config.json`.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { readCheckpointTensors } from "../checkpoint/safetensors.ts";
import { loadTokenizer, type TextTokenizer } from "../tokenizer/tokenizer.ts";
import { parseModelConfig, type ModelConfig } from "./config.ts";
import { validateWeights, type WeightMap } from "./weights.ts";

/** A model ready to build graphs from. */
export interface Checkpoint {
  directory: string;
  config: ModelConfig;
  weights: WeightMap;
  tokenizer: TextTokenizer;
}

/** Reads and validates config.json, the weights and the tokenizer of `directory`. */
export async function loadCheckpoint(directory: string): Promise<Checkpoint> {
  const config = await readModelConfig(directory);
  const stored = await readCheckpointTensors(directory);
  const weights: WeightMap = new Map();
  for (const [name, tensor] of stored) {
    // Integer buffers (e.g. rotary position tables some exporters add) are not weights we read.
    if (tensor.dtype === "F32" || tensor.dtype === "F16" || tensor.dtype === "BF16") {
      weights.set(name, { shape: tensor.shape, data: tensor.data });
    }
  }
  validateWeights(config, weights);
  const tokenizer = await loadTokenizer(directory);
  if (tokenizer.vocabSize > config.vocabSize) {
    throw new Error(`${directory}: tokenizer has ${tokenizer.vocabSize} ids but the model's vocab_size is ${config.vocabSize}`);
  }
  return { directory, config, weights, tokenizer };
}

/** Reads `config.json` into a ModelConfig, naming the file on any error. */
export async function readModelConfig(directory: string): Promise<ModelConfig> {
  const path = join(directory, "config.json");
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    throw new Error(`cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new Error(`${path} is not valid JSON: ${(error as Error).message}`);
  }
  try {
    return parseModelConfig(raw);
  } catch (error) {
    throw new Error(`${path}: ${(error as Error).message.replace(/^config\.json: /, "")}`);
  }
}
