import { readFileSync } from "node:fs";
import { join } from "node:path";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ApiError } from "../../src/errors.ts";
import { JSON_BODY_LIMIT } from "../../src/request-body.ts";
import { makeByteLevelTokenizerFiles } from "../tokenizer/byte-level.ts";
import { LLAMA3_DIRECTORY, QWEN3_DIRECTORY } from "../tokenizer/real-tokenizer-fixtures.ts";
import { tinyByteLevelBpeJson, tinyMetaspaceBpeJson } from "../tokenizer/tiny-bpe-fixtures.ts";
import { loadTokenizer, TextTokenizer } from "../tokenizer/tokenizer.ts";
import { assertPromptCanFit, bytesPerTokenBound, publicBodyLimit } from "./request-size.ts";

const readJson = (directory: string) => JSON.parse(readFileSync(join(directory, "tokenizer.json"), "utf8")) as Record<string, unknown>;
const bytes = (text: string) => Buffer.byteLength(text, "utf8");

describe("bytesPerTokenBound", () => {
  it("counts what the longest entry covers: byte-level characters as one byte each, other spellings in UTF-8", () => {
    expect(bytesPerTokenBound(makeByteLevelTokenizerFiles().tokenizerJson)).toBe("<|endoftext|>".length);
    expect(bytesPerTokenBound(tinyByteLevelBpeJson())).toBe("<|eot|>".length); // longer than "Ġthe", which covers 4 bytes
    expect(bytesPerTokenBound(tinyMetaspaceBpeJson())).toBe(6); // "<0x41>" and "▁the" (3 + 3 bytes)
    expect(bytesPerTokenBound(readJson(LLAMA3_DIRECTORY))).toBe(128); // a run of 128 spaces
    expect(bytesPerTokenBound(readJson(QWEN3_DIRECTORY))).toBe(128 * 4); // NFC may shorten the input
  });

  it("is unbounded where the tokenizer may turn any amount of text into one token or none", () => {
    const base = tinyByteLevelBpeJson();
    const unbounded: Record<string, unknown>[] = [
      { ...base, normalizer: { type: "Strip", strip_left: true, strip_right: true } },
      { ...base, normalizer: { type: "Replace", pattern: { Regex: "\\s+" }, content: " " } },
      { ...base, normalizer: { type: "Replace", pattern: { String: "x" }, content: "" } },
      { ...base, pre_tokenizer: { type: "Whitespace" } },
      { ...base, pre_tokenizer: { type: "Split", pattern: { String: " " }, behavior: "Removed", invert: false } },
      { ...base, model: { type: "WordPiece", vocab: { "[UNK]": 0 }, unk_token: "[UNK]" } },
      { ...base, pre_tokenizer: null, model: { type: "BPE", vocab: { a: 0, "<unk>": 1 }, merges: [], unk_token: "<unk>", fuse_unk: true } },
    ];
    for (const json of unbounded) expect(bytesPerTokenBound(json), JSON.stringify(json.normalizer ?? json.pre_tokenizer ?? json.model)).toBe(Infinity);
    const halving = { ...base, normalizer: { type: "Replace", pattern: { String: "ab" }, content: "c" } };
    expect(bytesPerTokenBound(halving)).toBe(2 * bytesPerTokenBound(base));
  });

  it("is sound: no text takes fewer tokens than its bytes divided by the bound", async () => {
    const characters = fc.oneof(
      fc.string({ unit: "grapheme", maxLength: 60 }),
      fc.string({ unit: "binary", maxLength: 60 }),
      fc.constantFrom(" ".repeat(700), "\n".repeat(300), "=".repeat(500), "\u212a".repeat(50), "\u1100\u1161\u11a8".repeat(40), "\u{1d400}".repeat(40)),
    );
    const texts = fc.array(characters, { minLength: 1, maxLength: 6 }).map((parts) => parts.join(""));
    const files = makeByteLevelTokenizerFiles();
    const tokenizers: [string, TextTokenizer, number][] = [
      ["byte-level", TextTokenizer.fromJson(files.tokenizerJson, files.tokenizerConfig), bytesPerTokenBound(files.tokenizerJson)],
      ["tiny byte-level BPE", TextTokenizer.fromJson(tinyByteLevelBpeJson()), bytesPerTokenBound(tinyByteLevelBpeJson())],
      ["tiny Metaspace BPE", TextTokenizer.fromJson(tinyMetaspaceBpeJson()), bytesPerTokenBound(tinyMetaspaceBpeJson())],
      ["Llama 3", await loadTokenizer(LLAMA3_DIRECTORY), bytesPerTokenBound(readJson(LLAMA3_DIRECTORY))],
      ["Qwen3", await loadTokenizer(QWEN3_DIRECTORY), bytesPerTokenBound(readJson(QWEN3_DIRECTORY))],
    ];
    for (const [name, tokenizer, bound] of tokenizers) {
      fc.assert(
        fc.property(texts, (text) => {
          const tokens = tokenizer.encode(text, { addSpecialTokens: false }).length;
          expect(tokens * bound, `${name}: ${JSON.stringify(text.slice(0, 80))}`).toBeGreaterThanOrEqual(bytes(text));
        }),
        { numRuns: 150 },
      );
    }
  });
});

describe("assertPromptCanFit", () => {
  const refusal = (run: () => void): ApiError => {
    try {
      run();
    } catch (error) {
      return error as ApiError;
    }
    throw new Error("not refused");
  };

  it("lets through any prompt within context × bytes per token, counted in UTF-8", () => {
    expect(() => assertPromptCanFit("x".repeat(100), "prompt", 10, 10)).not.toThrow();
    expect(() => assertPromptCanFit("é".repeat(50), "prompt", 10, 10)).not.toThrow(); // 100 bytes
    expect(() => assertPromptCanFit("x".repeat(10 ** 6), "prompt", 10, Infinity)).not.toThrow();
  });

  it("refuses a longer one with a 400 that names the field and the context", () => {
    const error = refusal(() => assertPromptCanFit("é".repeat(51), "messages", 10, 10)); // 102 bytes
    expect(error).toBeInstanceOf(ApiError);
    expect(error.toBody()).toMatchObject({ error: { type: "invalid_request_error", param: "messages", code: "context_length_exceeded" } });
    expect(error.message).toContain("102 bytes");
    expect(error.message).toContain("10 tokens");
  });
});

describe("publicBodyLimit", () => {
  it("leaves room for the longest prompt that fits, JSON-escaped, between the edge's JSON limit and 16 MiB", () => {
    expect(publicBodyLimit(128, 13)).toBe(JSON_BODY_LIMIT);
    expect(publicBodyLimit(4096, 128)).toBe(4096 * 128 * 6);
    expect(publicBodyLimit(131_072, 512)).toBe(16 * 2 ** 20);
    expect(publicBodyLimit(128, Infinity)).toBe(16 * 2 ** 20);
  });
});
