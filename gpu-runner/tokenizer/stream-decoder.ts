// Incremental detokenisation for streaming, after text-generation-inference's `decode_token`.
//
// Decoding each token alone is wrong twice over: byte-level and byte-fallback tokens split one
// UTF-8 character across several tokens, and word-boundary decoders (Metaspace, Strip) drop the
// leading space of whatever comes first, so decode(suffix) differs from the tail of decode(all).
// TGI's answer: keep a prefix offset and a read offset into the ids, decode ids[prefix..read]
// (text already emitted, with one token of left context) and ids[prefix..], and emit the
// difference, but only once the new text no longer ends in U+FFFD from an incomplete character.
// The window ids[prefix..] stays a few tokens long, so each push costs O(window), not O(n).
//
//   ids:    ... | prefix ........ read ........ end |
//                 └ emitted, kept ┘ └─ pending ─┘
//                   as context

import type { TextTokenizer } from "./tokenizer.ts";

/** What the stream decoder needs of a tokenizer. */
export type StreamDecodable = Pick<TextTokenizer, "decode">;

/** Options of {@link StreamDecoder}. */
export interface StreamDecoderOptions {
  /** Leave special tokens out of the text, as `decode(ids, { skipSpecialTokens: true })` does. */
  skipSpecialTokens?: boolean;
}

const REPLACEMENT_CHARACTER = "\uFFFD";

// A UTF-8 character has at most 4 bytes and every token carries at least one, so an incomplete
// character is resolved (completed or proven invalid) once 3 more tokens follow it. Text that still
// ends in U+FFFD after more pending tokens than that holds a real U+FFFD (invalid bytes from an
// untrained model, or the character itself); without this bound the window would grow forever.
const TOKENS_TO_RESOLVE_A_CHARACTER = 3;

/** Turns a stream of token ids into text pieces that never split a UTF-8 character. */
export class StreamDecoder {
  readonly #tokenizer: StreamDecodable;
  readonly #skipSpecialTokens: boolean;
  // Only ids from the prefix offset on are kept; the offsets below are relative to this window.
  #window: number[] = [];
  #readOffset = 0;

  constructor(tokenizer: StreamDecodable, options: StreamDecoderOptions = {}) {
    this.#tokenizer = tokenizer;
    this.#skipSpecialTokens = options.skipSpecialTokens ?? false;
  }

  /** Adds one token id and returns the text it completes, possibly "". */
  push(id: number): string {
    this.#window.push(id);
    const emittedText = this.#decode(this.#window.slice(0, this.#readOffset));
    const fullText = this.#decode(this.#window);
    if (fullText.length > emittedText.length && !fullText.endsWith(REPLACEMENT_CHARACTER)) {
      return this.#commit(this.#window.length, fullText.slice(emittedText.length));
    }
    const pending = this.#window.length - this.#readOffset;
    if (pending > TOKENS_TO_RESOLVE_A_CHARACTER) {
      return this.#commitResolvedPart(emittedText, fullText);
    }
    return "";
  }

  /** Returns whatever text is still held back (an incomplete character decodes as U+FFFD). */
  flush(): string {
    if (this.#readOffset === this.#window.length) return "";
    const emittedText = this.#decode(this.#window.slice(0, this.#readOffset));
    const fullText = this.#decode(this.#window);
    return this.#commit(this.#window.length, fullText.slice(emittedText.length));
  }

  // The stream is stuck on U+FFFD: emit the longest prefix whose text the later tokens have already
  // fixed. A cut is safe when at least TOKENS_TO_RESOLVE_A_CHARACTER tokens follow it and the text
  // up to it is a prefix of the full text (so later bytes did not turn its U+FFFD into a character).
  #commitResolvedPart(emittedText: string, fullText: string): string {
    for (let cut = this.#window.length - TOKENS_TO_RESOLVE_A_CHARACTER; cut > this.#readOffset; cut--) {
      const cutText = this.#decode(this.#window.slice(0, cut));
      if (cutText.length > emittedText.length && fullText.startsWith(cutText)) {
        return this.#commit(cut, cutText.slice(emittedText.length));
      }
    }
    return "";
  }

  // Marks ids up to `end` as emitted; the previous read offset becomes the new prefix offset, so
  // one emitted token stays as left context for the leading-space rules of the decoder.
  #commit(end: number, text: string): string {
    this.#window = this.#window.slice(this.#readOffset);
    this.#readOffset = end - this.#readOffset;
    return text;
  }

  #decode(ids: number[]): string {
    // No clean-up: it rewrites text across token boundaries (" ." -> "."), so pieces would stop
    // adding up; streaming servers (TGI, vLLM) leave it out too.
    return this.#tokenizer.decode(ids, { skipSpecialTokens: this.#skipSpecialTokens, cleanUpTokenizationSpaces: false });
  }
}
