/**
 * Load generation against an OpenAI-compatible server, S-LoRA style: streamed completions timed
 * chunk by chunk, prompts and output lengths drawn from fixed ranges, adapters drawn by a power
 * law, and two ways of sending them — a closed loop of clients that keeps the server saturated
 * (capacity), and Poisson arrivals at a fixed rate (latency below saturation).
 */
import { corpusDocument } from "../gpu-runner/pretrain/corpus.ts";
import type { Rng } from "../gpu-runner/random.ts";
import { readSseData, SSE_DONE } from "../src/protocol/sse.ts";

/** One request of a workload: which model, which prompt, how many tokens at most. */
export interface LoadRequest {
  model: string; // the base model id or an adapter id
  prompt: string;
  maxTokens: number;
}

/** What one streamed completion did, with times from performance.now(). */
export interface StreamedCompletion {
  request: LoadRequest;
  sentAt: number;
  chunkTimes: number[]; // arrival of every chunk that carried text
  completionTokens: number; // from the usage chunk; at least chunkTimes.length
  error: string | null; // an HTTP status or stream error; null when it finished or was aborted
  aborted: boolean; // stopped by the caller's signal before [DONE]
  status: number | null; // the HTTP status; null when no response came
  usageSeen: boolean; // the stream carried its usage chunk
}

/** Time to first token in ms, or null when no token came. */
export function timeToFirstToken(completion: StreamedCompletion): number | null {
  return completion.chunkTimes.length > 0 ? completion.chunkTimes[0] - completion.sentAt : null;
}

/** Mean ms between tokens after the first, or null with fewer than two chunks. */
export function timePerOutputToken(completion: StreamedCompletion): number | null {
  const times = completion.chunkTimes;
  if (times.length < 2) return null;
  // Chunks, not tokens, are what a client sees arrive; a byte-level model sends one per token.
  return (times[times.length - 1] - times[0]) / (times.length - 1);
}

/**
 * Sends one streamed text completion (temperature 0, usage included) and records when each chunk
 * arrives: the events are read one by one as they come, since the timings are taken per chunk.
 */
export async function streamCompletion(
  baseUrl: string,
  request: LoadRequest,
  signal?: AbortSignal,
  headers: Record<string, string> = {},
): Promise<StreamedCompletion> {
  const result: StreamedCompletion = {
    request,
    sentAt: performance.now(),
    chunkTimes: [],
    completionTokens: 0,
    error: null,
    aborted: false,
    status: null,
    usageSeen: false,
  };
  try {
    const response = await fetch(`${baseUrl}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body: JSON.stringify({
        model: request.model,
        prompt: request.prompt,
        max_tokens: request.maxTokens,
        temperature: 0,
        stream: true,
        stream_options: { include_usage: true },
      }),
      signal,
    });
    result.status = response.status;
    if (!response.ok || response.body === null) {
      result.error = `HTTP ${response.status} for ${request.model}: ${(await response.text()).slice(0, 300)}`;
      return result;
    }
    for await (const data of readSseData(response.body)) {
      const now = performance.now();
      if (data === SSE_DONE) {
        result.completionTokens = Math.max(result.completionTokens, result.chunkTimes.length);
        return result;
      }
      const chunk = JSON.parse(data) as { choices?: { text?: string }[]; usage?: { completion_tokens: number } | null; error?: { message: string } };
      if (chunk.error !== undefined) {
        result.error = `stream error for ${request.model}: ${chunk.error.message}`;
        return result;
      }
      if (chunk.usage !== undefined && chunk.usage !== null) {
        result.completionTokens = chunk.usage.completion_tokens;
        result.usageSeen = true;
      }
      if ((chunk.choices?.[0]?.text ?? "").length > 0) result.chunkTimes.push(now);
    }
    result.error = `the stream for ${request.model} ended without [DONE]`;
  } catch (error) {
    if (signal?.aborted) result.aborted = true;
    else {
      const cause = (error as Error).cause as { code?: string; message?: string } | undefined;
      const when = result.status === null ? "before its response" : `after ${result.chunkTimes.length} chunks`;
      result.error = `request for ${request.model} failed ${when}: ${(error as Error).message}${cause ? ` (${cause.code ?? cause.message})` : ""}`;
    }
  }
  return result;
}

/** Ranges a workload draws from, inclusive. */
export interface WorkloadRanges {
  promptChars: [number, number]; // one token per byte on a byte-level model
  maxTokens: [number, number];
}

/** A uniform integer in [min, max]. */
export function uniformInteger(rng: Rng, [min, max]: [number, number]): number {
  return min + Math.floor(rng.uniform() * (max - min + 1));
}

// The corpus's stories open with "<Name> had a"; its records, facts and conversations end within
// a few tokens, and outputs cut short by EOS would make settings differ in work, not in speed.
const STORY_OPENING = /^[A-Z][a-z]+ had a /;

/**
 * A prompt of exactly `length` characters cut from stories of the base model's corpus, which the
 * model continues for longer than a bench's outputs, so outputs mostly run to their max_tokens.
 */
export function corpusPrompt(rng: Rng, length: number): string {
  let text = "";
  for (let attempts = 0; text.length < length; attempts++) {
    if (attempts > 1000) throw new Error(`no corpus document in 1000 opens with ${STORY_OPENING}; has the corpus changed?`);
    const document = corpusDocument(rng);
    if (STORY_OPENING.test(document)) text += (text.length > 0 ? " " : "") + document;
  }
  return text.slice(0, length);
}

/**
 * Picks one of `count` items with probability ∝ 1/(i+1)^alpha (a Zipf law; S-LoRA uses alpha 1
 * for adapter popularity). Returns a function of a uniform source.
 */
export function powerLawSampler(count: number, alpha: number): (rng: Rng) => number {
  const cumulative = new Float64Array(count);
  let total = 0;
  for (let i = 0; i < count; i++) cumulative[i] = total += 1 / (i + 1) ** alpha;
  return (rng) => {
    const target = rng.uniform() * total;
    let low = 0;
    let high = count - 1;
    while (low < high) {
      const mid = (low + high) >> 1;
      if (cumulative[mid] > target) high = mid;
      else low = mid + 1;
    }
    return low;
  };
}

/**
 * Requests drawn in order: a prompt and an output length from `ranges` with `rng`, and a model
 * from `pickModel`, which should use its own generator so every setting of a bench sees the same
 * prompts and lengths whatever models it picks.
 */
export function requestSource(rng: Rng, ranges: WorkloadRanges, pickModel: () => string): () => LoadRequest {
  return () => ({
    model: pickModel(),
    prompt: corpusPrompt(rng, uniformInteger(rng, ranges.promptChars)),
    maxTokens: uniformInteger(rng, ranges.maxTokens),
  });
}

/** What a closed loop measured inside its window. */
export interface ClosedLoopResult {
  tokens: number; // completion tokens that arrived inside the window
  requests: number; // requests that finished inside the window
  windowMs: number;
  errors: string[];
  completions: StreamedCompletion[]; // every finished request (window or not)
}

/** How a closed loop runs: clients, the ramp before the window, the window, and a hook at its edges. */
export interface ClosedLoopOptions {
  clients: number;
  warmupMs: number;
  windowMs: number;
  onWindow?: (edge: "open" | "close") => void; // e.g. to read CPU counters over the same window
  headers?: Record<string, string>; // sent with every request (e.g. a runner's secret)
}

/**
 * Keeps `clients` requests in flight (each client sends its next request when the last ends),
 * counts tokens that arrive in [warmupMs, warmupMs + windowMs), then aborts what is still running.
 */
export async function closedLoop(baseUrl: string, next: () => LoadRequest, options: ClosedLoopOptions): Promise<ClosedLoopResult> {
  const controller = new AbortController();
  const start = performance.now();
  const windowStart = start + options.warmupMs;
  const windowEnd = windowStart + options.windowMs;
  const completions: StreamedCompletion[] = [];
  const errors: string[] = [];
  let tokens = 0;
  let requests = 0;

  const client = async () => {
    while (!controller.signal.aborted) {
      const completion = await streamCompletion(baseUrl, next(), controller.signal, options.headers);
      for (const time of completion.chunkTimes) if (time >= windowStart && time < windowEnd) tokens++;
      if (completion.aborted) break;
      if (completion.error !== null) {
        errors.push(completion.error);
        continue;
      }
      const finishedAt = completion.chunkTimes.at(-1) ?? performance.now();
      // Tokens that carried no text of their own (a byte of a longer character) arrive with the last chunk.
      if (finishedAt >= windowStart && finishedAt < windowEnd) {
        tokens += completion.completionTokens - completion.chunkTimes.length;
        requests++;
      }
      completions.push(completion);
    }
  };
  const clients = Array.from({ length: options.clients }, client);
  await new Promise((resolve) => setTimeout(resolve, windowStart - performance.now()));
  options.onWindow?.("open");
  await new Promise((resolve) => setTimeout(resolve, windowEnd - performance.now()));
  options.onWindow?.("close");
  controller.abort();
  await Promise.all(clients);
  return { tokens, requests, windowMs: options.windowMs, errors, completions };
}

/**
 * Sends requests at Poisson arrivals of `ratePerSecond` for `durationMs` (open loop: an arrival
 * never waits for an earlier request) and resolves with every completion once all have ended.
 */
export async function poissonLoad(
  baseUrl: string,
  next: () => LoadRequest,
  rng: Rng,
  options: { ratePerSecond: number; durationMs: number; headers?: Record<string, string> },
): Promise<StreamedCompletion[]> {
  const start = performance.now();
  const pending: Promise<StreamedCompletion>[] = [];
  for (let at = exponential(rng, options.ratePerSecond); at < options.durationMs; at += exponential(rng, options.ratePerSecond)) {
    const request = next();
    const wait = start + at - performance.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    pending.push(streamCompletion(baseUrl, request, undefined, options.headers));
  }
  return Promise.all(pending);
}

/** An exponential gap in ms between arrivals at `ratePerSecond`. */
function exponential(rng: Rng, ratePerSecond: number): number {
  return (-Math.log(1 - rng.uniform()) / ratePerSecond) * 1000;
}
