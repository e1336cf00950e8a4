import { beforeAll, describe, expect, it } from "vitest";
import { parseTrainingJsonl } from "../../src/training-data.ts";
import { LlamaEngine } from "../engine/llama-engine.ts";
import { argmax } from "../generate/sampler.ts";
import type { PicaAdapter } from "../pica/types.ts";
import { computeBasis } from "../pica/basis.ts";
import { tinyModel } from "../testing/tiny-checkpoints.ts";
import { makeByteLevelTokenizerFiles } from "../tokenizer/byte-level.ts";
import { TextTokenizer } from "../tokenizer/tokenizer.ts";
import { parseCheckpoint, serializeCheckpoint, type TrainerCheckpoint } from "./checkpoint.ts";
import { tokenizeRecord, type TokenizedExample } from "./tokenize.ts";
import { fineTune, TrainingDataError, type TrainerEvent, type TrainerModel } from "./trainer.ts";

const files = makeByteLevelTokenizerFiles();
const tokenizer = TextTokenizer.fromJson(files.tokenizerJson, files.tokenizerConfig);
const WORDS = ["red", "blue", "green", "gold", "grey", "pink", "teal", "navy", "plum", "rose", "sand", "jade"];

/** A small deterministic task: answer with the word in capitals. */
function dataset(count: number, offset = 0): string {
  return Array.from({ length: count }, (_, i) => {
    const word = WORDS[(i + offset) % WORDS.length];
    return JSON.stringify({
      messages: [
        { role: "user", content: `shout ${word}` },
        { role: "assistant", content: word.toUpperCase() },
      ],
    });
  }).join("\n");
}

/** The examples of a JSONL file as the trainer sees them (inputs, shifted labels, loss weights). */
function tokenized(jsonl: string): TokenizedExample[] {
  return parseTrainingJsonl(jsonl).examples.map((record) => {
    const outcome = tokenizeRecord(record, tokenizer, { maxLength: 512 });
    if (!outcome.ok) throw new Error(outcome.reason);
    return outcome.example;
  });
}

/**
 * Trained positions whose greedy next token, served by an engine (with the adapter, or the base
 * model for null), is the label: the token accuracy counted outside the training graph.
 */
async function servedHits(model: TrainerModel, adapter: PicaAdapter | null, examples: TokenizedExample[]): Promise<{ hits: number; tokens: number }> {
  const engine = await LlamaEngine.create(model.config, model.weights, { adapters: { basis: model.basis, rank: 4 } });
  try {
    if (adapter !== null) engine.registerAdapter("trained", adapter);
    const batch = engine.createBatch(examples.length);
    for (let row = 0; row < examples.length; row++) batch.addRow(adapter === null ? null : "trained");
    const logits = await engine.step(
      batch,
      examples.map((e) => e.inputIds),
      "all",
    );
    let hits = 0;
    let tokens = 0;
    examples.forEach((example, row) => {
      const { vocabSize } = model.config;
      example.lossWeights.forEach((weight, t) => {
        if (weight === 0) return;
        tokens++;
        if (argmax(logits[row].data.subarray(t * vocabSize, (t + 1) * vocabSize)) === example.labels[t]) hits++;
      });
    });
    return { hits, tokens };
  } finally {
    await engine.dispose();
  }
}

describe("fineTune", () => {
  let model: TrainerModel;
  beforeAll(async () => {
    const { config, weights } = tinyModel("llama-gqa");
    model = { config, weights, tokenizer, basis: await computeBasis(config, weights, { rMax: 8 }) };
  });

  const base = {
    training: dataset(24),
    validation: dataset(12, 5),
    seed: 3,
    hyperparameters: { n_epochs: 3, batch_size: 4, learning_rate_multiplier: 0.5, rank: 4 },
  };

  it("lowers the validation loss and reports every step and epoch", async () => {
    const events: TrainerEvent[] = [];
    const result = await fineTune(model, { ...base, checkpointEvery: 5, onEvent: (e) => void events.push(e) });
    const started = events.find((e) => e.type === "started")!;
    expect(started.type === "started" && started.hyperparameters.totalSteps).toBe(18);
    const steps = events.filter((e) => e.type === "step");
    expect(steps.map((e) => e.type === "step" && e.step)).toEqual(Array.from({ length: 18 }, (_, i) => i + 1));
    expect(events.filter((e) => e.type === "checkpoint").map((e) => e.type === "checkpoint" && e.step)).toEqual([5, 10, 15]);
    const epochs = events.filter((e) => e.type === "epoch");
    expect(epochs).toHaveLength(3);
    for (const e of steps) expect(e.type === "step" && Number.isFinite(e.loss) && e.etaSeconds >= 0).toBe(true);

    const before = await fineTune(model, { ...base, hyperparameters: { ...base.hyperparameters, learning_rate_multiplier: 1e-9, n_epochs: 1 } });
    expect(result.status).toBe("succeeded");
    expect(result.validationLoss!).toBeLessThan(before.validationLoss! - 0.1);
  });

  it("raises the validation token accuracy from none to over a fifth, the share of answer tokens its served adapter predicts", async () => {
    // Ten epochs at twice the rate: long enough for the answers to start coming out right.
    const hyperparameters = { ...base.hyperparameters, n_epochs: 10, learning_rate_multiplier: 1 };
    const trained = await fineTune(model, { ...base, hyperparameters });
    const untrained = await fineTune(model, { ...base, hyperparameters: { ...hyperparameters, learning_rate_multiplier: 1e-9, n_epochs: 1 } });
    const validation = tokenized(base.validation);

    // The base model gets no answer token right; the trained adapter over a fifth (it reaches a
    // quarter, so the bound leaves three tokens of the sixty to rounding).
    const baseHits = await servedHits(model, null, validation);
    expect(baseHits.hits).toBe(0);
    expect(untrained.validationTokenAccuracy).toBe(0);
    expect(trained.validationTokenAccuracy!).toBeGreaterThanOrEqual(0.2);

    // Served by the engine, the adapter predicts exactly the tokens validation counted as right.
    const served = await servedHits(model, trained.adapter, validation);
    expect(served.tokens).toBe(48 + 12); // twelve capitalised answers of 48 letters, each closed by one end-of-turn token
    expect(served.hits).toBeGreaterThan(0);
    expect(trained.validationTokenAccuracy!).toBeCloseTo(served.hits / served.tokens, 6);
  });

  it("the same seed gives the same loss curve; another seed a different one", async () => {
    const curve = async (seed: number) => {
      const losses: number[] = [];
      await fineTune(model, {
        ...base,
        seed,
        hyperparameters: { ...base.hyperparameters, n_epochs: 1 },
        onEvent: (e) => void (e.type === "step" && losses.push(e.loss)),
      });
      return losses;
    };
    const a = await curve(3);
    expect(await curve(3)).toEqual(a);
    expect(await curve(4)).not.toEqual(a);
  });

  it("resuming from a checkpoint (through its file format) ends exactly where an uninterrupted run does", async () => {
    const uninterrupted = await fineTune(model, base);
    let saved: TrainerCheckpoint | null = null;
    const controller = new AbortController();
    const partial = await fineTune(model, {
      ...base,
      checkpointEvery: 7,
      signal: controller.signal,
      onEvent: (e) => {
        if (e.type === "checkpoint" && saved === null) {
          saved = parseCheckpoint(serializeCheckpoint(e.checkpoint), "checkpoint.safetensors");
          controller.abort();
        }
      },
    });
    expect(partial.status).toBe("cancelled");
    expect(partial.steps).toBe(7);
    const resumed = await fineTune(model, { ...base, resume: saved! });
    expect(resumed.steps).toBe(18);
    for (const [name, data] of uninterrupted.parameters) expect(resumed.parameters.get(name)).toEqual(data);
    await expect(fineTune(model, { ...base, seed: 99, resume: saved! })).rejects.toThrow(/checkpoint belongs to another run/);
  });

  it("accumulating a step over row slices gives the whole batch's step, yielding before every slice", async () => {
    const short = { ...base, hyperparameters: { ...base.hyperparameters, n_epochs: 1 } };
    const whole = await fineTune(model, short);
    let yields = 0;
    const sliced = await fineTune(model, {
      ...short,
      microBatchTokens: 32,
      compute: (work) => {
        yields++;
        return work();
      },
    });
    // 6 steps of 4 rows at one row per slice, then one validation pass of 12 examples.
    expect(yields).toBeGreaterThanOrEqual(6 * 4 + 12);
    expect(sliced.steps).toBe(whole.steps);
    for (const [name, data] of whole.parameters) {
      const other = sliced.parameters.get(name)!;
      let worst = 0;
      for (let i = 0; i < data.length; i++) worst = Math.max(worst, Math.abs(other[i] - data[i]));
      expect(worst, name).toBeLessThan(1e-4);
    }
    expect(sliced.validationLoss!).toBeCloseTo(whole.validationLoss!, 4);
  });

  it("refuses bad data with the line and reason, before training", async () => {
    const bad = [dataset(3), '{"messages": [{"role": "robot", "content": "hi"}]}', "not json", dataset(3)].join("\n");
    const error = await fineTune(model, { ...base, training: bad }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TrainingDataError);
    expect((error as TrainingDataError).errors.map((e) => e.line)).toEqual([4, 5]);
    expect((error as Error).message).toMatch(/training file: 2 invalid lines \(line 4: .*role.*; line 5: /);
  });

  it("trains LoRA through the same trainer for comparison: every B moves from zero and the loss drops", async () => {
    const lora = { ...base, method: "lora" as const, hyperparameters: { ...base.hyperparameters, learning_rate_multiplier: 0.2 } };
    const result = await fineTune(model, lora);
    const unmoved = await fineTune(model, { ...lora, hyperparameters: { ...lora.hyperparameters, learning_rate_multiplier: 1e-9, n_epochs: 1 } });
    const pica = await fineTune(model, { ...base, hyperparameters: { ...base.hyperparameters, learning_rate_multiplier: 1e-9, n_epochs: 1 } });
    expect(result.adapter).toBeNull();
    const bNames = [...result.parameters.keys()].filter((name) => name.startsWith("lora.") && name.endsWith(".b_t"));
    expect(bNames).toHaveLength(model.config.numLayers * 7);
    for (const name of bNames) {
      const largest = (values: Float32Array) => values.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      expect(largest(unmoved.parameters.get(name)!), name).toBeLessThan(1e-6);
      expect(largest(result.parameters.get(name)!), name).toBeGreaterThan(1e-3);
    }
    // B starts at zero, so LoRA starts at the base model's loss, as PiCa does; training lowers it.
    expect(unmoved.validationLoss!).toBeCloseTo(pica.validationLoss!, 4);
    expect(result.validationLoss!).toBeLessThan(unmoved.validationLoss! - 0.1);
  });
});
