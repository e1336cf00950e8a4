/**
 * The vocabulary as xgrammar's TokenizerInfo needs it: the exact bytes every id adds to decoded
 * text, and which ids are not text at all.
 *
 * Every vocabulary, whatever its own spelling (GPT-2 byte characters, sentencepiece's `▁` and
 * `<0x0A>` pieces, plain text), is handed over in GPT-2's byte-level spelling with vocab type
 * "byte_level": xgrammar then decodes each entry to exactly the bytes computed here. Its other
 * types take strings, which cannot carry the lone bytes of a character split across tokens.
 * Special tokens (`<|im_end|>`, Llama 3's reserved ids) are given as empty strings, which xgrammar
 * never allows inside a grammar; the stop ids are named separately and allowed where it may end.
 */
import { byteToUnicodeTable } from "../../tokenizer/byte-level.ts";
import type { TextTokenizer } from "../../tokenizer/tokenizer.ts";

/** How a tokenizer's vocabulary strings spell bytes, found by decoding probe tokens. */
export type VocabularySpelling = "byte-level" | "byte-fallback" | "text";

/** What xgrammar's TokenizerInfo is created from. */
export interface GrammarVocabulary {
  /** Per id, its bytes in byte-level spelling; "" for special tokens and ids without a token. */
  readonly encodedVocabulary: string[];
  /** Ids the grammar treats as end of sequence: the tokenizer's eosTokenIds. */
  readonly stopTokenIds: number[];
  readonly spelling: VocabularySpelling;
}

const BYTE_CHARACTERS = byteToUnicodeTable();
const BYTE_OF_CHARACTER = new Map(BYTE_CHARACTERS.map((character, byte) => [character, byte]));
const FALLBACK_BYTE = /^<0x([0-9A-Fa-f]{2})>$/;
const encoder = new TextEncoder();

/** Reads every id of `tokenizer` into the form xgrammar takes. */
export function grammarVocabulary(tokenizer: TextTokenizer): GrammarVocabulary {
  const spelling = vocabularySpelling(tokenizer);
  const stopTokenIds = [...tokenizer.eosTokenIds];
  const stops = new Set(stopTokenIds);
  const encodedVocabulary = new Array<string>(tokenizer.vocabSize);
  for (let id = 0; id < tokenizer.vocabSize; id++) {
    const bytes = stops.has(id) ? null : tokenBytes(tokenizer, spelling, id);
    encodedVocabulary[id] = bytes === null ? "" : spellBytes(bytes);
  }
  return { encodedVocabulary, stopTokenIds, spelling };
}

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

function spellBytes(bytes: Uint8Array): string {
  let spelled = "";
  for (const byte of bytes) spelled += BYTE_CHARACTERS[byte];
  return spelled;
}
