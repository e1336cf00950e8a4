/** The prompt both engines of the quantized bench evaluate before decoding: 16 ids below 256, in every vocabulary bench/gguf.ts writes. */
/** Tokens both engines decode untimed after the prompt, before the timed decode: the first steps after a start also fault in pages. */
export const WARM_UP_TOKENS = 16;

export const COMPARISON_PROMPT: readonly number[] = Array.from({ length: 16 }, (_, i) => 100 + 7 * i);
