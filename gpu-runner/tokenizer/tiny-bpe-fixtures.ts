// Hand-built miniature tokenizer.json files in the two word-boundary styles of real checkpoints,
// for tests that must show behaviour byte-level vocabularies cannot (merged multi-character
// tokens, leading-space markers that decoders strip from the first token).
import { byteToUnicodeTable } from "./byte-level.ts";

/** GPT-2/Llama 3 style: ByteLevel pre-tokenizer with the GPT-2 split, "Ġ" marks a leading space. */
export function tinyByteLevelBpeJson(): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  byteToUnicodeTable().forEach((character, byte) => (vocab[character] = byte));
  const merges = [
    ["Ġ", "t"],
    ["h", "e"],
    ["Ġt", "he"],
    ["l", "l"],
    ["ll", "o"],
    ["Ġ", "w"],
    ["o", "r"],
    ["Ġw", "or"],
  ];
  for (const [left, right] of merges) vocab[left + right] = Object.keys(vocab).length;
  const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true };
  return {
    version: "1.0",
    added_tokens: [{ id: Object.keys(vocab).length, content: "<|eot|>", single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }],
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: null,
    decoder: byteLevel,
    model: { type: "BPE", vocab, merges: merges.map(([left, right]) => `${left} ${right}`), byte_fallback: false, ignore_merges: false },
  };
}

/** Llama 2 / SentencePiece style: "▁" marks a space, unknown characters fall back to <0xXX> bytes. */
export function tinyMetaspaceBpeJson(): Record<string, unknown> {
  const vocab: Record<string, number> = { "<unk>": 0, "<s>": 1, "</s>": 2 };
  for (let byte = 0; byte < 256; byte++) {
    vocab[`<0x${byte.toString(16).toUpperCase().padStart(2, "0")}>`] = Object.keys(vocab).length;
  }
  for (const character of "▁abcdefghijklmnopqrstuvwxyzHW,.!?") vocab[character] = Object.keys(vocab).length;
  const merges = [
    ["▁", "t"],
    ["h", "e"],
    ["▁t", "he"],
    ["l", "l"],
    ["ll", "o"],
    ["▁", "w"],
    ["o", "r"],
    ["▁w", "or"],
    ["H", "e"],
    ["He", "llo"],
  ];
  for (const [left, right] of merges) vocab[left + right] = Object.keys(vocab).length;
  const special = (id: number, content: string) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  return {
    version: "1.0",
    added_tokens: [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
    // Llama 2's exact pipeline: prepend "▁", spaces become "▁"; the decoder undoes it and then
    // strips the one space the prepend put in front of the whole text.
    normalizer: {
      type: "Sequence",
      normalizers: [
        { type: "Prepend", prepend: "▁" },
        { type: "Replace", pattern: { String: " " }, content: "▁" },
      ],
    },
    pre_tokenizer: null,
    post_processor: null,
    decoder: {
      type: "Sequence",
      decoders: [
        { type: "Replace", pattern: { String: "▁" }, content: " " },
        { type: "ByteFallback" },
        { type: "Fuse" },
        { type: "Strip", content: " ", start: 1, stop: 0 },
      ],
    },
    model: {
      type: "BPE",
      unk_token: "<unk>",
      byte_fallback: true,
      fuse_unk: true,
      ignore_merges: false,
      vocab,
      merges: merges.map(([left, right]) => `${left} ${right}`),
    },
  };
}
