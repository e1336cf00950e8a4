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
import { spellBytes, tokenBytes, type VocabularySpelling, vocabularySpelling } from "../../tokenizer/token-bytes.ts";
import type { TextTokenizer } from "../../tokenizer/tokenizer.ts";

/** What xgrammar's TokenizerInfo is created from. */
export interface GrammarVocabulary {
  /** Per id, its bytes in byte-level spelling; "" for special tokens and ids without a token. */
  readonly encodedVocabulary: string[];
  /** Ids the grammar treats as end of sequence: the tokenizer's eosTokenIds. */
  readonly stopTokenIds: number[];
  readonly spelling: VocabularySpelling;
}

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
