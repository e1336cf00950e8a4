/**
 * The exact bytes each token adds to decoded text, whatever its vocabulary's spelling (GPT-2's
 * byte characters, sentencepiece's `▁` and `<0x0A>` pieces, plain text). A token may hold part of
 * a UTF-8 character (byte-level vocabularies split characters freely), so its text alone can lose
 * information; its bytes cannot. The grammar engine reads the vocabulary through this, and
 * OpenAI's `logprobs` report tokens by it.
 */
import { byteToUnicodeTable } from "./byte-level.ts";
import type { TextTokenizer } from "./tokenizer.ts";

/** How a tokenizer's vocabulary strings spell bytes, found by decoding probe tokens. */
export type VocabularySpelling = "byte-level" | "byte-fallback" | "text";

const BYTE_CHARACTERS = byteToUnicodeTable();
const BYTE_OF_CHARACTER = new Map(BYTE_CHARACTERS.map((character, byte) => [character, byte]));
const FALLBACK_BYTE = /^<0x([0-9A-Fa-f]{2})>$/;
const encoder = new TextEncoder();
const decoder = new TextDecoder(); // replaces a broken character with U+FFFD instead of failing

/** Works out the spelling from what the tokenizer decodes a space byte and a newline piece to. */
export function vocabularySpelling(tokenizer: TextTokenizer): VocabularySpelling {
  const spaceCharacter = tokenizer.tokenToId(BYTE_CHARACTERS[0x20]); // "Ġ"
  if (spaceCharacter !== null && tokenizer.decode([spaceCharacter]) === " ") return "byte-level";
  const newlinePiece = tokenizer.tokenToId("<0x0A>");
  if (newlinePiece !== null && tokenizer.decode([newlinePiece]) === "\n") return "byte-fallback";
  return "text";
}

/** The bytes id `id` adds to decoded text, or null when it is a special token or no token. */
export function tokenBytes(tokenizer: TextTokenizer, spelling: VocabularySpelling, id: number): Uint8Array | null {
  const token = tokenizer.idToToken(id);
  if (token === null) return null;
  // Skipping special tokens leaves nothing of them; every text token leaves at least a byte
  // (sentencepiece's Strip decoder can empty a lone "▁", which only costs that token here).
  const text = tokenizer.decode([id], { skipSpecialTokens: true, cleanUpTokenizationSpaces: false });
  if (text === "") return null;
  if (spelling === "byte-level") {
    const bytes = new Uint8Array(token.length);
    let length = 0;
    for (const character of token) {
      const byte = BYTE_OF_CHARACTER.get(character);
      // An added token such as "<think>" may hold characters outside the byte alphabet: it is text.
      if (byte === undefined) return encoder.encode(text);
      bytes[length++] = byte;
    }
    return bytes.subarray(0, length);
  }
  if (spelling === "byte-fallback") {
    const fallback = FALLBACK_BYTE.exec(token);
    if (fallback !== null) return Uint8Array.of(Number.parseInt(fallback[1], 16));
    return encoder.encode(token.replaceAll("\u2581", " "));
  }
  return encoder.encode(text);
}

/** Bytes in GPT-2's byte-level spelling: one vocabulary character per byte. */
export function spellBytes(bytes: Uint8Array): string {
  let spelled = "";
  for (const byte of bytes) spelled += BYTE_CHARACTERS[byte];
  return spelled;
}

/** A token's UTF-8 bytes and its text, computed once per id (special tokens by their own text). */
export class TokenBytes {
  private readonly cache = new Map<number, { text: string; bytes: number[] }>();
  private readonly spelling: VocabularySpelling;

  constructor(private readonly tokenizer: TextTokenizer) {
    this.spelling = vocabularySpelling(tokenizer);
  }

  /** The bytes of token `id` and those bytes read as UTF-8. */
  of(id: number): { text: string; bytes: number[] } {
    let entry = this.cache.get(id);
    if (entry === undefined) {
      const bytes = tokenBytes(this.tokenizer, this.spelling, id) ?? encoder.encode(this.tokenizer.idToToken(id) ?? "");
      entry = { text: decoder.decode(bytes), bytes: [...bytes] };
      this.cache.set(id, entry);
    }
    return entry;
  }
}
