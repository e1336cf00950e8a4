import { beforeAll, describe, expect, it } from "vitest";
import { byteToUnicodeTable } from "../../tokenizer/byte-level.ts";
import { QWEN3_DIRECTORY } from "../../tokenizer/real-tokenizer-fixtures.ts";
import { tinyMetaspaceBpeJson } from "../../tokenizer/tiny-bpe-fixtures.ts";
import { loadTokenizer, TextTokenizer } from "../../tokenizer/tokenizer.ts";
import { byteLevelTokenizer } from "./random-walk.ts";
import { tokenBytes, vocabularySpelling } from "../../tokenizer/token-bytes.ts";
import { grammarVocabulary } from "./vocabulary.ts";

const BYTE_OF_CHARACTER = new Map(byteToUnicodeTable().map((character, byte) => [character, byte]));

// What xgrammar's byte_level type decodes an entry to.
function decodeEntry(entry: string): number[] {
  return [...entry].map((character) => BYTE_OF_CHARACTER.get(character)!);
}

describe("grammar vocabulary of the byte-level tokenizer", () => {
  const tokenizer = byteLevelTokenizer();
  const vocabulary = grammarVocabulary(tokenizer);

  it("gives every id its own byte and no text to the special tokens", () => {
    expect(vocabulary.spelling).toBe("byte-level");
    expect(vocabulary.encodedVocabulary).toHaveLength(259);
    for (let byte = 0; byte < 256; byte++) expect(decodeEntry(vocabulary.encodedVocabulary[byte])).toEqual([byte]);
    expect(vocabulary.encodedVocabulary.slice(256)).toEqual(["", "", ""]);
  });

  it("stops at the tokenizer's end-of-sequence ids", () => {
    expect(vocabulary.stopTokenIds).toEqual(tokenizer.eosTokenIds);
    expect(vocabulary.stopTokenIds).toEqual([256, 258]);
  });
});

describe("grammar vocabulary of a real byte-level BPE (Qwen3)", () => {
  let tokenizer: TextTokenizer;
  beforeAll(async () => {
    tokenizer = await loadTokenizer(QWEN3_DIRECTORY);
  });

  it("spells every text token as the bytes it decodes to", () => {
    const vocabulary = grammarVocabulary(tokenizer);
    expect(vocabulary.spelling).toBe("byte-level");
    const decoder = new TextDecoder("utf-8", { fatal: true });
    let checked = 0;
    for (let id = 0; id < tokenizer.vocabSize; id += 37) {
      const entry = vocabulary.encodedVocabulary[id];
      if (entry === "") continue;
      const bytes = Uint8Array.from(decodeEntry(entry));
      let text: string | null = null;
      try {
        text = decoder.decode(bytes);
      } catch {
        continue; // part of a character: checked through neighbours below
      }
      expect(text).toBe(tokenizer.decode([id]));
      checked++;
    }
    expect(checked).toBeGreaterThan(3000);
    // A lone lead byte of a character stays that one byte.
    expect(decodeEntry(vocabulary.encodedVocabulary[tokenizer.tokenToId("\u00c3")!])).toEqual([0xc3]);
    expect(decodeEntry(vocabulary.encodedVocabulary[tokenizer.encode("é", { addSpecialTokens: false })[0]])).toEqual([0xc3, 0xa9]);
  });

  it("keeps <tool_call> as text, gives <|im_start|> none and stops at <|im_end|>", () => {
    const vocabulary = grammarVocabulary(tokenizer);
    const toolCall = tokenizer.tokenToId("<tool_call>")!;
    expect(Buffer.from(decodeEntry(vocabulary.encodedVocabulary[toolCall])).toString()).toBe("<tool_call>");
    expect(vocabulary.encodedVocabulary[tokenizer.tokenToId("<|im_start|>")!]).toBe("");
    expect(vocabulary.stopTokenIds).toContain(tokenizer.tokenToId("<|im_end|>"));
  });
});

describe("grammar vocabulary of a sentencepiece tokenizer with byte fallback", () => {
  const tokenizer = TextTokenizer.fromJson(tinyMetaspaceBpeJson(), { eos_token: "</s>" });

  it("reads <0x0A> as the byte and ▁ as a space, and gives <s> and <unk> no text", () => {
    expect(vocabularySpelling(tokenizer)).toBe("byte-fallback");
    expect([...tokenBytes(tokenizer, "byte-fallback", tokenizer.tokenToId("<0x0A>")!)!]).toEqual([0x0a]);
    expect([...tokenBytes(tokenizer, "byte-fallback", tokenizer.tokenToId("<0xE2>")!)!]).toEqual([0xe2]);
    expect(Buffer.from(tokenBytes(tokenizer, "byte-fallback", tokenizer.tokenToId("▁the")!)!).toString()).toBe(" the");
    expect(tokenBytes(tokenizer, "byte-fallback", tokenizer.tokenToId("<s>")!)).toBeNull();
    const vocabulary = grammarVocabulary(tokenizer);
    expect(vocabulary.encodedVocabulary[tokenizer.tokenToId("<unk>")!]).toBe("");
    expect(vocabulary.stopTokenIds).toEqual([tokenizer.tokenToId("</s>")]);
  });
});
