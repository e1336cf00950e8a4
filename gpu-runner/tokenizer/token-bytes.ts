/**
 * The bytes and the display text of single tokens, as OpenAI's `logprobs` report them. A token
 * may hold part of a UTF-8 character (byte-level vocabularies split characters freely), so its
 * text alone can lose information; its bytes cannot.
 */
import { byteToUnicodeTable } from "./byte-level.ts";
import type { TextTokenizer } from "./tokenizer.ts";

const BYTE_OF_CHARACTER = new Map(byteToUnicodeTable().map((character, byte) => [character, byte]));
const FALLBACK_BYTE = /^<0x([0-9A-Fa-f]{2})>$/;
const encoder = new TextEncoder();
const decoder = new TextDecoder(); // replaces a broken character with U+FFFD instead of failing

/** A token's UTF-8 bytes and its text, computed once per id. */
export class TokenBytes {
  private readonly cache = new Map<number, { text: string; bytes: number[] }>();

  constructor(private readonly tokenizer: TextTokenizer) {}

  /** The bytes of token `id` and those bytes read as UTF-8. */
  of(id: number): { text: string; bytes: number[] } {
    let entry = this.cache.get(id);
    if (entry === undefined) {
      const bytes = this.bytesOf(id);
      entry = { text: decoder.decode(Uint8Array.from(bytes)), bytes };
      this.cache.set(id, entry);
    }
    return entry;
  }

  private bytesOf(id: number): number[] {
    const token = this.tokenizer.idToToken(id);
    if (token === null) return [];
    switch (this.tokenizer.tokenSpelling) {
      case "byte-level": {
        const characters = [...token];
        // Added tokens (<|im_end|>) are plain text, not byte characters.
        if (!characters.every((character) => BYTE_OF_CHARACTER.has(character))) return [...encoder.encode(token)];
        return characters.map((character) => BYTE_OF_CHARACTER.get(character)!);
      }
      case "byte-fallback": {
        const fallback = FALLBACK_BYTE.exec(token);
        if (fallback !== null) return [Number.parseInt(fallback[1], 16)];
        return [...encoder.encode(token.replaceAll("\u2581", " "))];
      }
      default:
        return [...encoder.encode(this.tokenizer.decode([id]))];
    }
  }
}
