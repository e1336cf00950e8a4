import { describe, it, expect } from "vitest";
import { BYTE_VOCABULARY_SIZE, byteToUnicodeTable, makeByteLevelTokenizerFiles } from "./byte-level.ts";
import { TextTokenizer } from "./tokenizer.ts";

function byteLevelTokenizer(options?: Parameters<typeof makeByteLevelTokenizerFiles>[0]): TextTokenizer {
  const { tokenizerJson, tokenizerConfig } = makeByteLevelTokenizerFiles(options);
  // Through JSON text, as the files are written and read in practice.
  return TextTokenizer.fromJson(JSON.parse(JSON.stringify(tokenizerJson)), JSON.parse(JSON.stringify(tokenizerConfig)));
}

const TRICKY_STRINGS = [
  "",
  "hello world",
  "héllo wörld, ça va? Ünïcödé",
  "emoji 😀🎉👩‍👩‍👧 and flags 🇯🇵",
  "中文字符，日本語のテキスト，한국어",
  "newlines\n\r\n\ttabs  and   spaces ",
  "  leading and trailing  ",
  "nul \u0000 and controls \u0001\u001f\u007f and nbsp \u00a0 soft\u00adhyphen",
  "clean-up bait: a . b , c ! don 't I 'm they 're",
  "mixed 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \u{10FFFF} \uFEFF bom",
];

describe("byte-level tokenizer files", () => {
  const tokenizer = byteLevelTokenizer();

  it("maps every byte to the id equal to its value", () => {
    const table = byteToUnicodeTable();
    expect(new Set(table).size).toBe(256);
    for (let byte = 0; byte < 256; byte++) {
      expect(tokenizer.tokenToId(table[byte])).toBe(byte);
      expect(tokenizer.idToToken(byte)).toBe(table[byte]);
    }
  });

  it("encodes text to exactly its UTF-8 bytes", () => {
    for (const text of TRICKY_STRINGS) {
      expect(tokenizer.encode(text)).toEqual([...Buffer.from(text, "utf8")]);
    }
  });

  it("round-trips tricky UTF-8 byte-exactly", () => {
    for (const text of TRICKY_STRINGS) {
      expect(tokenizer.decode(tokenizer.encode(text))).toBe(text);
    }
  });

  it("decodes every single byte to what TextDecoder gives", () => {
    const textDecoder = new TextDecoder();
    for (let byte = 0; byte < 256; byte++) {
      expect(tokenizer.decode([byte])).toBe(textDecoder.decode(Uint8Array.of(byte)));
    }
  });

  it("puts the default special tokens at 256, 257, 258 and sizes the vocabulary to match", () => {
    expect(tokenizer.tokenToId("<|endoftext|>")).toBe(256);
    expect(tokenizer.tokenToId("<|im_start|>")).toBe(257);
    expect(tokenizer.tokenToId("<|im_end|>")).toBe(258);
    expect(tokenizer.vocabSize).toBe(BYTE_VOCABULARY_SIZE + 3);
    expect(byteLevelTokenizer({ specialTokens: ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"] }).vocabSize).toBe(260);
  });

  it("encodes special tokens in text to their ids and decodes them back", () => {
    const text = "<|im_start|>user\nhé<|im_end|>\n<|endoftext|>";
    const ids = tokenizer.encode(text);
    expect(ids).toEqual([257, ...Buffer.from("user\nhé", "utf8"), 258, 10, 256]);
    expect(tokenizer.decode(ids)).toBe(text);
    expect(tokenizer.decode(ids, { skipSpecialTokens: true })).toBe("user\nhé\n");
  });

  it("names <|endoftext|> as bos/eos/pad and adds the template's <|im_end|> to the stop ids", () => {
    expect(tokenizer.bosTokenId).toBe(256);
    expect(tokenizer.padTokenId).toBe(256);
    expect(tokenizer.eosTokenIds).toEqual([256, 258]);
  });

  it("renders the ChatML template exactly, with and without the generation prompt", () => {
    const messages = [
      { role: "system", content: "Be brief." },
      { role: "user", content: "Hi\nthere" },
    ];
    const conversation = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi\nthere<|im_end|>\n";
    expect(tokenizer.applyChatTemplate(messages, { addGenerationPrompt: false })).toBe(conversation);
    expect(tokenizer.applyChatTemplate(messages, { addGenerationPrompt: true })).toBe(`${conversation}<|im_start|>assistant\n`);
  });

  it("rejects duplicate special tokens and a ChatML default without its markers", () => {
    expect(() => makeByteLevelTokenizerFiles({ specialTokens: ["<a>", "<a>"] })).toThrow(/"<a>" is listed twice/);
    expect(() => makeByteLevelTokenizerFiles({ specialTokens: ["<|endoftext|>"] })).toThrow(/<\|im_start\|>/);
    const plain = byteLevelTokenizer({ specialTokens: ["<|endoftext|>"], chatTemplate: null });
    expect(plain.chatTemplate).toBeNull();
    expect(plain.eosTokenIds).toEqual([256]);
  });
});
