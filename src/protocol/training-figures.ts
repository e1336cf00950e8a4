// What a runner measures about training on its base model, reported in its heartbeat, so the edge
// estimates a job's tokens and seconds before it runs: the tokens its tokenizer's chat template
// adds around a conversation, and the rate its own finished jobs trained at.
import { z } from "zod";

/** Tokens the base model's template adds, beyond the tokens of the text itself. */
export const templateTokensSchema = z
  .object({
    /** A one-turn chat (a user and an assistant message), including any default system prompt. */
    conversation: z.int().min(0),
    /** Each further user and assistant pair. */
    turn: z.int().min(0),
    /** A system message (negative where it replaces a longer default system prompt). */
    system: z.int(),
    /** A prompt/completion example (start and end of text). */
    prompt_completion: z.int().min(0),
  })
  .strict();
export type TemplateTokens = z.infer<typeof templateTokensSchema>;

/** Training throughput measured on a runner's finished jobs; null until one has finished there. */
export const trainingRateSchema = z
  .object({
    /** Trained tokens (as `trained_tokens` counts them) per second of the training loop, evaluation included. */
    tokens_per_second: z.number().positive(),
    /** Seconds of a job outside the training loop: reading and tokenising the data, building the session, storing the adapter. */
    overhead_seconds: z.number().min(0),
    /** How many finished jobs the figures come from (a moving average). */
    jobs: z.int().min(1),
  })
  .strict();
export type TrainingRate = z.infer<typeof trainingRateSchema>;

/** The heartbeat's `training` field. */
export const trainingFiguresSchema = z
  .object({
    template_tokens: templateTokensSchema,
    rate: trainingRateSchema.nullable(),
  })
  .strict();
export type TrainingFigures = z.infer<typeof trainingFiguresSchema>;

/** What an estimate's seconds need of a rate: tokens per second and overhead per job. */
export type EstimateRate = Pick<TrainingRate, "tokens_per_second" | "overhead_seconds">;

/** The template tokens estimates assume before any runner has reported: ChatML-like templates, a few tokens a message. */
export const DEFAULT_TEMPLATE_TOKENS: TemplateTokens = { conversation: 10, turn: 10, system: 5, prompt_completion: 2 };

/**
 * The rate estimates assume before any runner has finished a job: about what the shipped model
 * trains at on 2 CPU cores, less a margin for training yielding to inference.
 */
export const DEFAULT_TRAINING_RATE: EstimateRate = { tokens_per_second: 2_500, overhead_seconds: 3 };
