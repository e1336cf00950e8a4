// The project's own small models use a byte-level vocabulary, written in the standard Hugging Face
// `tokenizer.json` / `tokenizer_config.json` format so that the one loader in `tokenizer.ts` serves
// them and real checkpoints (SmolLM2, Qwen2.5, Llama 3) alike.
//
// Layout: id b (0..255) is byte b, spelled with GPT-2's byte-to-unicode character; the special
// tokens follow as added tokens (256, 257, ...). The model is a BPE with an empty merges list: every
// vocabulary entry is a single byte character, so BPE has nothing to merge and the ids are exactly
// the UTF-8 bytes of the text. BPE (not WordLevel) because the ByteLevel pre-tokenizer + BPE +
// ByteLevel decoder triple is what GPT-2-family checkpoints use, so @huggingface/tokenizers, the
// Python `tokenizers` library and transformers all load it through their best-trodden path.
// @huggingface/tokenizers 0.2.0 handles an empty merges list correctly (checked by the tests).

/** Special tokens of a byte-level tokenizer unless the caller names others; ids 256, 257, 258. */
export const DEFAULT_SPECIAL_TOKENS: readonly string[] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/** Number of ids taken by the bytes before the first special token. */
export const BYTE_VOCABULARY_SIZE = 256;

/** ChatML: `<|im_start|>role\ncontent<|im_end|>\n` per message, `<|im_start|>assistant\n` to prompt. */
export const CHATML_TEMPLATE =
  "{% for message in messages %}" +
  "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}" +
  "{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/** Options of {@link makeByteLevelTokenizerFiles}. */
export interface ByteLevelTokenizerOptions {
  /** Added special tokens, ids from 256 in this order; the first is also bos, eos and pad. */
  specialTokens?: readonly string[];
  /** Jinja chat template; ChatML when left out, none when null. */
  chatTemplate?: string | null;
}

/** The two files a Hugging Face tokenizer directory holds, as parsed JSON objects. */
export interface TokenizerFiles {
  tokenizerJson: Record<string, unknown>;
  tokenizerConfig: Record<string, unknown>;
}

/** GPT-2's byte-to-unicode table: printable bytes stand for themselves, the rest move to U+0100+. */
export function byteToUnicodeTable(): string[] {
  // Printable Latin-1 bytes keep their own character so that vocabularies stay readable; the others
  // (controls, space, soft hyphen) are shifted past U+00FF so that no token contains whitespace or
  // control characters, which pre-tokenizers and JSON tooling would otherwise mangle.
  const table = new Array<string>(BYTE_VOCABULARY_SIZE);
  let shifted = 0;
  for (let byte = 0; byte < BYTE_VOCABULARY_SIZE; byte++) {
    const printable = (byte >= 33 && byte <= 126) || (byte >= 161 && byte <= 172) || (byte >= 174 && byte <= 255);
    table[byte] = String.fromCodePoint(printable ? byte : BYTE_VOCABULARY_SIZE + shifted++);
  }
  return table;
}

/** Builds `tokenizer.json` and `tokenizer_config.json` for a byte-level vocabulary (256 + specials). */
export function makeByteLevelTokenizerFiles(options: ByteLevelTokenizerOptions = {}): TokenizerFiles {
  const specialTokens = [...(options.specialTokens ?? DEFAULT_SPECIAL_TOKENS)];
  checkSpecialTokens(specialTokens);
  const chatTemplate = options.chatTemplate === undefined ? CHATML_TEMPLATE : options.chatTemplate;
  if (options.chatTemplate === undefined) {
    // The default template spells these markers; without them as special tokens they would be
    // encoded byte by byte and the model could never end a turn with a single id.
    for (const marker of ["<|im_start|>", "<|im_end|>"]) {
      if (!specialTokens.includes(marker)) {
        throw new Error(
          `the default ChatML chat template needs special token ${JSON.stringify(marker)}; ` +
            `special tokens are ${JSON.stringify(specialTokens)} (pass chatTemplate: null for none)`,
        );
      }
    }
  }

  const vocab: Record<string, number> = {};
  byteToUnicodeTable().forEach((character, byte) => (vocab[character] = byte));
  const addedTokens = specialTokens.map((content, index) => ({
    id: BYTE_VOCABULARY_SIZE + index,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  }));
  // use_regex false: with no merges the GPT-2 split would change nothing but cost time.
  const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false };
  const tokenizerJson = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: addedTokens,
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: null,
    decoder: byteLevel,
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges: [],
    },
  };

  // GPT-2 convention: one document separator serves as bos, eos and pad; chat turns end with
  // <|im_end|>, which the loader adds to the stop ids by reading the template.
  const documentToken = specialTokens[0] ?? null;
  const tokenizerConfig: Record<string, unknown> = {
    tokenizer_class: "PreTrainedTokenizerFast",
    bos_token: documentToken,
    eos_token: documentToken,
    pad_token: documentToken,
    unk_token: null,
    add_bos_token: false,
    add_eos_token: false,
    // Byte-level text must come back byte-exact, so no " ." -> "." clean-up.
    clean_up_tokenization_spaces: false,
    additional_special_tokens: specialTokens.slice(1),
    added_tokens_decoder: Object.fromEntries(addedTokens.map(({ id, ...token }) => [String(id), token])),
  };
  if (chatTemplate !== null) tokenizerConfig.chat_template = chatTemplate;
  return { tokenizerJson, tokenizerConfig };
}

function checkSpecialTokens(specialTokens: readonly string[]): void {
  const seen = new Set<string>();
  for (const token of specialTokens) {
    if (typeof token !== "string" || token.length === 0) {
      throw new Error(`special tokens must be non-empty strings, got ${JSON.stringify(token)}`);
    }
    if (seen.has(token)) throw new Error(`special token ${JSON.stringify(token)} is listed twice`);
    seen.add(token);
  }
}
