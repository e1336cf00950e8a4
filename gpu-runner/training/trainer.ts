/**
 * The fine-tuning trainer the runner calls: JSONL in, a PiCa adapter out (or LoRA parameters, for
 * comparison). It validates and tokenises the data, resolves "auto" hyper-parameters, trains with
 * AdamW under a warmup + cosine schedule and gradient clipping, evaluates every epoch, reports
 * progress, checkpoints every N steps, stops between steps when cancelled, and resumes from a
 * checkpoint to exactly the result of an uninterrupted run.
 */
import type { ModelConfig } from "../model/config.ts";
import { picaParameterName, type TrainingMethod } from "../model/training-graph.ts";
import { linearShape, linearShapes, LINEAR_MODULES, type LinearModule, type WeightMap } from "../model/weights.ts";
import { adapterKey, type Basis, type PicaAdapter, type SharingMode } from "../pica/types.ts";
import type { TextTokenizer } from "../tokenizer/tokenizer.ts";
import { makeBatches, splitBatch, splitTrainValidation, type Batch } from "./batching.ts";
import { parseTrainingJsonl, type LineError } from "../../src/training-data.ts";
import { AdamW, clipGradientNorm, HyperparameterError, learningRateAt, resolveHyperparameters, type ResolvedHyperparameters } from "./optimizer.ts";
import { checkpointMatches, type TrainerCheckpoint } from "./checkpoint.ts";
import { tokenizeRecords } from "./tokenize.ts";
import { TrainingSession } from "./training-session.ts";
import type { WeightFile } from "../model/weight-file.ts";
import type { OnnxSessionOptions } from "../runtime/onnx-session.ts";
import { requestedRank } from "../../src/protocol/runner.ts";
import { VALIDATION_FRACTION } from "../../src/hyperparameters.ts";
import { canonicalModules, rankCeiling, rankRefusal } from "../../src/protocol/adapter-rank.ts";

/** The frozen model a job trains against. */
export interface TrainerModel {
  config: ModelConfig;
  weights: WeightMap; // with a weight file only their shapes are read (they may be lazily loaded)
  tokenizer: TextTokenizer;
  basis: Basis;
  weightFile?: WeightFile; // the frozen weights on disk, shared with the serving session's file
  session?: OnnxSessionOptions; // the provider (and threads) training runs on: the runner's own
}

/** A job's hyper-parameters as the API accepts them ("auto" or absent: resolved by rule). */
export interface FineTuneHyperparameters {
  n_epochs?: number | "auto";
  batch_size?: number | "auto";
  learning_rate_multiplier?: number | "auto";
  rank?: number | "auto"; // default (and "auto"): DEFAULT_ADAPTER_RANK
  weight_sharing?: boolean; // PiCa only; default true
  target_modules?: LinearModule[]; // default: every module of the basis
}

export interface FineTuneOptions {
  training: string; // JSONL text
  validation?: string; // JSONL text; absent: a deterministic split of the training data
  method?: "pica" | "lora";
  hyperparameters?: FineTuneHyperparameters;
  seed?: number;
  maxLength?: number; // tokens per example (input side); default min(context, 512)
  validationFraction?: number; // used without a validation file; default VALIDATION_FRACTION (0.1)
  checkpointEvery?: number; // steps between checkpoints; 0 or absent: none
  resume?: TrainerCheckpoint;
  signal?: AbortSignal; // cancellation, honoured between steps
  microBatchTokens?: number; // padded tokens per forward/backward; a step accumulates its slices
  peakLearningRate?: number; // overrides the method's base rate × multiplier (learning-rate sweeps)
  compute?: <T>(work: () => Promise<T>) => Promise<T>; // runs every forward/backward (to share the device)
  onEvent?: (event: TrainerEvent) => void | Promise<void>;
  provenance?: Record<string, unknown>;
}

export type TrainerEvent =
  | {
      type: "started";
      hyperparameters: ResolvedHyperparameters & { rank: number; sharing: SharingMode | null; method: "pica" | "lora"; targetModules: LinearModule[] };
      trainExamples: number;
      validationExamples: number;
      trainTokens: number;
      skipped: LineError[];
      resumedFromStep: number;
    }
  | {
      type: "step";
      step: number;
      totalSteps: number;
      epoch: number;
      loss: number;
      learningRate: number;
      gradientNorm: number;
      batchTokens: number;
      tokensPerSecond: number;
      etaSeconds: number;
    }
  | { type: "epoch"; epoch: number; trainLoss: number; validationLoss: number | null; validationTokenAccuracy: number | null }
  | { type: "checkpoint"; step: number; checkpoint: TrainerCheckpoint };

export interface FineTuneResult {
  status: "succeeded" | "cancelled";
  adapter: PicaAdapter | null; // PiCa jobs
  parameters: Map<string, Float32Array>; // the trained tensors, by graph parameter name
  steps: number;
  validationLoss: number | null;
  validationTokenAccuracy: number | null;
  checkpoint: TrainerCheckpoint; // the state at the end (for a cancelled job: where it stopped)
}

/** Bad training data: the message lists the first offending lines; `errors` has them all (capped). */
export class TrainingDataError extends Error {
  constructor(
    readonly file: "training" | "validation",
    readonly errors: LineError[],
    readonly errorCount: number,
  ) {
    const shown = errors
      .slice(0, 5)
      .map((e) => `line ${e.line}: ${e.reason}`)
      .join("; ");
    super(`${file} file: ${errorCount} invalid line${errorCount === 1 ? "" : "s"} (${shown}${errorCount > 5 ? "; …" : ""})`);
    this.name = "TrainingDataError";
  }
}

const MAX_GRADIENT_NORM = 1;

/** Runs a fine-tuning job to the end, to cancellation, or to a data error (thrown before training). */
export async function fineTune(model: TrainerModel, options: FineTuneOptions): Promise<FineTuneResult> {
  const { config, tokenizer, basis } = model;
  const method = options.method ?? "pica";
  const seed = options.seed ?? 0;
  const sharing: SharingMode = options.hyperparameters?.weight_sharing === false ? "per_layer" : "shared";
  const requestedModules = options.hyperparameters?.target_modules;
  let targetModules: LinearModule[];
  let rank: number;
  if (method === "pica") {
    targetModules = trainedModules(basis, requestedModules);
    const ceiling = rankCeiling({ linearShapes: linearShapes(config), basisRows: basis.rMax }, targetModules);
    rank = requestedRank(options.hyperparameters?.rank, ceiling.rank);
    const refusal = rankRefusal(rank, ceiling, "this model");
    if (refusal !== null) throw new HyperparameterError("rank", refusal);
  } else {
    targetModules = requestedModules === undefined ? [...LINEAR_MODULES] : canonicalModules(requestedModules);
    rank = requestedRank(options.hyperparameters?.rank);
  }
  const maxLength = options.maxLength ?? Math.min(config.maxPositionEmbeddings - 1, 512);

  const train = readExamples(options.training, "training", tokenizer, maxLength);
  let trainExamples = train.examples;
  let validationExamples = options.validation === undefined ? [] : readExamples(options.validation, "validation", tokenizer, maxLength).examples;
  if (options.validation === undefined) {
    const split = splitTrainValidation(trainExamples, { fraction: options.validationFraction ?? VALIDATION_FRACTION, seed });
    trainExamples = split.train;
    validationExamples = split.validation;
  }
  if (trainExamples.length === 0) throw new TrainingDataError("training", train.skipped, train.skipped.length);

  const resolved = resolveHyperparameters(options.hyperparameters ?? {}, { trainExamples: trainExamples.length, method });
  if (options.peakLearningRate !== undefined) {
    if (!(options.peakLearningRate > 0)) throw new Error(`peakLearningRate must be positive, got ${options.peakLearningRate}`);
    resolved.learningRate = options.peakLearningRate;
  }
  const graphMethod: TrainingMethod =
    method === "pica" ? { kind: "pica", basis, rank, sharing, targetModules } : { kind: "lora", rank, alpha: rank, targetModules, seed };
  // A float weight file's tensors are read where the file lies: no private repacked copy per
  // session. Quantized weights are packed (a copy of their own size): MatMulNBits's fast kernels
  // read only packed weights.
  const file = model.weightFile;
  const session = await TrainingSession.create(config, model.weights, graphMethod, {
    ...model.session,
    allowSpinning: false,
    ...(file === undefined ? {} : { weightFile: file, prepackWeights: file.quantization !== null }),
  });
  try {
    const values = new Map(session.parameters.map((p) => [p.name, Float32Array.from(p.initial)]));
    const optimizer = new AdamW(values, { weightDecay: 0 });
    const identity = {
      method,
      rank,
      sharing: method === "pica" ? sharing : null,
      seed,
      hyperparameters: resolved,
      basisId: basis.id,
      trainExamples: trainExamples.length,
      // Only a subset is recorded, so checkpoints of runs on every module (older ones too) match.
      targetModules: targetModules.length === basis.targetModules.length ? null : targetModules,
    };
    let startStep = 0;
    if (options.resume !== undefined) {
      checkpointMatches(options.resume, identity);
      for (const [name, data] of options.resume.parameters) values.get(name)!.set(data);
      optimizer.loadState(options.resume.optimizer);
      startStep = options.resume.step;
    }
    const buckets = lengthBuckets(maxLength);
    const stepsPerEpoch = Math.ceil(trainExamples.length / resolved.batchSize);
    const schedule = { peak: resolved.learningRate, totalSteps: resolved.totalSteps, warmupSteps: resolved.warmupSteps };
    await options.onEvent?.({
      type: "started",
      hyperparameters: { ...resolved, rank, sharing: identity.sharing, method, targetModules },
      trainExamples: trainExamples.length,
      validationExamples: validationExamples.length,
      trainTokens: trainExamples.reduce((s, e) => s + e.inputIds.length, 0),
      skipped: train.skipped,
      resumedFromStep: startStep,
    });

    const snapshot = (step: number): TrainerCheckpoint => ({ ...identity, step, parameters: copyMap(values), optimizer: optimizer.state() });
    let step = startStep;
    let validation = { loss: null as number | null, accuracy: null as number | null };
    const started = performance.now();
    let tokensDone = 0;
    for (let epoch = Math.floor(step / stepsPerEpoch); epoch < resolved.nEpochs; epoch++) {
      const batches = makeBatches(trainExamples, { batchSize: resolved.batchSize, seed, epoch, lengthBuckets: buckets });
      let epochLoss = 0;
      let epochBatches = 0;
      for (let index = step - epoch * stepsPerEpoch; index < batches.length; index++) {
        if (options.signal?.aborted)
          return {
            status: "cancelled",
            adapter: null,
            parameters: values,
            steps: step,
            validationLoss: validation.loss,
            validationTokenAccuracy: validation.accuracy,
            checkpoint: snapshot(step),
          };
        const batch = batches[index];
        const { loss, gradients } = await accumulatedStep(session, batch, values, options);
        const gradientNorm = clipGradientNorm(gradients, MAX_GRADIENT_NORM);
        const learningRate = learningRateAt(step, schedule);
        // A non-finite gradient (numerical blow-up) skips the update rather than poisoning M.
        if (Number.isFinite(gradientNorm)) optimizer.step(gradients, learningRate);
        step++;
        epochLoss += loss;
        epochBatches++;
        tokensDone += batch.rows * batch.length;
        const seconds = (performance.now() - started) / 1000;
        const stepsRun = step - startStep;
        await options.onEvent?.({
          type: "step",
          step,
          totalSteps: resolved.totalSteps,
          epoch,
          loss,
          learningRate,
          gradientNorm,
          batchTokens: batch.lengths.reduce((sum, length) => sum + length, 0),
          tokensPerSecond: tokensDone / Math.max(seconds, 1e-9),
          etaSeconds: (seconds / stepsRun) * (resolved.totalSteps - step),
        });
        if (options.checkpointEvery !== undefined && options.checkpointEvery > 0 && step % options.checkpointEvery === 0 && step < resolved.totalSteps) {
          await options.onEvent?.({ type: "checkpoint", step, checkpoint: snapshot(step) });
        }
      }
      validation = await evaluate(session, validationExamples, values, buckets, resolved.batchSize, options);
      await options.onEvent?.({
        type: "epoch",
        epoch,
        trainLoss: epochLoss / Math.max(epochBatches, 1),
        validationLoss: validation.loss,
        validationTokenAccuracy: validation.accuracy,
      });
    }
    const adapter = method === "pica" ? toAdapter(config, basis, rank, sharing, values, options.provenance ?? {}, targetModules) : null;
    return {
      status: "succeeded",
      adapter,
      parameters: values,
      steps: step,
      validationLoss: validation.loss,
      validationTokenAccuracy: validation.accuracy,
      checkpoint: snapshot(step),
    };
  } finally {
    await session.dispose();
  }
}

/** The trained PiCa parameters (Mᵀ inputs) of `targetModules` (default: the basis's) as an adapter (M = [out, rank]). */
export function toAdapter(
  config: ModelConfig,
  basis: Basis,
  rank: number,
  sharing: SharingMode,
  values: Map<string, Float32Array>,
  provenance: Record<string, unknown>,
  targetModules: readonly LinearModule[] = basis.targetModules,
): PicaAdapter {
  const m = new Map<string, { shape: number[]; data: Float32Array }>();
  const layers = sharing === "shared" ? [0] : Array.from({ length: config.numLayers }, (_, l) => l);
  const modules: LinearModule[] = [...targetModules];
  for (const layer of layers) {
    for (const module of modules) {
      const out = linearShape(config, module)[0];
      const mT = values.get(picaParameterName(sharing, module, layer))!; // [rank, out]
      const data = new Float32Array(out * rank);
      for (let j = 0; j < rank; j++) for (let o = 0; o < out; o++) data[o * rank + j] = mT[j * out + o];
      m.set(adapterKey(sharing, module, layer), { shape: [out, rank], data });
    }
  }
  return { rank, sharing, targetModules: modules, basisId: basis.id, baseFingerprint: basis.baseFingerprint, m, provenance };
}

/** The modules a job trains: those it names (each must be in the basis), in canonical order; default the basis's. */
export function trainedModules(basis: Basis, requested: readonly LinearModule[] | undefined): LinearModule[] {
  if (requested === undefined) return [...basis.targetModules];
  if (requested.length === 0) throw new HyperparameterError("target_modules", "target_modules must name at least one module");
  for (const module of requested) {
    if (!basis.targetModules.includes(module))
      throw new HyperparameterError(
        "target_modules",
        `target module ${JSON.stringify(module)} is not covered by the basis (${basis.targetModules.join(", ")})`,
      );
  }
  return canonicalModules(requested);
}

function readExamples(text: string, file: "training" | "validation", tokenizer: TextTokenizer, maxLength: number) {
  const parsed = parseTrainingJsonl(text);
  if (parsed.errorCount > 0) throw new TrainingDataError(file, parsed.errors, parsed.errorCount);
  const tokenized = tokenizeRecords(parsed.examples, tokenizer, { maxLength });
  return { examples: tokenized.examples, skipped: tokenized.skipped };
}

/** Mean validation loss and token accuracy, weighted by trained tokens per batch. */
async function evaluate(
  session: TrainingSession,
  examples: Parameters<typeof makeBatches>[0],
  values: Map<string, Float32Array>,
  buckets: number[],
  batchSize: number,
  options: Pick<FineTuneOptions, "microBatchTokens" | "compute">,
): Promise<{ loss: number | null; accuracy: number | null }> {
  if (examples.length === 0) return { loss: null, accuracy: null };
  let loss = 0;
  let accuracy = 0;
  let tokens = 0;
  const batches = makeBatches(examples, { batchSize, seed: 0, epoch: 0, lengthBuckets: buckets });
  for (const batch of batches.flatMap((b) => slicesOf(b, options))) {
    const result = await run(options, () => session.evaluate(batch, values));
    loss += result.loss * batch.lossTokenCount;
    accuracy += result.tokenAccuracy * batch.lossTokenCount;
    tokens += batch.lossTokenCount;
  }
  return { loss: loss / tokens, accuracy: accuracy / tokens };
}

/**
 * One optimiser step's loss and gradients: the batch at once, or its slices with their gradients
 * accumulated, each weighted by its share of the trained tokens (the same token mean).
 */
async function accumulatedStep(
  session: TrainingSession,
  batch: Batch,
  values: Map<string, Float32Array>,
  options: Pick<FineTuneOptions, "microBatchTokens" | "compute">,
): Promise<{ loss: number; gradients: Map<string, Float32Array> }> {
  const slices = slicesOf(batch, options);
  if (slices.length === 1) {
    const { loss, gradients } = await run(options, () => session.step(slices[0], values));
    return { loss, gradients: gradients as Map<string, Float32Array> };
  }
  let loss = 0;
  const gradients = new Map<string, Float32Array>();
  for (const slice of slices) {
    const part = await run(options, () => session.step(slice, values));
    const share = slice.lossTokenCount / batch.lossTokenCount;
    loss += share * part.loss;
    for (const [name, gradient] of part.gradients) {
      const sum = gradients.get(name) ?? gradients.set(name, new Float32Array(gradient.length)).get(name)!;
      for (let i = 0; i < sum.length; i++) sum[i] += share * gradient[i];
    }
  }
  return { loss, gradients };
}

function run<T>(options: Pick<FineTuneOptions, "compute">, work: () => Promise<T>): Promise<T> {
  return options.compute === undefined ? work() : options.compute(work);
}

function slicesOf(batch: Batch, options: Pick<FineTuneOptions, "microBatchTokens">): Batch[] {
  if (options.microBatchTokens === undefined || batch.lossTokenCount === 0) return [batch];
  const slices = splitBatch(batch, options.microBatchTokens);
  return slices.length > 0 ? slices : [batch];
}

/** Padded lengths offered to batching: powers of two from 32 up to the maximum length. */
function lengthBuckets(maxLength: number): number[] {
  const buckets: number[] = [];
  for (let length = 32; length < maxLength; length *= 2) buckets.push(length);
  buckets.push(maxLength);
  return buckets;
}

function copyMap(values: Map<string, Float32Array>): Map<string, Float32Array> {
  return new Map([...values].map(([name, data]) => [name, Float32Array.from(data)]));
}
