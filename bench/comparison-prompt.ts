/** The prompt both engines of the quantized bench evaluate before decoding: 16 ids below 256, in every vocabulary bench/gguf.ts writes. */
export const COMPARISON_PROMPT: readonly number[] = Array.from({ length: 16 }, (_, i) => 100 + 7 * i);
