import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LlamaEngine, type RowLogits } from "../engine/llama-engine.ts";
import { KvCache } from "../engine/kv-cache.ts";
import { SequenceBatch } from "../engine/sequence-batch.ts";
import { referenceForward } from "../model/reference.ts";
import { tinyModel } from "../testing/tiny-checkpoints.ts";
import { makeByteLevelTokenizerFiles } from "../tokenizer/byte-level.ts";
import { TextTokenizer } from "../tokenizer/tokenizer.ts";
import { generate, generateText, GenerationError, PromptTooLongError, type GenerationEvent, type TokenStepper } from "./generate.ts";
import { argmax } from "./sampler.ts";

const files = makeByteLevelTokenizerFiles();
const tokenizer = TextTokenizer.fromJson(files.tokenizerJson, files.tokenizerConfig);

async function collect(events: AsyncIterable<GenerationEvent>): Promise<GenerationEvent[]> {
  const out: GenerationEvent[] = [];
  for await (const event of events) out.push(event);
  return out;
}

describe("generation on a tiny model", () => {
  const { config, weights } = tinyModel("llama-gqa");
  let engine: LlamaEngine;
  beforeAll(async () => {
    engine = await LlamaEngine.create(config, weights);
  });
  afterAll(() => engine.dispose());

  it("greedy decoding picks the reference forward's argmax at every step", async () => {
    const prompt = tokenizer.encode("The quick brown fox");
    const { ids } = await generateText(engine, tokenizer, "The quick brown fox", { maxNewTokens: 8, temperature: 0, eosTokenIds: [] });
    expect(ids).toHaveLength(8);
    const reference = referenceForward(config, weights, [...prompt, ...ids]);
    ids.forEach((id, i) => expect(id).toBe(argmax(Float32Array.from(reference[prompt.length - 1 + i]))));
  });

  it("the same seed gives the same text; different seeds give different text", async () => {
    const options = { maxNewTokens: 24, temperature: 1, eosTokenIds: [] };
    const a = await generateText(engine, tokenizer, "Once upon", { ...options, seed: 11 });
    const b = await generateText(engine, tokenizer, "Once upon", { ...options, seed: 11 });
    const c = await generateText(engine, tokenizer, "Once upon", { ...options, seed: 12 });
    expect(b.ids).toEqual(a.ids);
    expect(c.ids).not.toEqual(a.ids);
  });

  it("stops at maxNewTokens with reason length, and at a stop sequence with the text cut before it", async () => {
    const options = { maxNewTokens: 30, temperature: 0.8, seed: 5, eosTokenIds: [] };
    const full = await generateText(engine, tokenizer, "abc", options);
    expect(full.reason).toBe("length");
    expect(full.ids).toHaveLength(30);
    const stop = full.text.slice(6, 8);
    const cut = await generateText(engine, tokenizer, "abc", { ...options, stop: [stop] });
    expect(cut.reason).toBe("stop");
    expect(cut.text).toBe(full.text.slice(0, full.text.indexOf(stop)));
  });

  it("refuses a prompt that fills the context, naming the limit", async () => {
    const long = new Array(config.maxPositionEmbeddings).fill(65);
    await expect(collect(generate(engine, tokenizer, long, { maxNewTokens: 1 }))).rejects.toThrow(GenerationError);
    await expect(collect(generate(engine, tokenizer, long, { maxNewTokens: 1 }))).rejects.toThrow(/512 tokens/);
    await expect(collect(generate(engine, tokenizer, [65], { maxNewTokens: 0 }))).rejects.toThrow(/maxNewTokens/);
    const context = config.maxPositionEmbeddings;
    const tooLong = await collect(generate(engine, tokenizer, long, { maxNewTokens: 1 })).then(
      () => null,
      (error: unknown) => error,
    );
    expect(tooLong).toBeInstanceOf(PromptTooLongError);
    expect(tooLong).toMatchObject({ promptTokens: context, limit: context, modelContext: context });
    await expect(collect(generate(engine, tokenizer, [65], { maxNewTokens: 0 }))).rejects.not.toBeInstanceOf(PromptTooLongError);
  });
});

/** An engine that emits a fixed script of token ids, whatever the input. */
function scriptedEngine(script: number[]): TokenStepper {
  const { config } = tinyModel("llama-gqa");
  let position = 0;
  return {
    config,
    createBatch: (rows: number, cacheOptions = {}) => new SequenceBatch(config, new KvCache(config, rows, cacheOptions), null),
    async step(batch: SequenceBatch, tokens: number[][]): Promise<RowLogits[]> {
      batch.cache.advance(
        0,
        tokens.map((t) => t.length),
      );
      const data = new Float32Array(config.vocabSize).fill(-10);
      data[script[Math.min(position++, script.length - 1)]] = 10;
      return [{ positions: 1, data }];
    },
  };
}

describe("streamed text", () => {
  const text = "naïve 東京 🌍 done";
  const script = [...new TextEncoder().encode(text), 258]; // then <|im_end|>

  it("never splits a UTF-8 character and ends at EOS with the whole text", async () => {
    const events = await collect(generate(scriptedEngine(script), tokenizer, [65], { maxNewTokens: 100, temperature: 0 }));
    const pieces = events.flatMap((e) => (e.type === "token" ? [e.text] : []));
    for (const piece of pieces) expect(piece).not.toContain("\uFFFD");
    const finish = events.at(-1)!;
    expect(finish).toMatchObject({ type: "finish", reason: "stop", text, completionTokens: script.length });
    expect(pieces.join("") + (finish.type === "finish" ? finish.tail : "")).toBe(text);
    // The 4-byte globe arrives whole, on the token that completes it.
    expect(pieces).toContain("🌍");
  });

  it("releases a held-back partial stop sequence when generation ends for another reason", async () => {
    const events = await collect(generate(scriptedEngine(script), tokenizer, [65], { maxNewTokens: 100, temperature: 0, stop: ["done!"] }));
    const finish = events.at(-1)!;
    expect(finish.type === "finish" && finish.tail).toBe("done");
    expect(finish.type === "finish" && finish.text).toBe(text);
  });
});
