/**
 * Text generation for one sequence: prefill the prompt, then decode token by token, yielding
 * each token with the text it completes (never half a UTF-8 character, never part of a stop
 * sequence). Batched serving of many sequences is the runner's scheduler; this is the loop it
 * and the demos build on.
 */
import type { LlamaEngine } from "../engine/llama-engine.ts";
import type { TextTokenizer } from "../tokenizer/tokenizer.ts";
import { Completion } from "./completion.ts";
import type { TokenLogprob } from "./logprobs.ts";
import { validateSamplingOptions, type SamplingOptions } from "./sampler.ts";

export interface GenerationOptions extends SamplingOptions {
  maxNewTokens: number;
  stop?: string[]; // text that ends generation (not included in the output)
  eosTokenIds?: number[]; // ids that end generation; default: the tokenizer's
  adapterId?: string | null; // a registered PiCa adapter; absent or null: the base model
  topLogprobs?: number | null; // report each token's log-probability and this many alternatives; absent or null: none
  constraint?: TokenConstraint | null; // a grammar the output must follow (structured output, tool calls)
}

/** A grammar that decides, token by token, what may come next (one per sequence). */
export interface TokenConstraint {
  mask(logits: Float32Array): void; // sets every token not allowed now to -Infinity, in place
  accept(id: number): void; // advances past a sampled token
  dispose(): void; // frees it once its sequence has ended
}

/** Why generation ended, in OpenAI's terms: a stop (EOS or stop sequence) or the length limit. */
export type FinishReason = "stop" | "length";

export type GenerationEvent =
  | { type: "token"; id: number; text: string; logprob?: TokenLogprob } // text: newly releasable text, possibly ""
  // tail: text held back until the end (a partial stop sequence that never completed); text: all of it
  | { type: "finish"; reason: FinishReason; tail: string; text: string; promptTokens: number; completionTokens: number };

/** Raised for a request the model cannot serve (too long, bad options); the message names the field. */
export class GenerationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "GenerationError";
  }
}

/** The prompt leaves no room for a completion within the tokens a sequence may hold. */
export class PromptTooLongError extends GenerationError {
  constructor(
    readonly promptTokens: number,
    readonly limit: number, // the tokens one sequence may hold here, prompt plus completion
    readonly modelContext: number, // the model's own context; above `limit` when the runner's KV budget is tighter
  ) {
    const held =
      limit < modelContext
        ? `this runner holds ${limit} tokens per sequence (its KV cache memory budget; the model's own context is ${modelContext})`
        : `the model's context is ${modelContext} tokens`;
    super(`prompt has ${promptTokens} tokens; ${held}, prompt plus completion`);
    this.name = "PromptTooLongError";
  }
}

/** What generation needs of an engine (tests drive it with a scripted one). */
export type TokenStepper = Pick<LlamaEngine, "config" | "createBatch" | "step">;

/** Checks a prompt and options against the model (and a runner's tighter context limit) before any work is done. */
export function validateGeneration(
  engine: TokenStepper,
  promptIds: number[],
  options: GenerationOptions,
  contextLimit = engine.config.maxPositionEmbeddings,
): void {
  const context = engine.config.maxPositionEmbeddings;
  if (promptIds.length === 0) throw new GenerationError("prompt is empty");
  if (promptIds.length >= Math.min(context, contextLimit)) throw new PromptTooLongError(promptIds.length, Math.min(context, contextLimit), context);
  if (!Number.isInteger(options.maxNewTokens) || options.maxNewTokens < 1) {
    throw new GenerationError(`maxNewTokens must be an integer ≥ 1, got ${options.maxNewTokens}`);
  }
  try {
    validateSamplingOptions(options);
  } catch (error) {
    throw new GenerationError((error as Error).message);
  }
  for (const stop of options.stop ?? []) if (stop.length === 0) throw new GenerationError("stop sequences must not be empty");
}

/** Generates from token ids, yielding tokens as they come and a final `finish` event. */
export async function* generate(
  engine: TokenStepper,
  tokenizer: TextTokenizer,
  promptIds: number[],
  options: GenerationOptions,
): AsyncGenerator<GenerationEvent> {
  validateGeneration(engine, promptIds, options);
  const context = engine.config.maxPositionEmbeddings;
  const completion = new Completion(tokenizer, options, promptIds.length, context);
  const batch = engine.createBatch(1, { initialCapacity: Math.min(promptIds.length + options.maxNewTokens, context) });
  batch.addRow(options.adapterId ?? null);
  let [{ data: logits }] = await engine.step(batch, [promptIds]);
  for (;;) {
    const { events, next } = completion.advance(logits);
    yield* events;
    if (next === null) return;
    [{ data: logits }] = await engine.step(batch, [[next]]);
  }
}

/** Convenience: runs `generate` to the end and returns the text, token ids and finish reason. */
export async function generateText(
  engine: TokenStepper,
  tokenizer: TextTokenizer,
  prompt: string,
  options: GenerationOptions,
): Promise<{ text: string; ids: number[]; reason: FinishReason }> {
  const ids: number[] = [];
  for await (const event of generate(engine, tokenizer, tokenizer.encode(prompt), options)) {
    if (event.type === "token") ids.push(event.id);
    if (event.type === "finish") return { text: event.text, ids, reason: event.reason };
  }
  throw new Error("generation ended without a finish event");
}
