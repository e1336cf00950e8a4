// The stop ids a checkpoint lists in generation_config.json. Chat checkpoints often name only the
// document end in tokenizer_config.json (Llama 3.1 Instruct: <|eot_id|>) and list every id that
// ends a reply here (128001, 128008, 128009); transformers' generate() stops on all of them, so
// the runner must as well.
import { readFile } from "node:fs/promises";
import { join } from "node:path";

/** The file name transformers saves a checkpoint's default generation settings under. */
export const GENERATION_CONFIG_FILE = "generation_config.json";

/**
 * The `eos_token_id` of a parsed generation_config.json: an id or a list of ids, deduplicated in
 * their order; [] when the field is absent or null. `source` names the file in errors.
 */
export function parseGenerationEosTokenIds(generationConfig: unknown, source: string = GENERATION_CONFIG_FILE): number[] {
  if (typeof generationConfig !== "object" || generationConfig === null || Array.isArray(generationConfig)) {
    throw new Error(`${source} must be a JSON object, got ${describe(generationConfig)}`);
  }
  const value = (generationConfig as Record<string, unknown>).eos_token_id;
  if (value === undefined || value === null) return [];
  if (isTokenId(value)) return [value];
  if (!Array.isArray(value)) {
    throw new Error(`${source}: eos_token_id must be a token id (an integer ≥ 0) or a list of them, got ${describe(value)}`);
  }
  value.forEach((entry, index) => {
    if (!isTokenId(entry)) {
      throw new Error(`${source}: eos_token_id[${index}] must be a token id (an integer ≥ 0), got ${describe(entry)}`);
    }
  });
  return [...new Set(value as number[])];
}

/** Reads `eos_token_id` from `directory`/generation_config.json; [] when the file does not exist. */
export async function readGenerationEosTokenIds(directory: string): Promise<number[]> {
  const path = join(directory, GENERATION_CONFIG_FILE);
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw new Error(`cannot read ${path}: ${(error as Error).message}`, { cause: error });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new Error(`${path} is not valid JSON: ${(error as Error).message}`, { cause: error });
  }
  return parseGenerationEosTokenIds(parsed, path);
}

function isTokenId(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

function describe(value: unknown): string {
  return value === undefined ? "undefined" : JSON.stringify(value);
}
