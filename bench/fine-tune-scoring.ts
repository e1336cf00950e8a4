/**
 * Scoring a fine-tuned adapter on a task's held-out examples, shared by the quality and sweep
 * benches:
 *   eval loss   — mean cross-entropy per trained token (answer + end of turn), weighted exactly
 *                 as the trainer's evaluation weights it;
 *   exact match — greedy generation (temperature 0) from the ChatML prompt; the trimmed text must
 *                 equal the expected answer.
 * PiCa adapters are served by an engine with adapter support, as in production. LoRA has no
 * serving path, so a trained LoRA is merged into a copy of the weights for a plain engine, and the
 * merged model's eval loss is checked against the trainer's so a wrong merge cannot pass for a
 * weak adapter.
 */
import { LlamaEngine } from "../gpu-runner/engine/llama-engine.ts";
import { generate } from "../gpu-runner/generate/generate.ts";
import type { ModelConfig } from "../gpu-runner/model/config.ts";
import { loraParameterNames, type TrainingMethod } from "../gpu-runner/model/training-graph.ts";
import { LINEAR_MODULES, linearName, linearShape, type WeightMap } from "../gpu-runner/model/weights.ts";
import type { Basis } from "../gpu-runner/pica/types.ts";
import type { TextTokenizer } from "../gpu-runner/tokenizer/tokenizer.ts";
import { makeBatches } from "../gpu-runner/training/batching.ts";
import { tokenizeRecords, type TokenizedExample } from "../gpu-runner/training/tokenize.ts";
import { TrainingSession } from "../gpu-runner/training/training-session.ts";
import type { PicaAdapter } from "../gpu-runner/pica/types.ts";
import { parseTrainingJsonl } from "../src/training-data.ts";
import { toChatJsonl, type QualityExample, type QualityTask } from "./quality-tasks.ts";

/** Tokens per example in both benches; every generated example fits (tokenizeTask checks). */
export const MAX_LENGTH = 80;
const EXTRA_NEW_TOKENS = 4; // generation may run this far past the task's longest answer
const MERGE_TOLERANCE = 1e-3; // relative difference allowed between merged and unmerged LoRA eval loss
const EVAL_BATCH_SIZE = 16;

/** The frozen model every run of a bench shares. */
export interface BenchModel {
  config: ModelConfig;
  weights: WeightMap;
  tokenizer: TextTokenizer;
  basis: Basis;
  /** One engine with adapter support (rank ≥ every PiCa adapter scored), serving the base too. */
  picaEngine: LlamaEngine;
}

/** Exact-match accuracy of greedy generations over a task's eval set, with a few samples for the log. */
export async function exactMatch(
  engine: LlamaEngine,
  tokenizer: TextTokenizer,
  examples: readonly QualityExample[],
  adapterId: string | null,
): Promise<{ accuracy: number; samples: string[] }> {
  const maxNewTokens = Math.max(...examples.map((e) => tokenizer.encode(e.answer, { addSpecialTokens: false }).length)) + EXTRA_NEW_TOKENS;
  let correct = 0;
  const samples: string[] = [];
  for (const example of examples) {
    const prompt = tokenizer.applyChatTemplate([{ role: "user", content: example.prompt }], { addGenerationPrompt: true });
    const ids = tokenizer.encode(prompt, { addSpecialTokens: false });
    let text = "";
    for await (const event of generate(engine, tokenizer, ids, { maxNewTokens, temperature: 0, adapterId })) {
      if (event.type === "finish") text = event.text;
    }
    const hit = text.trim() === example.answer;
    if (hit) correct++;
    if (samples.length < 3)
      samples.push(`${JSON.stringify(example.prompt)} → ${JSON.stringify(text.trim())} (${hit ? "ok" : `want ${JSON.stringify(example.answer)}`})`);
  }
  return { accuracy: correct / examples.length, samples };
}

/**
 * Eval loss of a model given by its weights, weighted per trained token exactly as the trainer's
 * evaluation: a PiCa graph of rank 1 whose M stays zero is the model itself.
 */
export function evaluationLoss(config: ModelConfig, weights: WeightMap, basis: Basis, examples: TokenizedExample[]): Promise<number> {
  return trainedLoss(config, weights, { kind: "pica", basis, rank: 1, sharing: "shared" }, null, examples);
}

/**
 * Eval loss of trained parameters of `method` (null: the method's initial values), weighted per
 * trained token exactly as the trainer's evaluation.
 */
export async function trainedLoss(
  config: ModelConfig,
  weights: WeightMap,
  method: TrainingMethod,
  parameters: Map<string, Float32Array> | null,
  examples: TokenizedExample[],
  session: Parameters<typeof TrainingSession.create>[3] = {},
): Promise<number> {
  const training = await TrainingSession.create(config, weights, method, { ...session, allowSpinning: false });
  try {
    const values = parameters ?? new Map(training.parameters.map((p) => [p.name, Float32Array.from(p.initial)]));
    let loss = 0;
    let tokens = 0;
    for (const batch of makeBatches(examples, { batchSize: EVAL_BATCH_SIZE, seed: 0, epoch: 0, lengthBuckets: [32, 64, MAX_LENGTH] })) {
      loss += (await training.evaluate(batch, values)).loss * batch.lossTokenCount;
      tokens += batch.lossTokenCount;
    }
    return loss / tokens;
  } finally {
    await training.dispose();
  }
}

/** A copy of the weights with a trained LoRA merged in: W [out, in] += scale · (Aᵀ [in, r] · Bᵀ [r, out])ᵀ. */
export function mergeLora(config: ModelConfig, weights: WeightMap, parameters: Map<string, Float32Array>, rank: number, scale: number): WeightMap {
  const merged: WeightMap = new Map(weights);
  for (let layer = 0; layer < config.numLayers; layer++) {
    for (const module of LINEAR_MODULES) {
      const [out, inputs] = linearShape(config, module);
      const names = loraParameterNames(layer, module);
      const aT = parameters.get(names.a)!; // [in, rank]
      const bT = parameters.get(names.b)!; // [rank, out]
      const w = weights.get(linearName(layer, module))!;
      const data = Float32Array.from(w.data);
      for (let o = 0; o < out; o++) {
        for (let i = 0; i < inputs; i++) {
          let delta = 0;
          for (let j = 0; j < rank; j++) delta += aT[i * rank + j]! * bT[j * out + o]!;
          data[o * inputs + i] += scale * delta;
        }
      }
      merged.set(linearName(layer, module), { shape: w.shape, data });
    }
  }
  return merged;
}

/** Tokenizes a task's examples as the trainer does, refusing any example that would be cut or skipped. */
export function tokenizeTask(task: QualityTask, examples: readonly QualityExample[], tokenizer: TextTokenizer): TokenizedExample[] {
  const parsed = parseTrainingJsonl(toChatJsonl(examples));
  const tokenized = tokenizeRecords(parsed.examples, tokenizer, { maxLength: MAX_LENGTH });
  if (parsed.errorCount > 0 || tokenized.skipped.length > 0 || tokenized.truncated.length > 0) {
    throw new Error(
      `task ${task.name}: ${parsed.errorCount} bad, ${tokenized.skipped.length} skipped, ${tokenized.truncated.length} truncated examples at maxLength ${MAX_LENGTH}`,
    );
  }
  return tokenized.examples;
}

/**
 * Greedy exact match of a trained adapter on `examples`: a PiCa adapter on the shared engine; a
 * LoRA merged into the weights (its merged eval loss must equal `trainerEvalLoss` on `tokenized`).
 */
export async function scoreAdapter(
  model: BenchModel,
  run: { id: string; rank: number; trainerEvalLoss: number } & (
    | { method: "pica"; adapter: PicaAdapter }
    | { method: "lora"; parameters: Map<string, Float32Array> }
  ),
  examples: readonly QualityExample[],
  tokenized: TokenizedExample[],
): Promise<{ accuracy: number; samples: string[] }> {
  if (run.method === "pica") {
    model.picaEngine.registerAdapter(run.id, run.adapter);
    try {
      return await exactMatch(model.picaEngine, model.tokenizer, examples, run.id);
    } finally {
      model.picaEngine.evictAdapter(run.id);
    }
  }
  const merged = mergeLora(model.config, model.weights, run.parameters, run.rank, 1); // alpha = rank
  const mergedLoss = await evaluationLoss(model.config, merged, model.basis, tokenized);
  if (Math.abs(mergedLoss - run.trainerEvalLoss) > MERGE_TOLERANCE * run.trainerEvalLoss) {
    throw new Error(`${run.id}: merged eval loss ${mergedLoss} differs from the trainer's ${run.trainerEvalLoss}`);
  }
  const engine = await LlamaEngine.create(model.config, merged, { allowSpinning: false });
  try {
    return await exactMatch(engine, model.tokenizer, examples, null);
  } finally {
    await engine.dispose();
  }
}

/** The mean of a non-empty list. */
export const mean = (values: number[]) => values.reduce((s, v) => s + v, 0) / values.length;
