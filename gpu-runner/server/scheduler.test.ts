import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LlamaEngine } from "../engine/llama-engine.ts";
import { generate, type GenerationEvent, type GenerationOptions } from "../generate/generate.ts";
import { computeBasis } from "../pica/basis.ts";
import { randomAdapter } from "../testing/random-adapters.ts";
import { tinyModel } from "../testing/tiny-checkpoints.ts";
import { makeByteLevelTokenizerFiles } from "../tokenizer/byte-level.ts";
import { TextTokenizer } from "../tokenizer/tokenizer.ts";
import { withStepHook } from "../testing/step-hook.ts";
import { PromptCostFit, QueueFullError, Scheduler } from "./scheduler.ts";

const files = makeByteLevelTokenizerFiles();
const tokenizer = TextTokenizer.fromJson(files.tokenizerJson, files.tokenizerConfig);
const { config, weights } = tinyModel("llama-gqa");

async function collect(events: AsyncIterable<GenerationEvent>): Promise<{ ids: number[]; text: string; reason: string }> {
  const ids: number[] = [];
  for await (const event of events) {
    if (event.type === "token") ids.push(event.id);
    else return { ids, text: event.text, reason: event.reason };
  }
  throw new Error("stream ended without a finish event");
}

describe("Scheduler", () => {
  let engine: LlamaEngine;
  beforeAll(async () => {
    const basis = await computeBasis(config, weights, { rMax: 8 });
    engine = await LlamaEngine.create(config, weights, { adapters: { basis, rank: 4 } });
    engine.registerAdapter("a", randomAdapter(config, basis, { rank: 4, seed: 1 }));
    engine.registerAdapter("b", randomAdapter(config, basis, { rank: 2, seed: 2, sharing: "per_layer" }));
  });
  afterAll(() => engine.dispose());

  const prompts = ["Hello there", "A", "The quick brown fox jumps", "12345", "ünïcödé ✓", "zz"];
  const adapters = [null, "a", "b", "a", null, "b"];

  async function alone(prompt: string, adapterId: string | null, options: GenerationOptions) {
    return collect(generate(engine, tokenizer, tokenizer.encode(prompt), { ...options, adapterId }));
  }

  it("continuous batching gives every request exactly what it gets alone, across adapters", async () => {
    const scheduler = new Scheduler(engine, tokenizer, { maxBatch: 3, maxQueue: 16 });
    const options = (i: number): GenerationOptions => ({ maxNewTokens: 6 + 3 * i, temperature: i % 2 === 0 ? 0 : 0.9, seed: 10 + i, eosTokenIds: [] });
    const results = await Promise.all(
      prompts.map((p, i) => collect(scheduler.submit({ promptIds: tokenizer.encode(p), adapterId: adapters[i], options: options(i) }))),
    );
    for (let i = 0; i < prompts.length; i++) {
      const expected = await alone(prompts[i], adapters[i], options(i));
      expect(results[i].ids, `request ${i}`).toEqual(expected.ids);
      expect(results[i].text).toBe(expected.text);
    }
    expect(scheduler.stats).toEqual({ running: 0, waiting: 0 });
  });

  it("a request that joins a running batch mid-way is exact too", async () => {
    const scheduler = new Scheduler(engine, tokenizer, { maxBatch: 4, maxQueue: 16 });
    const options: GenerationOptions = { maxNewTokens: 30, temperature: 0, eosTokenIds: [] };
    const first = scheduler.submit({ promptIds: tokenizer.encode("first"), adapterId: "a", options });
    const late: Promise<{ ids: number[] }>[] = [];
    let seen = 0;
    for await (const event of first) {
      if (event.type === "token" && ++seen === 5)
        late.push(collect(scheduler.submit({ promptIds: tokenizer.encode("late arrival"), adapterId: "b", options: { ...options, maxNewTokens: 8 } })));
    }
    const [joined] = await Promise.all(late);
    expect(joined.ids).toEqual((await alone("late arrival", "b", { ...options, maxNewTokens: 8 })).ids);
  });

  it("chunked prefill: a long prompt is read a few tokens per step while the other rows decode every step, and every request equals itself alone", async () => {
    const steps: number[][] = []; // tokens fed to each row, per step
    const recording = Object.create(engine) as LlamaEngine;
    recording.step = (batch, tokens, logits) => {
      steps.push(tokens.map((t) => t.length));
      return engine.step(batch, tokens, logits);
    };
    const scheduler = new Scheduler(recording, tokenizer, { maxBatch: 3, maxQueue: 8, prefillChunkTokens: 5 });
    const options: GenerationOptions = { maxNewTokens: 40, temperature: 0, eosTokenIds: [] };
    const longPrompt = "A long prompt that arrives while two rows decode. ".repeat(2); // 100 byte tokens
    const first = scheduler.submit({ promptIds: tokenizer.encode("one"), adapterId: "a", options });
    const second = collect(scheduler.submit({ promptIds: tokenizer.encode("two"), adapterId: null, options }));
    let late: Promise<{ ids: number[] }> | null = null;
    const firstIds: number[] = [];
    for await (const event of first) {
      if (event.type !== "token") continue;
      firstIds.push(event.id);
      if (firstIds.length === 3)
        late = collect(scheduler.submit({ promptIds: tokenizer.encode(longPrompt), adapterId: "b", options: { ...options, maxNewTokens: 6 } }));
    }
    const [secondResult, lateResult] = await Promise.all([second, late!]);
    expect(firstIds).toEqual((await alone("one", "a", options)).ids);
    expect(secondResult.ids).toEqual((await alone("two", null, options)).ids);
    expect(lateResult.ids).toEqual((await alone(longPrompt, "b", { ...options, maxNewTokens: 6 })).ids);

    // While the long prompt was read (20 steps of 5 tokens), both other rows decoded at every step.
    const prefillSteps = steps.filter((counts) => counts.length === 3 && counts[2] > 1);
    expect(prefillSteps).toHaveLength(tokenizer.encode(longPrompt).length / 5);
    for (const counts of prefillSteps) expect(counts).toEqual([1, 1, 5]);
    expect(Math.max(...steps.map((counts) => counts.reduce((a, b) => a + b, 0)))).toBeLessThanOrEqual(7);
  });

  it("adaptive prefill reads a prompt in chunks no larger than the ceiling, at least a token a step, and answers exactly", async () => {
    const steps: number[][] = [];
    const recording = Object.create(engine) as LlamaEngine;
    recording.step = (batch, tokens, logits) => {
      steps.push(tokens.map((t) => t.length));
      return engine.step(batch, tokens, logits);
    };
    const scheduler = new Scheduler(recording, tokenizer, { maxBatch: 2, maxQueue: 4, prefillChunkTokens: 8, adaptivePrefill: true });
    const options: GenerationOptions = { maxNewTokens: 30, temperature: 0, eosTokenIds: [] };
    const longPrompt = "chunks of a prompt beside a decoding row ".repeat(2);
    const first = scheduler.submit({ promptIds: tokenizer.encode("row"), adapterId: null, options });
    let late: Promise<{ ids: number[] }> | null = null;
    const ids: number[] = [];
    for await (const event of first) {
      if (event.type !== "token") continue;
      ids.push(event.id);
      if (ids.length === 2)
        late = collect(scheduler.submit({ promptIds: tokenizer.encode(longPrompt), adapterId: "a", options: { ...options, maxNewTokens: 4 } }));
    }
    expect(ids).toEqual((await alone("row", null, options)).ids);
    expect((await late!).ids).toEqual((await alone(longPrompt, "a", { ...options, maxNewTokens: 4 })).ids);
    // No step read more than the ceiling, so the prompt took at least ⌈length / 8⌉ steps beside the decoding row.
    for (const counts of steps) for (const n of counts) expect(n).toBeLessThanOrEqual(8);
    expect(steps.filter((counts) => counts.length === 2).length).toBeGreaterThanOrEqual(Math.ceil(tokenizer.encode(longPrompt).length / 8));
  });

  it("bounds each request's context by the KV cache budget and refuses a longer prompt naming it", async () => {
    const bytesPerToken = config.numLayers * 2 * config.numKvHeads * config.headDim * 4;
    const budgeted = await LlamaEngine.create(config, weights, { kvCache: { budgetBytes: 2 * 40 * bytesPerToken } });
    const scheduler = new Scheduler(budgeted, tokenizer, { maxBatch: 2, maxQueue: 4 });
    expect(scheduler.contextLimit).toBe(40); // 40 tokens for each of 2 rows, under the model's 512
    const long = tokenizer.encode("x".repeat(45));
    expect(() => scheduler.submit({ promptIds: long, adapterId: null, options: { maxNewTokens: 4, temperature: 0, eosTokenIds: [] } })).toThrow(
      /prompt has 45 tokens; this runner holds 40 tokens per sequence \(its KV cache memory budget; the model's own context is 512\)/,
    );
    // A prompt that fits ends at the limit with finish reason "length" rather than overflowing the cache.
    const fits = await collect(
      scheduler.submit({ promptIds: tokenizer.encode("y".repeat(30)), adapterId: null, options: { maxNewTokens: 100, temperature: 0, eosTokenIds: [] } }),
    );
    expect(fits.reason).toBe("length");
    expect(fits.ids.length).toBe(10);
    await budgeted.dispose();
  });

  it("a cancelled or disconnected request frees its row at once; the others finish", async () => {
    const scheduler = new Scheduler(engine, tokenizer, { maxBatch: 2, maxQueue: 4 });
    const controller = new AbortController();
    const long = scheduler.submit({
      promptIds: tokenizer.encode("long"),
      adapterId: null,
      options: { maxNewTokens: 400, temperature: 0, eosTokenIds: [] },
      signal: controller.signal,
    });
    const other = collect(
      scheduler.submit({ promptIds: tokenizer.encode("other"), adapterId: "a", options: { maxNewTokens: 12, temperature: 0, eosTokenIds: [] } }),
    );
    let tokens = 0;
    for await (const event of long) if (event.type === "token" && ++tokens === 3) controller.abort();
    expect(tokens).toBeLessThan(10);
    expect((await other).ids).toEqual((await alone("other", "a", { maxNewTokens: 12, temperature: 0, eosTokenIds: [] })).ids);

    const disconnected = scheduler.submit({
      promptIds: tokenizer.encode("gone"),
      adapterId: null,
      options: { maxNewTokens: 400, temperature: 0, eosTokenIds: [] },
    });
    for await (const event of disconnected) if (event.type === "token") break; // the client goes away
    await scheduler.close();
    expect(scheduler.stats).toEqual({ running: 0, waiting: 0 });
  });

  it("refuses work beyond its queue with a retry time, and unknown adapters with an error", async () => {
    const scheduler = new Scheduler(engine, tokenizer, { maxBatch: 1, maxQueue: 1 });
    const options: GenerationOptions = { maxNewTokens: 5, temperature: 0, eosTokenIds: [] };
    const running = scheduler.submit({ promptIds: [65], adapterId: null, options });
    const queued = scheduler.submit({ promptIds: [66], adapterId: null, options });
    let refusal: unknown = null;
    try {
      scheduler.submit({ promptIds: [67], adapterId: null, options });
    } catch (error) {
      refusal = error;
    }
    expect(refusal).toBeInstanceOf(QueueFullError);
    expect((refusal as QueueFullError).retryAfterSeconds).toBeGreaterThanOrEqual(1);
    await Promise.all([collect(running), collect(queued)]);
    await expect(collect(scheduler.submit({ promptIds: [65], adapterId: "missing", options }))).rejects.toThrow(/adapter missing is not loaded/);
  });

  it("rotates admission across adapters so a busy adapter cannot starve another", async () => {
    const scheduler = new Scheduler(engine, tokenizer, { maxBatch: 1, maxQueue: 16 });
    const options: GenerationOptions = { maxNewTokens: 2, temperature: 0, eosTokenIds: [] };
    const order: string[] = [];
    const submit = (adapterId: string, label: string) => collect(scheduler.submit({ promptIds: [70], adapterId, options })).then(() => order.push(label));
    await Promise.all([submit("a", "a1"), submit("a", "a2"), submit("a", "a3"), submit("a", "a4"), submit("b", "b1")]);
    expect(order.indexOf("b1")).toBeLessThanOrEqual(1);
  });

  it("a shutdown lets short requests finish and ends the ones past its grace period with an error", async () => {
    // 3 ms a step: the short request ends well inside the grace period, the long ones far outside it.
    const slow = withStepHook(engine, () => new Promise((resolve) => setTimeout(resolve, 3)));
    const scheduler = new Scheduler(slow, tokenizer, { maxBatch: 1, maxQueue: 4 });
    const short = collect(
      scheduler.submit({ promptIds: tokenizer.encode("hi"), adapterId: null, options: { maxNewTokens: 2, temperature: 0, eosTokenIds: [] } }),
    );
    const long = collect(
      scheduler.submit({ promptIds: tokenizer.encode("go"), adapterId: null, options: { maxNewTokens: 100, temperature: 0, eosTokenIds: [] } }),
    );
    const queued = collect(
      scheduler.submit({ promptIds: tokenizer.encode("later"), adapterId: null, options: { maxNewTokens: 100, temperature: 0, eosTokenIds: [] } }),
    );
    const closing = scheduler.close(100);
    expect(() => scheduler.submit({ promptIds: [1], adapterId: null, options: { maxNewTokens: 1 } })).toThrow(/closed/);
    expect((await short).ids).toHaveLength(2);
    await expect(long).rejects.toThrow(/shutting down/);
    await expect(queued).rejects.toThrow(/shutting down/);
    await closing;
    expect(scheduler.stats).toEqual({ running: 0, waiting: 0 });
  });
});

describe("PromptCostFit", () => {
  it("separates a run's fixed cost from the cost per prompt token", () => {
    const fit = new PromptCostFit();
    expect(fit.fit()).toBeNull();
    fit.add(16, 160); // 80 ms to read the weights, 5 ms a token
    expect(fit.fit()).toEqual({ fixedMs: 0, perTokenMs: 10 }); // one size seen: all of it per token
    for (const tokens of [4, 8, 16, 2, 12]) fit.add(tokens, 80 + 5 * tokens);
    const { fixedMs, perTokenMs } = fit.fit()!;
    expect(fixedMs).toBeCloseTo(80, 6);
    expect(perTokenMs).toBeCloseTo(5, 6);
  });
});
