/**
 * The runner on a GPU: `npm run bench -- gpu [--provider webgpu|cuda] [--model qwen2.5-0.5b|small]`.
 *
 * 1. Correctness first: tiny models of three families on the GPU provider (KV cache on the
 *    device) against the CPU engine, through prefill and decode: the largest logit difference.
 * 2. A model of Qwen2.5-0.5B's shapes (random weights generated here, never downloaded): decode
 *    tokens/s at batch 1 and 16, at 64 and 1,024 tokens of context (the ratio shows whether a
 *    step pays for the cache it reads or for copying it), a batch mixing 16 adapters against the
 *    base model alone, and a PiCa training step on the same provider, beside the CPU's figures.
 *
 * Settings are interleaved round by round and reported as medians. `--model small` runs the same
 * on a small model (a quick check of the script where only a software WebGPU adapter exists).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { LlamaEngine } from "../gpu-runner/engine/llama-engine.ts";
import type { SequenceBatch } from "../gpu-runner/engine/sequence-batch.ts";
import { parseModelConfig, type ModelConfig } from "../gpu-runner/model/config.ts";
import { randomWeights } from "../gpu-runner/model/random-weights.ts";
import { writeWeightFile, type WeightFile } from "../gpu-runner/model/weight-file.ts";
import type { WeightMap } from "../gpu-runner/model/weights.ts";
import type { Basis } from "../gpu-runner/pica/types.ts";
import type { ExecutionProvider } from "../gpu-runner/runtime/onnx-session.ts";
import { maxAbsDiff, syntheticTokens } from "../gpu-runner/testing/numeric.ts";
import { orthonormalBasis } from "../gpu-runner/testing/pica-fixtures.ts";
import { randomAdapter } from "../gpu-runner/testing/random-adapters.ts";
import { QWEN2_5_0_5B_INSTRUCT_CONFIG } from "../gpu-runner/testing/realsize-checkpoints.ts";
import { tinyModel, type TinyVariant } from "../gpu-runner/testing/tiny-checkpoints.ts";
import { TrainingSession, type TrainingBatch } from "../gpu-runner/training/training-session.ts";
import { median, progress, round, timeMs } from "./stats.ts";

const ROUNDS = 5;
const RANK = 16;
const ROWS = 16;

/** Runs the GPU bench and returns its figures. */
export async function runGpuBench(args: string[] = process.argv.slice(3)): Promise<Record<string, unknown>> {
  const { values } = parseArgs({
    args,
    options: {
      provider: { type: "string", default: "webgpu" },
      model: { type: "string", default: "qwen2.5-0.5b" },
      diagnose: { type: "boolean", default: false },
    },
  });
  const provider = values.provider as ExecutionProvider;
  if (provider !== "webgpu" && provider !== "cuda") throw new Error(`--provider must be webgpu or cuda, got ${values.provider}`);
  const figures: Record<string, unknown> = { provider, model: values.model };

  progress(`checking tiny models on ${provider} against the CPU…`);
  let worst = 0;
  for (const variant of ["llama-gqa", "qwen3-qk-norm", "mistral-sliding"] as TinyVariant[]) worst = Math.max(worst, await tinyDifference(variant, provider));
  figures.max_abs_logit_diff_vs_cpu = round(worst, 3);

  const config = parseModelConfig(
    values.model === "small"
      ? { ...QWEN2_5_0_5B_INSTRUCT_CONFIG, vocab_size: 4096, hidden_size: 256, intermediate_size: 704, num_hidden_layers: 4, num_attention_heads: 8 }
      : QWEN2_5_0_5B_INSTRUCT_CONFIG,
  );
  progress(`generating weights of ${config.numLayers}×${config.hiddenSize} (vocabulary ${config.vocabSize})…`);
  const weights = randomWeights(config, 2026);
  const directory = await mkdtemp(join(tmpdir(), "pica-gpu-bench-"));
  try {
    const file = await writeWeightFile(directory, config, weights);
    figures.weight_gib = round(file.bytes / 2 ** 30, 3);
    const basis = orthonormalBasis(config, { rMax: RANK, seed: 5 });
    if (values.diagnose) return { ...figures, ...(await diagnose(config, weights, file, provider, directory)) };
    for (const [label, on] of [
      [provider, provider],
      ["cpu", "cpu"],
    ] as const) {
      progress(`serving on ${label}…`);
      Object.assign(figures, prefixed(label, await serving(config, weights, file, basis, on)));
    }
    progress(`a PiCa training step on ${provider}…`);
    Object.assign(figures, await training(config, weights, file, basis, provider));
  } finally {
    await rm(directory, { recursive: true, force: true });
  }
  return figures;
}

/** The largest logit difference between the GPU engine and the CPU engine on a tiny model. */
async function tinyDifference(variant: TinyVariant, provider: ExecutionProvider): Promise<number> {
  const { config, weights } = tinyModel(variant);
  const engines = [await LlamaEngine.create(config, weights, { executionProvider: provider }), await LlamaEngine.create(config, weights)];
  const outputs: Float32Array[][] = [];
  for (const engine of engines) {
    const batch = engine.createBatch(3, { initialCapacity: 8, growthTokens: 8 });
    batch.addRow();
    batch.addRow();
    const steps = [await engine.step(batch, [syntheticTokens(9, 1), syntheticTokens(4, 2)], "all")];
    for (let t = 0; t < 12; t++) steps.push(await engine.step(batch, [[t + 1], [t + 20]]));
    outputs.push(steps.flatMap((rows) => rows.map((r) => r.data)));
    await engine.dispose();
  }
  return Math.max(...outputs[0].map((logits, i) => maxAbsDiff(logits, outputs[1][i])));
}

/** Decode throughput at two contexts and two batch sizes, and a batch of 16 adapters against base rows. */
async function serving(config: ModelConfig, weights: WeightMap, file: WeightFile, basis: Basis, provider: ExecutionProvider): Promise<Record<string, number>> {
  const started = performance.now();
  const engine = await LlamaEngine.create(config, weights, { executionProvider: provider, weightFile: file, adapters: { basis, rank: RANK } });
  const loadSeconds = (performance.now() - started) / 1000;
  for (let i = 0; i < ROWS; i++) await engine.registerAdapter(`a${i}`, randomAdapter(config, basis, { rank: RANK, seed: i }));
  const batchAt = async (rows: number, context: number, adapters: boolean): Promise<SequenceBatch> => {
    const batch = engine.createBatch(rows, { initialCapacity: context + 64 });
    for (let r = 0; r < rows; r++) batch.addRow(adapters ? `a${r}` : null);
    // The cache is filled to `context` without computing it: a decode step costs the same whatever the cached values are.
    batch.cache.reserve(new Array(rows).fill(context));
    batch.cache.advance(0, new Array(rows).fill(context));
    return batch;
  };
  const settings = [
    { name: "b1_ctx64", rows: 1, context: 64, adapters: false },
    { name: "b16_ctx64", rows: ROWS, context: 64, adapters: false },
    { name: "b16_ctx1024", rows: ROWS, context: 1024, adapters: false },
    { name: "b16_ctx64_mixed", rows: ROWS, context: 64, adapters: true },
  ];
  const batches = await Promise.all(settings.map((s) => batchAt(s.rows, s.context, s.adapters)));
  const stepsPerSample = 4;
  const samples: number[][] = settings.map(() => []);
  for (let round = 0; round <= ROUNDS; round++) {
    for (let i = 0; i < settings.length; i++) {
      const tokens = Array.from({ length: settings[i].rows }, (_, r) => [(round * 7 + r) % config.vocabSize]);
      const ms = await timeMs(async () => {
        for (let s = 0; s < stepsPerSample; s++) await engine.step(batches[i], tokens);
      });
      if (round > 0) samples[i].push((settings[i].rows * stepsPerSample * 1000) / ms); // the first round warms up
    }
  }
  await engine.dispose();
  const tokS = Object.fromEntries(settings.map((s, i) => [s.name, median(samples[i])]));
  return {
    load_seconds: round(loadSeconds, 3),
    decode_tok_s_b1: round(tokS.b1_ctx64),
    decode_tok_s_b16: round(tokS.b16_ctx64),
    decode_tok_s_b16_ctx1024: round(tokS.b16_ctx1024),
    decode_ctx1024_over_ctx64_b16: round(tokS.b16_ctx1024 / tokS.b16_ctx64, 3),
    mixed_adapters_over_base_b16: round(tokS.b16_ctx64_mixed / tokS.b16_ctx64, 3),
  };
}

/** Seconds of one PiCa training step (4 rows of 128 tokens, forward and backward) on `provider`. */
async function training(config: ModelConfig, weights: WeightMap, file: WeightFile, basis: Basis, provider: ExecutionProvider): Promise<Record<string, number>> {
  const session = await TrainingSession.create(
    config,
    weights,
    { kind: "pica", basis, rank: RANK, sharing: "shared" },
    { executionProvider: provider, weightFile: file },
  );
  const rows = 4;
  const length = 128;
  const ids = syntheticTokens(rows * length, 9).map((id) => id % config.vocabSize);
  const batch: TrainingBatch = {
    rows,
    length,
    inputIds: ids,
    labels: ids.slice(1).concat(0),
    lossWeights: new Array(rows * length).fill(1),
    lengths: new Array(rows).fill(length),
  };
  const values = new Map(session.parameters.map((p) => [p.name, Float32Array.from(p.initial, (_, i) => 0.001 * Math.sin(i))]));
  const seconds: number[] = [];
  let loss = Number.NaN;
  for (let i = 0; i < 4; i++) {
    const ms = await timeMs(async () => {
      loss = (await session.step(batch, values)).loss;
    });
    if (i > 0) seconds.push(ms / 1000);
  }
  await session.dispose();
  const step = median(seconds);
  return { [`${provider}_train_step_seconds`]: round(step), [`${provider}_train_tok_s`]: round((rows * length) / step), train_loss: round(loss) };
}

/** Where a decode step's time goes on the provider: onnxruntime's profile of a few steps, by op type and node. */
async function diagnose(
  config: ModelConfig,
  weights: WeightMap,
  file: WeightFile,
  provider: ExecutionProvider,
  directory: string,
): Promise<Record<string, unknown>> {
  const { readdir, readFile } = await import("node:fs/promises");
  const out: Record<string, unknown> = {};
  for (const rows of [1, 16]) {
    const engine = await LlamaEngine.create(config, weights, {
      executionProvider: provider,
      weightFile: file,
      profileFilePrefix: join(directory, `profile-${rows}`),
    });
    const batch = engine.createBatch(rows, { initialCapacity: 128 });
    for (let r = 0; r < rows; r++) batch.addRow();
    batch.cache.reserve(new Array(rows).fill(64));
    batch.cache.advance(0, new Array(rows).fill(64));
    const tokens = Array.from({ length: rows }, (_, r) => [r + 1]);
    await engine.step(batch, tokens);
    const ms = await timeMs(async () => {
      for (let i = 0; i < 4; i++) await engine.step(batch, tokens);
    });
    out[`base_only_step_ms_b${rows}`] = round(ms / 4);
    engine.endProfiling();
    await engine.dispose();
    const name = (await readdir(directory)).find((f) => f.startsWith(`profile-${rows}`) && f.endsWith(".json"))!;
    const events = JSON.parse(await readFile(join(directory, name), "utf8")) as {
      cat: string;
      name: string;
      dur: number;
      args?: { op_name?: string; provider?: string };
    }[];
    const runs = events.filter((e) => e.name === "model_run").length;
    const byOp = new Map<string, { us: number; count: number }>();
    for (const e of events) {
      if (e.cat !== "Node" || !e.name.endsWith("_kernel_time")) continue;
      const key = `${e.args?.op_name}@${e.args?.provider ?? "?"}`;
      const entry = byOp.get(key) ?? { us: 0, count: 0 };
      entry.us += e.dur;
      entry.count++;
      byOp.set(key, entry);
    }
    const top = [...byOp]
      .sort((a, b) => b[1].us - a[1].us)
      .slice(0, 14)
      .map(([key, v]) => `${key} ${(v.us / runs / 1000).toFixed(2)}ms×${Math.round(v.count / runs)}`);
    const runMs = events.filter((e) => e.name === "model_run").reduce((sum, e) => sum + e.dur, 0) / runs / 1000;
    progress(`b${rows}: model_run ${runMs.toFixed(1)} ms; ${top.join("; ")}`);
    out[`profile_b${rows}`] = { model_run_ms: round(runMs), top };
  }
  return out;
}

function prefixed(prefix: string, values: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(values).map(([key, value]) => [`${prefix}_${key}`, value]));
}
