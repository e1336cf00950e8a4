/**
 * Loads a Hugging Face checkpoint directory: `config.json`, `*.safetensors` (single or sharded),
 * `tokenizer.json` and `tokenizer_config.json`.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { readCheckpointTensorsLazily } from "../checkpoint/lazy-tensors.ts";
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

/** How {@link loadCheckpoint} reads the weights. */
export interface LoadCheckpointOptions {
  /**
   * Read and validate only the safetensors headers now; each weight's `data` is read from disk
   * (and widened to float32) when accessed, so a multi-gigabyte model is never all in memory.
   */
  lazy?: boolean;
}

/** Reads and validates config.json, the weights and the tokenizer of `directory`. */
export async function loadCheckpoint(directory: string, options: LoadCheckpointOptions = {}): Promise<Checkpoint> {
  const config = await readModelConfig(directory);
  const weights: WeightMap = options.lazy === true ? await readCheckpointTensorsLazily(directory) : await readEagerly(directory);
  validateWeights(config, weights);
  const tokenizer = await loadTokenizer(directory);
  if (tokenizer.vocabSize > config.vocabSize) {
    throw new Error(`${directory}: tokenizer has ${tokenizer.vocabSize} ids but the model's vocab_size is ${config.vocabSize}`);
  }
  return { directory, config, weights, tokenizer };
}

async function readEagerly(directory: string): Promise<WeightMap> {
  const weights: WeightMap = new Map();
  for (const [name, tensor] of await readCheckpointTensors(directory)) {
    // Integer buffers (e.g. rotary position tables some exporters add) are not weights we read.
    if (tensor.dtype === "F32" || tensor.dtype === "F16" || tensor.dtype === "BF16") {
      weights.set(name, { shape: tensor.shape, data: tensor.data });
    }
  }
  return weights;
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
