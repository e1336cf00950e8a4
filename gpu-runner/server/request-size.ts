/**
 * How large a request to the public API may be. Tokenising runs on the event loop (about 2 s a
 * megabyte with a 150k vocabulary), so a huge prompt would stall every other request only to be
 * refused afterwards. One token stands for at most `bytesPerToken` bytes of text, so a prompt of
 * more than `contextTokens × bytesPerToken` UTF-8 bytes needs more tokens than the context holds:
 * refusing it unread is never wrong, and costs one pass to count its bytes. The body limit leaves
 * room for the longest prompt that can fit and no more.
 */
import { badRequest } from "../../src/errors.ts";
import { JSON_BODY_LIMIT } from "../../src/request-body.ts";
import { byteToUnicodeTable } from "../tokenizer/byte-level.ts";

type Json = Record<string, unknown>;

/**
 * How much Unicode normalisation or lowercasing can shorten text: a character becomes at least
 * one byte, and the largest shrink is a 4-byte character becoming a 1-byte one (NFKC turns
 * U+1D400 into "A"); composing characters (NFC of Hangul jamo: 9 bytes into 3) shrinks less.
 */
const UNICODE_NORMALIZATION_SHRINK = 4;

/**
 * The most UTF-8 bytes of input text one token can stand for, read off tokenizer.json: the
 * longest vocabulary entry or added token (counted in the bytes it covers), times what the
 * normaliser can shorten text by. Infinity when the tokenizer gives no bound: a normaliser that
 * deletes text, or a vocabulary that folds any run of unknown text into one token.
 */
export function bytesPerTokenBound(tokenizerJson: object): number {
  const json = tokenizerJson as Json;
  const model = isObject(json.model) ? json.model : {};
  if (foldsUnknownText(model, json.pre_tokenizer) || !keepsAllText(json.pre_tokenizer)) return Number.POSITIVE_INFINITY;
  const byteLevel = hasType(json.decoder, "ByteLevel", "decoders");
  let longest = 0;
  for (const token of vocabulary(model, json.added_tokens)) longest = Math.max(longest, coveredBytes(token, byteLevel));
  return longest * normalizerShrink(json.normalizer);
}

/** Refuses (400, `context_length_exceeded`) a prompt text whose size alone proves it cannot fit. */
export function assertPromptCanFit(text: string, param: string, contextTokens: number, bytesPerToken: number): void {
  const limit = contextTokens * bytesPerToken;
  if (!Number.isFinite(limit) || text.length <= limit / 3) return; // a UTF-16 unit is at most 3 bytes of UTF-8
  const bytes = Buffer.byteLength(text, "utf8");
  if (bytes <= limit) return;
  throw badRequest(
    `The prompt is ${bytes} bytes, more than ${contextTokens} tokens of context can hold (a token of this model stands for at most ${bytesPerToken} bytes).`,
    param,
    "context_length_exceeded",
  );
}

/** JSON may spell a byte of text in up to 6 (`\u0001`). */
const JSON_ESCAPE_EXPANSION = 6;
/** The most a public API body may be whatever the model: far beyond any prompt that fits. */
const MAX_PUBLIC_BODY_BYTES = 16 * 2 ** 20;

/**
 * The largest body of the public API: the longest prompt that can fit, JSON-escaped, but never
 * less than what the edge lets through (JSON_BODY_LIMIT) and never more than 16 MiB.
 */
export function publicBodyLimit(contextTokens: number, bytesPerToken: number): number {
  return Math.round(Math.min(MAX_PUBLIC_BODY_BYTES, Math.max(JSON_BODY_LIMIT, contextTokens * bytesPerToken * JSON_ESCAPE_EXPANSION)));
}

const BYTE_CHARACTERS = new Set(byteToUnicodeTable());
const encoder = new TextEncoder();

// GPT-2's byte-level entries spell each byte as one character (some of them 2 bytes of UTF-8);
// other vocabularies spell text at least as long as what it covers ("▁" for a space, "<0x41>").
function coveredBytes(token: string, byteLevel: boolean): number {
  if (byteLevel) {
    const characters = [...token];
    if (characters.every((character) => BYTE_CHARACTERS.has(character))) return characters.length;
  }
  return encoder.encode(token).length;
}

function* vocabulary(model: Json, addedTokens: unknown): Generator<string> {
  const vocab = model.vocab;
  if (Array.isArray(vocab)) {
    for (const entry of vocab) if (Array.isArray(entry) && typeof entry[0] === "string") yield entry[0]; // Unigram: [piece, score]
  } else if (isObject(vocab)) {
    yield* Object.keys(vocab);
  }
  if (Array.isArray(addedTokens)) for (const added of addedTokens) if (isObject(added) && typeof added.content === "string") yield added.content;
}

// WordPiece reads an unknown word as one [UNK]; BPE and Unigram fold a run of unknown characters
// into one token unless every byte has a token of its own (byte fallback, or byte-level input).
function foldsUnknownText(model: Json, preTokenizer: unknown): boolean {
  if (model.type === "WordPiece") return true;
  if (model.byte_fallback === true || hasType(preTokenizer, "ByteLevel", "pretokenizers")) return false;
  if (model.type === "Unigram") return model.unk_id !== null && model.unk_id !== undefined;
  return model.unk_token !== null && model.unk_token !== undefined;
}

// Pre-tokenizers that split on whitespace (Whitespace, BertPreTokenizer, …) or drop what they
// split on throw text away, so any amount of it may become no token at all.
function keepsAllText(preTokenizer: unknown): boolean {
  if (preTokenizer === null || preTokenizer === undefined) return true;
  if (!isObject(preTokenizer)) return false;
  switch (preTokenizer.type) {
    case "Sequence":
      return Array.isArray(preTokenizer.pretokenizers) && preTokenizer.pretokenizers.every(keepsAllText);
    case "ByteLevel":
    case "Metaspace":
    case "Digits":
    case "Punctuation":
    case "UnicodeScripts":
      return true;
    case "Split":
      return preTokenizer.behavior !== "Removed";
    default:
      return false;
  }
}

function normalizerShrink(normalizer: unknown): number {
  if (normalizer === null || normalizer === undefined) return 1;
  if (!isObject(normalizer)) return Number.POSITIVE_INFINITY;
  switch (normalizer.type) {
    case "Sequence":
      return (Array.isArray(normalizer.normalizers) ? normalizer.normalizers : []).reduce((product: number, part) => product * normalizerShrink(part), 1);
    case "NFC":
    case "NFD":
    case "NFKC":
    case "NFKD":
    case "Lowercase":
      return UNICODE_NORMALIZATION_SHRINK;
    case "Prepend":
      return 1;
    case "Replace": {
      const pattern = isObject(normalizer.pattern) ? normalizer.pattern.String : undefined;
      if (typeof pattern !== "string" || typeof normalizer.content !== "string" || normalizer.content.length === 0) return Number.POSITIVE_INFINITY;
      return Math.max(1, encoder.encode(pattern).length / encoder.encode(normalizer.content).length);
    }
    default:
      return Number.POSITIVE_INFINITY; // Strip, StripAccents, Precompiled, …: they may delete text
  }
}

function hasType(component: unknown, type: string, childrenKey: string): boolean {
  if (!isObject(component)) return false;
  if (component.type === type) return true;
  return component.type === "Sequence" && Array.isArray(component[childrenKey]) && component[childrenKey].some((child) => hasType(child, type, childrenKey));
}

function isObject(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
