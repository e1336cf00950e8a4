// The one text tokenizer of the runner: a Hugging Face tokenizer directory (tokenizer.json, plus
// tokenizer_config.json, and optionally chat_template.jinja and generation_config.json) behind a
// small camelCase API. The tokenization itself is @huggingface/tokenizers and the chat template
// @huggingface/jinja; this module only reads the files, normalises the config the way transformers
// does, and works out the stop ids.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";
import { Template } from "@huggingface/jinja";
import { readGenerationEosTokenIds } from "./generation-config.ts";

/** One chat turn as the templates of real checkpoints expect it. */
export interface ChatMessage {
  role: string;
  content: string;
  /** An assistant turn's calls, as transformers passes them: arguments parsed into objects. */
  tool_calls?: { type: "function"; function: { name: string; arguments: unknown } }[];
  /** The call a `tool` turn answers. */
  tool_call_id?: string;
  name?: string;
}

/** Options of {@link TextTokenizer.applyChatTemplate}. */
export interface ChatTemplateOptions {
  addGenerationPrompt: boolean;
  /** Functions the model may call, as transformers passes `tools` (JSON schemas under `function`). */
  tools?: readonly { type: "function"; function: { name: string; description?: string; parameters: unknown } }[];
}

/** Options of {@link TextTokenizer.encode}. */
export interface EncodeOptions {
  /** Let the tokenizer's post-processor add bos/eos (Llama 3 adds bos); true as in transformers. */
  addSpecialTokens?: boolean;
}

/** Options of {@link TextTokenizer.decode}. */
export interface DecodeOptions {
  /** Drop special tokens such as `<|im_end|>` from the text. */
  skipSpecialTokens?: boolean;
  /** Apply transformers' " ." -> "." clean-up; defaults to the config's clean_up_tokenization_spaces. */
  cleanUpTokenizationSpaces?: boolean;
}

type JsonObject = Record<string, unknown>;

// The part of @huggingface/tokenizers' Tokenizer used here. Its published .d.ts files import each
// other without file extensions, which NodeNext resolution rejects, so the class arrives as `any`;
// this interface restores type checking at the one place the library is called.
interface LibraryTokenizer {
  encode(text: string, options: { add_special_tokens: boolean }): { ids: number[] };
  decode(ids: number[], options: { skip_special_tokens: boolean; clean_up_tokenization_spaces: boolean }): string;
  token_to_id(token: string): number | undefined;
  id_to_token(id: number): string | undefined;
  get_vocab(withAddedTokens: boolean): Map<string, number>;
  get_added_tokens_decoder(): Map<number, { content: string; special: boolean }>;
}

// Special-token names of tokenizer_config.json that transformers exposes to chat templates.
const SPECIAL_TOKEN_KEYS = ["bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token"];

/** A Hugging Face tokenizer (tokenizer.json + tokenizer_config.json) with its chat template. */
export class TextTokenizer {
  /** Number of ids the embedding must cover: largest id (vocabulary or added token) + 1. */
  readonly vocabSize: number;
  /**
   * Ids that end generation, without repeats: generation_config.json's eos_token_id, then the
   * config's eos_token, then the chat template's end-of-turn token.
   */
  readonly eosTokenIds: number[];
  /** Id of the config's eos_token (what transformers calls eos_token_id), or null when it has none. */
  readonly eosTokenId: number | null;
  /** Id of the config's bos_token, or null when it has none. */
  readonly bosTokenId: number | null;
  /** Id of the config's pad_token, or null when it has none. */
  readonly padTokenId: number | null;
  /** The Jinja chat template, or null when the tokenizer has none. */
  readonly chatTemplate: string | null;
  /** Whether the chat template renders `tools` (transformers' convention for function calling). */
  readonly templateTakesTools: boolean;

  readonly #tokenizer: LibraryTokenizer;
  readonly #specialTokens: Record<string, string>;
  readonly #cleanUpTokenizationSpaces: boolean;
  #compiledTemplate: Template | null = null;

  private constructor(tokenizerJson: JsonObject, tokenizerConfig: JsonObject, chatTemplate: string | null, generationEosTokenIds: readonly number[]) {
    this.#specialTokens = {};
    for (const key of SPECIAL_TOKEN_KEYS) {
      const content = tokenContent(tokenizerConfig[key]);
      if (content !== null) this.#specialTokens[key] = content;
    }
    // transformers has defaulted clean_up_tokenization_spaces to false since 4.45; the JS library
    // still defaults to true, which would break byte-exact round trips of configs that omit it.
    this.#cleanUpTokenizationSpaces = tokenizerConfig.clean_up_tokenization_spaces === true;
    // The JS library reads special tokens as plain strings, while real configs often hold
    // AddedToken objects ({content, lstrip, ...}); hand it the strings.
    const libraryConfig: JsonObject = {
      ...tokenizerConfig,
      ...this.#specialTokens,
      clean_up_tokenization_spaces: this.#cleanUpTokenizationSpaces,
      additional_special_tokens: asArray(tokenizerConfig.additional_special_tokens)
        .map(tokenContent)
        .filter((content): content is string => content !== null),
    };
    // It also iterates added_tokens unconditionally, so a file without the key needs an empty list.
    this.#tokenizer = new Tokenizer({ added_tokens: [], ...tokenizerJson }, libraryConfig) as LibraryTokenizer;

    let largestId = -1;
    for (const id of this.#tokenizer.get_vocab(true).values()) largestId = Math.max(largestId, id);
    this.vocabSize = largestId + 1;
    this.chatTemplate = chatTemplate ?? pickChatTemplate(tokenizerConfig.chat_template);
    this.templateTakesTools = this.chatTemplate !== null && /\btools\b/.test(this.chatTemplate);
    this.bosTokenId = this.#idOf(this.#specialTokens.bos_token);
    this.padTokenId = this.#idOf(this.#specialTokens.pad_token);
    this.eosTokenId = this.#idOf(this.#specialTokens.eos_token);

    // A stop id the tokenizer cannot produce means the files belong to different checkpoints.
    for (const id of generationEosTokenIds) {
      if (this.idToToken(id) === null) {
        throw new Error(`generation_config.json: eos_token_id ${id} is not a token of this tokenizer (ids [0, ${this.vocabSize}))`);
      }
    }
    const eosIds = new Set<number>(generationEosTokenIds);
    if (this.eosTokenId !== null) eosIds.add(this.eosTokenId);
    const endOfTurnId = this.#findEndOfTurnTokenId();
    if (endOfTurnId !== null) eosIds.add(endOfTurnId);
    this.eosTokenIds = [...eosIds];
  }

  /** Builds a tokenizer from parsed tokenizer.json and tokenizer_config.json objects, plus generation_config.json's eos ids. */
  static fromJson(
    tokenizerJson: object,
    tokenizerConfig: object | null = null,
    chatTemplate: string | null = null,
    generationEosTokenIds: readonly number[] = [],
  ): TextTokenizer {
    if (!isObject(tokenizerJson) || !isObject(tokenizerJson.model)) {
      throw new Error('tokenizer.json must be an object with a "model" entry');
    }
    if (tokenizerConfig !== null && !isObject(tokenizerConfig)) {
      throw new Error("tokenizer_config.json must be a JSON object");
    }
    return new TextTokenizer(tokenizerJson, tokenizerConfig ?? {}, chatTemplate, generationEosTokenIds);
  }

  /** Text to ids; `addSpecialTokens` (default true) runs the post-processor, e.g. Llama 3's bos. */
  encode(text: string, options: EncodeOptions = {}): number[] {
    return this.#tokenizer.encode(text, { add_special_tokens: options.addSpecialTokens ?? true }).ids;
  }

  /** Ids to text; special tokens are kept unless `skipSpecialTokens`. */
  decode(ids: readonly number[], options: DecodeOptions = {}): string {
    // The library throws on an empty list; an empty stream is simply empty text.
    if (ids.length === 0) return "";
    // The library would spell an unknown id as the text "undefined"; padded embedding rows
    // (Qwen2.5 has 151,936 rows for 151,665 ids) make such ids possible, so fail loudly instead.
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
        throw new Error(`token id ${id} is outside the vocabulary [0, ${this.vocabSize})`);
      }
    }
    return this.#tokenizer.decode([...ids], {
      skip_special_tokens: options.skipSpecialTokens ?? false,
      clean_up_tokenization_spaces: options.cleanUpTokenizationSpaces ?? this.#cleanUpTokenizationSpaces,
    });
  }

  /** Id of a token string (vocabulary entry or added token), or null when absent. */
  tokenToId(token: string): number | null {
    return this.#tokenizer.token_to_id(token) ?? null;
  }

  /** Token string of an id, or null when absent. */
  idToToken(id: number): string | null {
    return this.#tokenizer.id_to_token(id) ?? null;
  }

  /** Renders a conversation with the chat template and the variables transformers passes (messages, add_generation_prompt, tools, special tokens). */
  applyChatTemplate(messages: readonly ChatMessage[], options: ChatTemplateOptions): string {
    if (this.chatTemplate === null) {
      throw new Error("this tokenizer has no chat template (no chat_template in tokenizer_config.json " + "and no chat_template.jinja)");
    }
    this.#compiledTemplate ??= new Template(this.chatTemplate);
    // raise_exception and strftime_now are globals of @huggingface/jinja (which refuses to have
    // them redefined); a raise_exception surfaces here as an Error carrying the template's message.
    try {
      return this.#compiledTemplate.render({
        ...this.#specialTokens,
        messages: messages.map((message) => ({ ...message })),
        add_generation_prompt: options.addGenerationPrompt,
        ...(options.tools !== undefined && options.tools.length > 0 ? { tools: options.tools } : {}),
      });
    } catch (error) {
      throw new Error(`chat template failed: ${(error as Error).message}`, { cause: error });
    }
  }

  #idOf(token: string | undefined): number | null {
    return token === undefined ? null : this.tokenToId(token);
  }

  // The stop token of a chat model is the one its template writes after an assistant message
  // (<|im_end|>, <|eot_id|>); configs often name only the document eos, so read it off the template.
  #findEndOfTurnTokenId(): number | null {
    if (this.chatTemplate === null) return null;
    const marker = "\u0000end-of-turn-probe\u0000";
    let rendered: string;
    try {
      rendered = this.applyChatTemplate(
        [
          { role: "user", content: "hi" },
          { role: "assistant", content: marker },
        ],
        { addGenerationPrompt: false },
      );
    } catch {
      return null; // A template that rejects this conversation has no end-of-turn to find.
    }
    const markerAt = rendered.indexOf(marker);
    if (markerAt < 0) return null;
    // trimStart: Llama 2's template writes content + " " + eos_token.
    const afterMarker = rendered.slice(markerAt + marker.length).trimStart();
    let best: { id: number; length: number } | null = null;
    for (const [id, token] of this.#tokenizer.get_added_tokens_decoder()) {
      if (token.special && afterMarker.startsWith(token.content) && token.content.length > (best?.length ?? 0)) {
        best = { id, length: token.content.length };
      }
    }
    return best?.id ?? null;
  }
}

/**
 * Loads tokenizer.json, and when present tokenizer_config.json, chat_template.jinja and the stop
 * ids of generation_config.json, from a directory.
 */
export async function loadTokenizer(directory: string): Promise<TextTokenizer> {
  const tokenizerPath = join(directory, "tokenizer.json");
  const tokenizerJson = await readJson(tokenizerPath, true);
  const configPath = join(directory, "tokenizer_config.json");
  const tokenizerConfig = await readJson(configPath, false);
  // transformers >= 4.47 saves the template in its own file, which then takes precedence.
  const chatTemplate = await readOptional(join(directory, "chat_template.jinja"));
  const generationEosTokenIds = await readGenerationEosTokenIds(directory);
  try {
    return TextTokenizer.fromJson(tokenizerJson as object, tokenizerConfig as object | null, chatTemplate, generationEosTokenIds);
  } catch (error) {
    throw new Error(`cannot build a tokenizer from ${tokenizerPath}: ${(error as Error).message}`, { cause: error });
  }
}

async function readJson(path: string, required: boolean): Promise<unknown> {
  const text = await readOptional(path);
  if (text === null) {
    if (required) throw new Error(`tokenizer file ${path} does not exist`);
    return null;
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new Error(`tokenizer file ${path} is not valid JSON: ${(error as Error).message}`, { cause: error });
  }
}

async function readOptional(path: string): Promise<string | null> {
  try {
    return await readFile(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw new Error(`cannot read tokenizer file ${path}: ${(error as Error).message}`, { cause: error });
  }
}

// Older configs store several named templates; transformers renders the one named "default".
function pickChatTemplate(value: unknown): string | null {
  if (typeof value === "string") return value;
  if (Array.isArray(value)) {
    const named = value.find((entry) => isObject(entry) && entry.name === "default");
    return isObject(named) && typeof named.template === "string" ? named.template : null;
  }
  return null;
}

// A special token in tokenizer_config.json is a string or an AddedToken object {content, ...}.
function tokenContent(value: unknown): string | null {
  if (typeof value === "string") return value;
  if (isObject(value) && typeof value.content === "string") return value.content;
  return null;
}

function asArray(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [];
}

function isObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
