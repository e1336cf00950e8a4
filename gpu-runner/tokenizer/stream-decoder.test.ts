import { describe, it, expect } from "vitest";
import { makeByteLevelTokenizerFiles } from "./byte-level.ts";
import { StreamDecoder } from "./stream-decoder.ts";
import { tinyByteLevelBpeJson, tinyMetaspaceBpeJson } from "./tiny-bpe-fixtures.ts";
import { TextTokenizer, type DecodeOptions } from "./tokenizer.ts";

/** Feeds ids one at a time and returns every piece, flush included. */
function streamPieces(tokenizer: TextTokenizer, ids: number[], options: { skipSpecialTokens?: boolean } = {}): string[] {
  const decoder = new StreamDecoder(tokenizer, options);
  const pieces = ids.map((id) => decoder.push(id));
  pieces.push(decoder.flush());
  return pieces;
}

const byteLevel = TextTokenizer.fromJson(makeByteLevelTokenizerFiles().tokenizerJson);
const TEXT = "Emoji 😀👩‍👩‍👧 then 中文字符 and héllo wörld\n\u0000 end 🎉";

describe("StreamDecoder", () => {
  it("never splits a character of byte-level text and adds up to the original", () => {
    const ids = byteLevel.encode(TEXT);
    const pieces = streamPieces(byteLevel, ids);
    for (const piece of pieces) expect(piece).not.toContain("\uFFFD");
    expect(pieces.join("")).toBe(TEXT);
    // The 4-byte emoji arrives whole on its fourth byte and not before.
    const emojiStart = Buffer.from("Emoji ", "utf8").length;
    expect(pieces.slice(emojiStart, emojiStart + 4)).toEqual(["", "", "", "😀"]);
  });

  it("keeps special tokens, or drops them like decode does", () => {
    const ids = byteLevel.encode("<|im_start|>assistant\n中文<|im_end|>");
    expect(streamPieces(byteLevel, ids).join("")).toBe(byteLevel.decode(ids));
    expect(streamPieces(byteLevel, ids, { skipSpecialTokens: true }).join("")).toBe("assistant\n中文");
  });

  it("adds up to decode(all) for a ByteLevel BPE with Ġ word boundaries and merges", () => {
    const tokenizer = TextTokenizer.fromJson(tinyByteLevelBpeJson());
    const text = "hello the world, the 世界 hello";
    const ids = tokenizer.encode(text);
    expect(ids.length).toBeLessThan(Buffer.from(text, "utf8").length); // merges did apply
    const pieces = streamPieces(tokenizer, ids);
    for (const piece of pieces) expect(piece).not.toContain("\uFFFD");
    expect(pieces.join("")).toBe(tokenizer.decode(ids));
    expect(pieces.join("")).toBe(text);
  });

  it("adds up to decode(all) for a Metaspace BPE whose decoder strips the first space", () => {
    const tokenizer = TextTokenizer.fromJson(tinyMetaspaceBpeJson());
    const text = "Hello the world 😀 and 中文 hello";
    const ids = tokenizer.encode(text);
    // Decoding token by token loses the spaces, which is why the prefix offset exists.
    expect(ids.map((id) => tokenizer.decode([id])).join("")).not.toBe(text);
    const pieces = streamPieces(tokenizer, ids);
    for (const piece of pieces) expect(piece).not.toContain("\uFFFD");
    expect(pieces.join("")).toBe(tokenizer.decode(ids));
    expect(pieces.join("")).toBe(text);
  });

  it("lets invalid bytes through after a bounded delay and still adds up", () => {
    // An untrained byte-level model emits arbitrary bytes: runs of invalid UTF-8, then a character
    // completed only at the end of a long pending run.
    const ids = [0x41, 0xff, 0xfe, 0xff, 0x80, 0x80, 0xe4, 0xb8, 0xad, 0x42, 0xf0, 0x9f, 0x98];
    const decoder = new StreamDecoder(byteLevel);
    const pieces = ids.map((id) => decoder.push(id));
    // Each invalid byte comes out three tokens late instead of being held until "中" arrives.
    expect(pieces.slice(0, 7)).toEqual(["A", "", "", "", "\uFFFD", "\uFFFD", "\uFFFD"]);
    pieces.push(decoder.flush());
    expect(pieces.join("")).toBe(byteLevel.decode(ids));
  });

  it("does not emit a cut through a character that a multi-byte token completes later", () => {
    // Tokens of a merged byte-level vocabulary can end one character and start the next, so the
    // text can end in U+FFFD for many tokens while a character in the middle is completed.
    const tokenBytes = [[0x41], [0xe4], [0xb8, 0xad, 0xf0], [0x9f], [0x98], [0x80]];
    const textDecoder = new TextDecoder();
    const multiByte = {
      decode: (ids: readonly number[]) => textDecoder.decode(Uint8Array.from(ids.flatMap((id) => tokenBytes[id]))),
    };
    const decoder = new StreamDecoder(multiByte);
    const pieces = [0, 1, 2, 3, 4, 5].map((id) => decoder.push(id));
    expect(pieces).toEqual(["A", "", "", "", "", "中😀"]);
  });

  it("decodes a window of a few tokens per push, not the whole stream", () => {
    const decodedLengths: number[] = [];
    const counting = {
      decode(ids: readonly number[], options?: DecodeOptions): string {
        decodedLengths.push(ids.length);
        return byteLevel.decode(ids, options);
      },
    };
    const decoder = new StreamDecoder(counting);
    let text = "";
    for (const id of byteLevel.encode(TEXT.repeat(20))) text += decoder.push(id);
    text += decoder.flush();
    expect(text).toBe(TEXT.repeat(20));
    expect(Math.max(...decodedLengths)).toBeLessThanOrEqual(8);
  });

  it("returns nothing from flush when everything was emitted", () => {
    const decoder = new StreamDecoder(byteLevel);
    expect(decoder.push(0x61)).toBe("a");
    expect(decoder.flush()).toBe("");
    expect(decoder.push(0x62)).toBe("b");
  });
});
