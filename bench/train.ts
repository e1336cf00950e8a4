/**
 * Training benchmark on a generated config (hidden 256, 4 layers, 4 heads, 2 KV heads,
 * intermediate 688, vocabulary 8192; weights generated, never committed), batch 8 × 128 tokens.
 *
 * For each method (PiCa shared r=8 on all seven modules; LoRA r=8 on the same modules; full
 * training) two sessions over the SAME forward graph alternate round by round:
 *   step    — TrainingSession.step: forward + backward, every gradient returned;
 *   forward — the training graph without gradients, fetching the loss only, with the same
 *             session options and feeds.
 * The figure is the median of the per-round ratios step / forward: what a training step costs
 * in forwards. Also: a float64 gradient check of PiCa on a tiny model against central finite
 * differences.
 */
import { parseModelConfig, type ModelConfig } from "../gpu-runner/model/config.ts";
import { randomWeights } from "../gpu-runner/model/random-weights.ts";
import { buildTrainingGraph, TRAINING_IO, type TrainingMethod } from "../gpu-runner/model/training-graph.ts";
import { LINEAR_MODULES, type WeightMap } from "../gpu-runner/model/weights.ts";
import { computeBasis } from "../gpu-runner/pica/basis.ts";
import { Rng } from "../gpu-runner/random.ts";
import { OnnxSession, type HostTensor, type OnnxSessionOptions } from "../gpu-runner/runtime/onnx-session.ts";
import { tinyModel } from "../gpu-runner/testing/tiny-checkpoints.ts";
import { sessionGradientCheck } from "../gpu-runner/testing/session-gradient-check.ts";
import { batchFeeds, TrainingSession, type TrainingBatch } from "../gpu-runner/training/training-session.ts";
import { median, progress, round, timeMs } from "./stats.ts";

/** The training bench's model config. */
export const TRAIN_BENCH_CONFIG_JSON = {
  architectures: ["LlamaForCausalLM"],
  vocab_size: 8192,
  hidden_size: 256,
  intermediate_size: 688,
  num_hidden_layers: 4,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 512,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
};

const ROWS = 8;
const LENGTH = 128;
const RANK = 8;
const WARMUP_ROUNDS = 2;
const ROUNDS = 15; // PiCa, the headline figure
const COMPARISON_ROUNDS = 9; // LoRA and full training
const CHECK_RANK = 4;
const CHECK_SAMPLES_PER_PARAMETER = 5; // × 7 shared parameters = 35 coordinates
const CHECK_STEP = 1e-6;

// Two sessions alternate on the same cores, so neither may keep its threads spinning after a run.
const SESSION_OPTIONS: OnnxSessionOptions = { optimizationLevel: "all", allowSpinning: false };

type Values = Map<string, Float32Array | Float64Array>;

/** Full-length rows of pseudo-random tokens; each position predicts the next, the first is untrained. */
function benchBatch(rows: number, length: number, vocabulary: number, seed: number): TrainingBatch {
  const rng = new Rng(seed);
  const tokens = Array.from({ length: rows * (length + 1) }, () => Math.floor(rng.uniform() * vocabulary));
  const inputIds: number[] = [];
  const labels: number[] = [];
  const lossWeights: number[] = [];
  for (let row = 0; row < rows; row++) {
    for (let t = 0; t < length; t++) {
      inputIds.push(tokens[row * (length + 1) + t]);
      labels.push(tokens[row * (length + 1) + t + 1]);
      lossWeights.push(t === 0 ? 0 : 1);
    }
  }
  return { rows, length, inputIds, labels, lossWeights, lengths: new Array<number>(rows).fill(length) };
}

/** Each parameter's initial value plus small noise, so adapter paths carry non-zero numbers. */
function parameterValues(parameters: TrainingSession["parameters"], seed: number, scale: number, dtype: "float32" | "float64"): Values {
  const rng = new Rng(seed);
  return new Map(
    parameters.map((p) => {
      const data = dtype === "float64" ? new Float64Array(p.initial.length) : new Float32Array(p.initial.length);
      for (let i = 0; i < data.length; i++) data[i] = p.initial[i] + scale * rng.normal();
      return [p.name, data];
    }),
  );
}

interface StepVersusForward {
  stepOverForward: number;
  stepMs: number[];
  forwardMs: number[];
  parameterCount: number;
}

/** Interleaves full training steps with forwards of the same graph; returns per-round times and the median ratio. */
async function stepVersusForward(
  label: string,
  config: ModelConfig,
  weights: WeightMap,
  method: TrainingMethod,
  batch: TrainingBatch,
  rounds: number,
): Promise<StepVersusForward> {
  progress(`${label}: building the training session and the forward-only session…`);
  const training = await TrainingSession.create(config, weights, method, { ...SESSION_OPTIONS, dtype: "float32" });
  const { graph, parameters } = buildTrainingGraph(config, weights, method, { dtype: "float32" });
  const forward = await OnnxSession.create(graph.serialize(), { inputs: graph.inputs, outputs: graph.outputs }, SESSION_OPTIONS);
  try {
    const values = parameterValues(training.parameters, 31, method.kind === "full" ? 0 : 0.01, "float32");
    const feeds: Record<string, HostTensor> = { ...batchFeeds(batch, "float32") };
    for (const parameter of parameters) feeds[parameter.name] = { dtype: "float32", shape: parameter.shape, data: values.get(parameter.name)! };
    const parameterCount = parameters.reduce((n, p) => n + p.initial.length, 0);

    let stepLoss = 0;
    let forwardLoss = 0;
    const runStep = async () => (stepLoss = (await training.step(batch, values)).loss);
    // The loss alone, as the step fetches no token accuracy (onnxruntime still runs every node of
    // the plan whatever is fetched, so both sessions pay for the accuracy's ArgMax alike).
    const runForward = async () => (forwardLoss = Number((await forward.run(feeds, [TRAINING_IO.loss]))[TRAINING_IO.loss].data[0]));
    for (let w = 0; w < WARMUP_ROUNDS; w++) {
      await runStep();
      await runForward();
    }
    if (Math.abs(stepLoss - forwardLoss) > 1e-4 * Math.abs(forwardLoss))
      throw new Error(`${label}: the step's loss ${stepLoss} differs from the forward's ${forwardLoss}`);

    const stepMs: number[] = [];
    const forwardMs: number[] = [];
    for (let r = 0; r < rounds; r++) {
      // Alternate which runs first, so neither always follows the other.
      if (r % 2 === 0) {
        stepMs.push(await timeMs(runStep));
        forwardMs.push(await timeMs(runForward));
      } else {
        forwardMs.push(await timeMs(runForward));
        stepMs.push(await timeMs(runStep));
      }
      progress(
        `${label} round ${r + 1}/${rounds}: step ${stepMs.at(-1)!.toFixed(0)} ms, forward ${forwardMs.at(-1)!.toFixed(0)} ms, ratio ${(stepMs.at(-1)! / forwardMs.at(-1)!).toFixed(3)} (loss ${stepLoss.toFixed(4)})`,
      );
    }
    return { stepOverForward: median(stepMs.map((t, i) => t / forwardMs[i])), stepMs, forwardMs, parameterCount };
  } finally {
    await training.dispose();
    await forward.dispose();
  }
}

/**
 * PiCa shared on the tiny GQA model in float64: analytic gradients against central differences
 * on sampled coordinates of every parameter. The error of one coordinate is
 * |analytic − numeric| / max(|analytic|, |numeric|, 1e-4); the worst is returned.
 */
async function picaGradientCheck(): Promise<{ maxRelativeError: number; coordinates: number }> {
  const { config, weights } = tinyModel("llama-gqa");
  const basis = await computeBasis(config, weights, { rMax: 8 });
  const session = await TrainingSession.create(config, weights, { kind: "pica", basis, rank: CHECK_RANK, sharing: "shared" }, { dtype: "float64" });
  try {
    // Two rows, one padded, so masking and the loss weights are on the path too.
    const batch = benchBatch(2, 12, config.vocabSize, 5);
    const lengths = [12, 8];
    const lossWeights = Array.from(batch.lossWeights);
    for (let t = lengths[1]; t < 12; t++) lossWeights[12 + t] = 0;
    const padded: TrainingBatch = { ...batch, lossWeights, lengths };

    const values = parameterValues(session.parameters, 7, 0.2, "float64") as Map<string, Float64Array>;
    return await sessionGradientCheck(session, padded, values, { samplesPerParameter: CHECK_SAMPLES_PER_PARAMETER, step: CHECK_STEP });
  } finally {
    await session.dispose();
  }
}

/** Runs the training bench and returns its figures. */
export async function runTrainBench(): Promise<Record<string, unknown>> {
  progress(`float64 gradient check: PiCa shared r=${CHECK_RANK} on the tiny GQA model…`);
  const check = await picaGradientCheck();
  progress(`gradient check: max relative error ${check.maxRelativeError.toExponential(2)} over ${check.coordinates} coordinates`);

  const config = parseModelConfig(TRAIN_BENCH_CONFIG_JSON);
  progress("generating weights…");
  const weights = randomWeights(config, 2024);
  const batch = benchBatch(ROWS, LENGTH, config.vocabSize, 1);
  progress(`computing the basis (rMax ${RANK}, 7 modules × ${config.numLayers} layers)…`);
  const basis = await computeBasis(config, weights, { rMax: RANK });

  const pica = await stepVersusForward("pica", config, weights, { kind: "pica", basis, rank: RANK, sharing: "shared" }, batch, ROUNDS);
  const lora = await stepVersusForward(
    "lora",
    config,
    weights,
    { kind: "lora", rank: RANK, targetModules: [...LINEAR_MODULES], seed: 1 },
    batch,
    COMPARISON_ROUNDS,
  );
  const full = await stepVersusForward("full", config, weights, { kind: "full" }, batch, COMPARISON_ROUNDS);

  const tokens = ROWS * LENGTH;
  return {
    config: "hidden 256, 4 layers, 4 heads, 2 kv heads, intermediate 688, vocab 8192; batch 8 × 128; PiCa shared r=8 on q,k,v,o,gate,up,down",
    step_over_forward: round(pica.stepOverForward),
    train_tok_s: round((tokens * 1000) / median(pica.stepMs)),
    forward_tok_s: round((tokens * 1000) / median(pica.forwardMs)),
    lora_step_over_forward: round(lora.stepOverForward),
    lora_train_tok_s: round((tokens * 1000) / median(lora.stepMs)),
    full_step_over_forward: round(full.stepOverForward),
    full_train_tok_s: round((tokens * 1000) / median(full.stepMs)),
    trainable_parameters: { pica: pica.parameterCount, lora: lora.parameterCount, full: full.parameterCount },
    grad_check_max_rel_err: Number(check.maxRelativeError.toExponential(3)),
    grad_check_coordinates: check.coordinates,
  };
}
