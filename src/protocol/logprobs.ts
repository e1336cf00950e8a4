// Log-probabilities as OpenAI returns them: per token for chat, as parallel arrays for legacy
// completions. Values are the model's own (log-softmax of its logits, adapter included), before
// temperature, penalties, logit_bias and any grammar constraint reshape the sampling distribution.
import { z } from "zod";

/** Most alternatives per position a chat request may ask for (`top_logprobs`). */
export const MAX_CHAT_TOP_LOGPROBS = 20;
/** Most alternatives per position a legacy completion may ask for (`logprobs`). */
export const MAX_COMPLETION_LOGPROBS = 5;

const alternativeSchema = z.object({
  token: z.string(),
  logprob: z.number(),
  /** The token's UTF-8 bytes: a token may hold part of a character, which `token` cannot show. */
  bytes: z.array(z.int().min(0).max(255)).nullable(),
});

/** One generated token of a chat completion with its log-probability and the likeliest alternatives. */
export const chatTokenLogprobSchema = alternativeSchema.extend({ top_logprobs: z.array(alternativeSchema) });
export type ChatTokenLogprob = z.infer<typeof chatTokenLogprobSchema>;

/** A chat choice's (or chunk's) `logprobs`. */
export const chatLogprobsSchema = z.object({
  content: z.array(chatTokenLogprobSchema).nullable(),
  refusal: z.array(chatTokenLogprobSchema).nullable(),
});
export type ChatLogprobs = z.infer<typeof chatLogprobsSchema>;

/** A legacy completion choice's (or chunk's) `logprobs`: parallel arrays over its tokens. */
export const completionLogprobsSchema = z.object({
  tokens: z.array(z.string()),
  token_logprobs: z.array(z.number().nullable()),
  top_logprobs: z.array(z.record(z.string(), z.number()).nullable()).nullable(),
  /** Each token's offset in the choice's text, in UTF-16 code units. */
  text_offset: z.array(z.int().min(0)),
});
export type CompletionLogprobs = z.infer<typeof completionLogprobsSchema>;
