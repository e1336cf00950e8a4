/**
 * Quantized base weights: `npm run bench -- quantized`.
 *
 * Speed and memory, on random weights with Qwen2.5-0.5B's exact shapes (nothing downloaded):
 * our engine at f32 and int4 and llama.cpp (node-llama-cpp's prebuilt CPU build) on the very same
 * weights, written as GGUF by bench/gguf.ts (F32, and Q4_0 blocks holding our int4 codes), each
 * phase in a process of its own so its resident memory is its own, on the same threads. The four
 * phases run in turn, round after round, and every figure is the median over rounds of a ratio
 * within one round (bench/quantized-phase.ts, bench/llamacpp-phase.ts).
 *
 * Quality, on the shipped model (trained, so a quantization error shows in its loss):
 *   - held-out loss of the base model at int8 and int4 over f32, on a corpus the model never saw
 *     (the pre-training corpus generator with the held-out seed);
 *   - two fine-tuning tasks of the quality bench (format and recall), each trained and served on
 *     int4 against the same on f32 with three seeds: held-out loss and greedy exact match; and
 *     each int4-trained adapter served on f32 weights (the difference an adapter sees when served
 *     on another precision than it was trained on).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { LlamaEngine } from "../gpu-runner/engine/llama-engine.ts";
import { loadCheckpoint, type Checkpoint } from "../gpu-runner/model/checkpoint.ts";
import { SHIPPED_MODEL_DIRECTORY } from "../gpu-runner/model/shipped-model.ts";
import { writeWeightFile, type WeightFile } from "../gpu-runner/model/weight-file.ts";
import { loadOrComputeBasis } from "../gpu-runner/pica/basis.ts";
import type { Basis } from "../gpu-runner/pica/types.ts";
import { generateCorpus } from "../gpu-runner/pretrain/corpus.ts";
import { quantizationOf, type WeightPrecision } from "../gpu-runner/quantize/block-format.ts";
import { writeRealSizeCheckpoint } from "../gpu-runner/testing/realsize-checkpoints.ts";
import { fineTune } from "../gpu-runner/training/trainer.ts";
import { TrainingSession, type TrainingBatch } from "../gpu-runner/training/training-session.ts";
import { runPhase } from "./child-phase.ts";
import { exactMatch, MAX_LENGTH, mean, tokenizeTask, trainedLoss } from "./fine-tune-scoring.ts";
import { writeGguf } from "./gguf.ts";
import { formatTask, recallTask, toChatJsonl } from "./quality-tasks.ts";
import { median, progress, round } from "./stats.ts";

const ROUNDS = 5;
const DECODE_TOKENS = 64;
const HELD_OUT_SEED = 20261128; // the shipped model's pre-training seed + 1: its held-out corpus
const HELD_OUT_WINDOWS = 256; // × 128 tokens
const WINDOW = 128;
const R_MAX = 64;
const FINE_TUNE_SEEDS = [1, 2, 3];

type Figures = Record<string, number>;

/** Our engine and llama.cpp on Qwen2.5-0.5B's shapes, f32 and int4, round after round. */
async function engineComparison(root: string): Promise<Record<string, unknown>> {
  const checkpoint = join(root, "qwen2.5-0.5b");
  progress("writing random weights with the shapes of Qwen2.5-0.5B…");
  await writeRealSizeCheckpoint(checkpoint, "qwen2.5-0.5b-instruct");
  const { config, weights } = await loadCheckpoint(checkpoint, { lazy: true });
  const precisions: WeightPrecision[] = ["f32", "int4"];
  const ggufs = new Map<WeightPrecision, string>();
  for (const precision of precisions) {
    const path = join(root, `qwen2.5-0.5b-${precision}.gguf`);
    progress(`writing the ${precision} GGUF for llama.cpp…`);
    await writeGguf(path, config, weights, precision);
    ggufs.set(precision, path);
  }
  const cache = join(root, "cache");
  const threads = String(availableParallelism());
  const ours = (precision: WeightPrecision) => runPhase("quantized-phase.ts", [checkpoint, cache, precision, String(DECODE_TOKENS)]);
  const llamaCpp = (precision: WeightPrecision) => runPhase("llamacpp-phase.ts", [ggufs.get(precision)!, threads, String(DECODE_TOKENS)]);
  for (const precision of precisions) {
    progress(`our ${precision} weight file (written once, as a runner's first start does)…`);
    await ours(precision);
  }
  const rounds: Record<string, Figures>[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const figures: Record<string, Figures> = {};
    for (const precision of precisions) {
      figures[`ours_${precision}`] = await ours(precision);
      figures[`llamacpp_${precision}`] = await llamaCpp(precision);
    }
    rounds.push(figures);
    progress(
      `round ${r + 1}: ${Object.entries(figures)
        .map(([name, f]) => `${name} ${f.decode_tok_s.toFixed(1)} tok/s, ${f.rss_mb.toFixed(0)} MiB`)
        .join("; ")}`,
    );
  }
  const ratio = (pick: (r: Record<string, Figures>) => number) => round(median(rounds.map(pick)), 3);
  const value = (name: string, field: string) => round(median(rounds.map((r) => r[name][field])), 3);
  return {
    decode_tok_s_int4_over_f32_05b: ratio((r) => r.ours_int4.decode_tok_s / r.ours_f32.decode_tok_s),
    decode_tok_s_int4_over_f32_05b_b16: ratio((r) => r.ours_int4.decode_tok_s_b16 / r.ours_f32.decode_tok_s_b16),
    rss_int4_over_f32_05b: ratio((r) => r.ours_int4.rss_mb / r.ours_f32.rss_mb),
    mixed_adapters_over_base_int4_b16: ratio((r) => r.ours_int4.mixed_adapters_over_base_b16),
    decode_tok_s_ours_over_llamacpp_int4: ratio((r) => r.ours_int4.decode_tok_s / r.llamacpp_int4.decode_tok_s),
    decode_tok_s_ours_over_llamacpp_f32: ratio((r) => r.ours_f32.decode_tok_s / r.llamacpp_f32.decode_tok_s),
    rss_ours_over_llamacpp_int4: ratio((r) => r.ours_int4.rss_mb / r.llamacpp_int4.rss_mb),
    rss_ours_over_llamacpp_f32: ratio((r) => r.ours_f32.rss_mb / r.llamacpp_f32.rss_mb),
    decode_tok_s_05b: Object.fromEntries(["ours_f32", "ours_int4", "llamacpp_f32", "llamacpp_int4"].map((n) => [n, value(n, "decode_tok_s")])),
    decode_tok_s_b16_05b: { ours_f32: value("ours_f32", "decode_tok_s_b16"), ours_int4: value("ours_int4", "decode_tok_s_b16") },
    rss_mb_05b: Object.fromEntries(
      ["ours_f32", "ours_int4", "llamacpp_f32", "llamacpp_int4"].map((n) => [n, Math.round(median(rounds.map((r) => r[n].rss_mb)))]),
    ),
    threads: Number(threads),
  };
}

/** Windows of the held-out corpus as training batches of 16 rows, every position weighted. */
function heldOutBatches(checkpoint: Checkpoint): TrainingBatch[] {
  const tokens = checkpoint.tokenizer.encode(generateCorpus(HELD_OUT_SEED, (HELD_OUT_WINDOWS + 1) * WINDOW * 2), { addSpecialTokens: false });
  const rows = 16;
  const batches: TrainingBatch[] = [];
  for (let b = 0; b < HELD_OUT_WINDOWS / rows; b++) {
    const inputIds: number[] = [];
    const labels: number[] = [];
    for (let r = 0; r < rows; r++) {
      const start = (b * rows + r) * WINDOW;
      for (let t = 0; t < WINDOW; t++) {
        inputIds.push(tokens[start + t]);
        labels.push(tokens[start + t + 1]);
      }
    }
    batches.push({ rows, length: WINDOW, inputIds, labels, lossWeights: new Float32Array(rows * WINDOW).fill(1), lengths: new Array(rows).fill(WINDOW) });
  }
  return batches;
}

/** The base model's mean held-out loss per token, its weights at `file`'s precision. */
async function heldOutLoss(checkpoint: Checkpoint, basis: Basis, file: WeightFile, batches: TrainingBatch[]): Promise<number> {
  const session = await TrainingSession.create(
    checkpoint.config,
    checkpoint.weights,
    { kind: "pica", basis, rank: 1, sharing: "shared" },
    { weightFile: file },
  );
  try {
    const values = new Map(session.parameters.map((p) => [p.name, Float32Array.from(p.initial)]));
    let total = 0;
    for (const batch of batches) total += (await session.evaluate(batch, values)).loss;
    return total / batches.length;
  } finally {
    await session.dispose();
  }
}

/** Held-out loss of the shipped base model, and a fine-tune trained and served at each precision. */
async function shippedQuality(root: string): Promise<Record<string, unknown>> {
  const checkpoint = await loadCheckpoint(SHIPPED_MODEL_DIRECTORY);
  const { config, weights, tokenizer } = checkpoint;
  const { basis } = await loadOrComputeBasis(join(".cache", "bench"), config, weights, { rMax: R_MAX });
  const files = new Map<WeightPrecision, WeightFile>();
  for (const precision of ["f32", "int8", "int4"] as const) {
    files.set(precision, await writeWeightFile(join(root, `shipped-${precision}`), config, weights, quantizationOf(precision)));
  }
  const batches = heldOutBatches(checkpoint);
  const loss = new Map<WeightPrecision, number>();
  for (const [precision, file] of files) {
    loss.set(precision, await heldOutLoss(checkpoint, basis, file, batches));
    progress(`shipped model, ${precision} weights: held-out loss ${loss.get(precision)!.toFixed(4)} nats/token (${batches.length * 16} windows of ${WINDOW})`);
  }

  // Fine-tuning at the platform's defaults is sensitive to its start (the sweep's seed ranges),
  // more than to the base's precision: each precision trains every task with several seeds, and
  // the figures are means over them (per task, then the geometric mean of the tasks' ratios).
  const tasks = [formatTask({ train: 240, eval: 80 }), recallTask({ train: 240, eval: 80 })];
  type Run = { loss: number; accuracy: number; crossLoss: number | null };
  const byTask: Record<string, unknown> = {};
  const ratios: number[] = [];
  const all = new Map<WeightPrecision, Run[]>([
    ["f32", []],
    ["int4", []],
  ]);
  for (const task of tasks) {
    const heldOut = tokenizeTask(task, task.eval, tokenizer);
    const runs = new Map<WeightPrecision, Run[]>();
    for (const precision of ["f32", "int4"] as const) {
      const file = files.get(precision)!;
      runs.set(precision, []);
      for (const seed of FINE_TUNE_SEEDS) {
        const started = performance.now();
        const result = await fineTune(
          { config, weights, tokenizer, basis, weightFile: file },
          { training: toChatJsonl(task.train), validation: toChatJsonl(task.eval), seed, maxLength: MAX_LENGTH },
        );
        const adapter = result.adapter!;
        const engine = await LlamaEngine.create(config, weights, { weightFile: file, adapters: { basis, rank: R_MAX }, allowSpinning: false });
        let accuracy: number;
        try {
          engine.registerAdapter("tuned", adapter);
          ({ accuracy } = await exactMatch(engine, tokenizer, task.eval, "tuned"));
        } finally {
          await engine.dispose();
        }
        // An int4-trained adapter served on float32 weights: what serving on another precision costs.
        const crossLoss =
          precision === "int4"
            ? await trainedLoss(config, weights, { kind: "pica", basis, rank: adapter.rank, sharing: adapter.sharing }, result.parameters, heldOut, {
                weightFile: files.get("f32")!,
              })
            : null;
        const run = { loss: result.validationLoss!, accuracy, crossLoss };
        runs.get(precision)!.push(run);
        all.get(precision)!.push(run);
        progress(
          `${task.name} fine-tuned on ${precision}, seed ${seed} (${result.steps} steps, ${((performance.now() - started) / 1000).toFixed(0)} s): held-out loss ${run.loss.toFixed(4)}, exact match ${(100 * accuracy).toFixed(1)}%${crossLoss === null ? "" : `; served on f32: ${crossLoss.toFixed(4)}`}`,
        );
      }
    }
    const summary = (precision: WeightPrecision) => {
      const losses = runs.get(precision)!.map((r) => r.loss);
      return {
        loss: round(mean(losses), 4),
        loss_range: [round(Math.min(...losses), 4), round(Math.max(...losses), 4)],
        exact_match: round(mean(runs.get(precision)!.map((r) => r.accuracy)), 4),
      };
    };
    const ratio = mean(runs.get("int4")!.map((r) => r.loss)) / mean(runs.get("f32")!.map((r) => r.loss));
    ratios.push(ratio);
    byTask[task.name] = { f32: summary("f32"), int4: summary("int4"), loss_int4_over_f32: round(ratio, 4) };
  }
  const meanOf = (precision: WeightPrecision, pick: (r: Run) => number) => mean(all.get(precision)!.map(pick));
  return {
    heldout_loss_int8_over_f32_shipped: round(loss.get("int8")! / loss.get("f32")!, 5),
    heldout_loss_int4_over_f32_shipped: round(loss.get("int4")! / loss.get("f32")!, 5),
    heldout_loss_shipped: Object.fromEntries([...loss].map(([p, l]) => [p, round(l, 5)])),
    finetune_loss_int4_over_f32: round(Math.exp(mean(ratios.map(Math.log))), 4),
    finetune_exact_match_f32: round(
      meanOf("f32", (r) => r.accuracy),
      4,
    ),
    finetune_exact_match_int4: round(
      meanOf("int4", (r) => r.accuracy),
      4,
    ),
    finetune_loss_int4_trained_on_f32_over_int4: round(
      meanOf("int4", (r) => r.crossLoss! / r.loss),
      4,
    ),
    finetune_by_task: { ...byTask, seeds: FINE_TUNE_SEEDS.length },
  };
}

/** Runs the quantized bench and returns its figures. */
export async function runQuantizedBench(): Promise<Record<string, unknown>> {
  const root = await mkdtemp(join(tmpdir(), "pica-quantized-"));
  try {
    const comparison = await engineComparison(root);
    const quality = await shippedQuality(root);
    return { ...comparison, ...quality };
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}
