/**
 * Fine-tuning sweep: which method, rank and learning rate the shipped base model fine-tunes best
 * with, and which defaults tenants should get. Four generated tasks (bench/quality-tasks.ts:
 * format, recall, classify, extract), 160 training examples each, split into 128 to fit and 32
 * to validate on; each task's 80 held-out examples are never seen until the end.
 *
 *   1. grid      PiCa shared (r 2, 8, 32, 64), PiCa per-layer (r 8) and LoRA (r 1, 8; all seven
 *                modules, alpha = rank), each over its own grid of peak learning rates in steps
 *                of about 3× (PiCa 3e-3…1e-1, LoRA 1e-3…1e-1), 8 epochs, batch 16, seed 1,
 *                scored by the validation part's loss after the last epoch.
 *   2. schedule  PiCa shared at the chosen rank and rate: 4, 8 and 16 epochs at batch 16, 8 and
 *                16 at batch 4, on a quarter of the fitting part and on all of it, scored by
 *                validation loss.
 *   3. final     for every method, rank and task, the rate with the lowest validation loss with
 *                seeds 1, 2 and 3 (seed 1 is the grid's run), each scored once on the held-out
 *                set: eval loss and greedy exact match (bench/fine-tune-scoring.ts).
 *
 * Defaults are chosen from validation losses only (never from the held-out set): the rank is the
 * smallest PiCa shared rank whose validation loss, averaged over tasks, is within 5% of the best
 * rank's; the rate is the one with the lowest validation loss relative to each task's best at that
 * rank, averaged over tasks; epochs and batch size per dataset size: the schedule with the fewest
 * optimizer steps whose validation loss is within 10% of the best schedule's.
 *
 * Every finished run is kept in a state file (default .cache/bench/sweep-state.json, trained
 * parameters beside it), so an interrupted sweep resumes where it stopped; the bench prints each
 * run and an ETA. It writes the loss-against-parameters plot to docs/quality/sweep.svg and prints
 * the tables.
 *
 *   npm run bench -- sweep [--state FILE] [--quick] [--fresh]
 *
 * `--quick` runs a smoke version (one task, a few ranks, two rates, two seeds, small sets) into
 * its own state file; the reported figures use the defaults.
 */
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { LlamaEngine } from "../gpu-runner/engine/llama-engine.ts";
import { loadCheckpoint } from "../gpu-runner/model/checkpoint.ts";
import { SHIPPED_MODEL_DIRECTORY as SHIPPED_MODEL } from "../gpu-runner/model/shipped-model.ts";
import { loadOrComputeBasis } from "../gpu-runner/pica/basis.ts";
import { parseSafetensors, serializeSafetensors } from "../gpu-runner/checkpoint/safetensors.ts";
import type { TrainingMethod } from "../gpu-runner/model/training-graph.ts";
import { LINEAR_MODULES } from "../gpu-runner/model/weights.ts";
import { fineTune, toAdapter } from "../gpu-runner/training/trainer.ts";
import { BASE_LEARNING_RATE, resolveHyperparameters } from "../src/hyperparameters.ts";
import { requestedRank } from "../src/protocol/runner.ts";
import { MAX_LENGTH, mean, scoreAdapter, tokenizeTask, trainedLoss, type BenchModel } from "./fine-tune-scoring.ts";
import { sweepTasks, toChatJsonl, type QualityTask } from "./quality-tasks.ts";
import { progress, round } from "./stats.ts";
import { lossAgainstParametersSvg, type PlotSeries } from "./sweep-plot.ts";

/** One adapter configuration of the grid. */
interface Config {
  method: "pica" | "lora";
  sharing: boolean; // PiCa: one M per module type for every layer
  rank: number;
}

const FAMILIES = [
  { key: "pica_shared", label: "PiCa shared", method: "pica", sharing: true },
  { key: "pica_per_layer", label: "PiCa per-layer", method: "pica", sharing: false },
  { key: "lora", label: "LoRA", method: "lora", sharing: false },
] as const;
type FamilyKey = (typeof FAMILIES)[number]["key"];

interface Plan {
  ranks: Record<FamilyKey, number[]>;
  learningRates: Record<Config["method"], number[]>; // peak rates, per method
  seeds: number[];
  sizes: { train: number; eval: number };
  validationFraction: number;
  epochs: number;
  batchSize: number;
  tasks: number; // how many of the sweep's tasks
  schedule: { fractions: number[]; runs: { epochs: number; batchSize: number }[] };
}

const FULL: Plan = {
  ranks: { pica_shared: [2, 8, 32, 64], pica_per_layer: [8], lora: [1, 8] },
  learningRates: { pica: [3e-3, 1e-2, 3e-2, 1e-1], lora: [1e-3, 3e-3, 1e-2, 3e-2, 1e-1] },
  seeds: [1, 2, 3],
  sizes: { train: 160, eval: 80 },
  validationFraction: 0.2,
  epochs: 8,
  batchSize: 16,
  tasks: 4,
  schedule: {
    fractions: [0.25, 1],
    runs: [
      { epochs: 4, batchSize: 16 },
      { epochs: 8, batchSize: 16 },
      { epochs: 16, batchSize: 16 },
      { epochs: 8, batchSize: 4 },
      { epochs: 16, batchSize: 4 },
    ],
  },
};
const QUICK: Plan = {
  ranks: { pica_shared: [2, 8], pica_per_layer: [2], lora: [2, 8] },
  learningRates: { pica: [1e-3, 1e-2], lora: [1e-3, 1e-2] },
  seeds: [1, 2],
  sizes: { train: 40, eval: 10 },
  validationFraction: 0.25,
  epochs: 2,
  batchSize: 8,
  tasks: 1,
  schedule: {
    fractions: [0.5, 1],
    runs: [
      { epochs: 1, batchSize: 8 },
      { epochs: 2, batchSize: 8 },
    ],
  },
};
const RANK_TOLERANCE = 1.05; // the default rank: the smallest within 5% of the best rank's validation loss
const SCHEDULE_TOLERANCE = 1.1; // the default schedule: the fewest steps within 10% of the best one's validation loss
// One training at a time on every core: onnxruntime-node runs a session on the calling thread, so
// trainings interleaved on one event loop do not run in parallel.
const CONCURRENT_RUNS = 1;
const PLOT_PATH = "docs/quality/sweep.svg";
const STATE_VERSION = 1;

/** A finished training run: scored on the validation split; its parameters kept beside the state. */
interface RunRecord {
  key: string;
  validationLoss: number;
  trainLoss: number;
  parameters: number;
  seconds: number;
}

/** A run scored once on the held-out set. */
interface HeldOutRecord {
  key: string;
  loss: number;
  accuracy: number;
  samples: string[];
  seconds: number;
}

interface State {
  version: typeof STATE_VERSION;
  model: string;
  runs: Record<string, RunRecord>;
  heldOut: Record<string, HeldOutRecord>;
}

interface RunSpec {
  task: QualityTask;
  config: Config;
  learningRate: number;
  seed: number;
  examples: number; // training examples used (from the fitting part)
  epochs: number;
  batchSize: number;
}

const familyOf = (config: Config): FamilyKey => (config.method === "lora" ? "lora" : config.sharing ? "pica_shared" : "pica_per_layer");
const runKey = (s: RunSpec) =>
  [s.task.name, familyOf(s.config), `r${s.config.rank}`, `lr${s.learningRate}`, `seed${s.seed}`, `n${s.examples}`, `e${s.epochs}`, `b${s.batchSize}`].join("|");

/** The state file: every finished run and score, rewritten after each. */
class StateFile {
  private writes = Promise.resolve();
  private constructor(
    readonly path: string,
    readonly state: State,
  ) {}

  static async open(path: string, model: string, fresh: boolean): Promise<StateFile> {
    if (!fresh && existsSync(path)) {
      const state = JSON.parse(await readFile(path, "utf8")) as State;
      if (state.version === STATE_VERSION && state.model === model) {
        progress(`resuming from ${path}: ${Object.keys(state.runs).length} runs and ${Object.keys(state.heldOut).length} held-out scores already done`);
        return new StateFile(path, state);
      }
      progress(`${path} was written by another version of this bench or for another model; starting over`);
    }
    await rm(`${path}.parameters`, { recursive: true, force: true });
    return new StateFile(path, { version: STATE_VERSION, model, runs: {}, heldOut: {} });
  }

  /** Where a run's trained parameters are kept. */
  parametersPath(key: string): string {
    return join(`${this.path}.parameters`, `${createHash("sha256").update(key).digest("hex").slice(0, 24)}.safetensors`);
  }

  save(): Promise<void> {
    this.writes = this.writes.then(async () => {
      await mkdir(dirname(this.path), { recursive: true });
      await writeFile(`${this.path}.tmp`, JSON.stringify(this.state));
      await rename(`${this.path}.tmp`, this.path);
    });
    return this.writes;
  }
}

/** Counts runs and prints an ETA from the runs this process has timed. */
class Progress {
  private readonly started = performance.now();
  private timed = 0;
  private done = 0;
  constructor(private readonly total: number) {}

  skip(): void {
    this.done++;
  }

  finished(line: string): void {
    this.done++;
    this.timed++;
    const elapsed = (performance.now() - this.started) / 1000;
    const eta = (elapsed / this.timed) * (this.total - this.done);
    progress(`[${this.done}/${this.total}, ETA ${Math.round(eta / 60)} min] ${line}`);
  }
}

/** Runs `work` over `items`, at most `limit` at once, keeping the items' order in the results. */
async function inParallel<T, R>(items: readonly T[], limit: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const lane = async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await work(items[index]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  return results;
}

/** Runs the sweep and returns its figures. */
export async function runSweepBench(): Promise<Record<string, unknown>> {
  const { values: flags } = parseArgs({
    args: process.argv.slice(3),
    options: { state: { type: "string" }, quick: { type: "boolean" }, fresh: { type: "boolean" } },
  });
  const plan = flags.quick ? QUICK : FULL;
  const statePath = flags.state ?? join(".cache", "bench", flags.quick ? "sweep-quick-state.json" : "sweep-state.json");
  const started = performance.now();

  progress(`loading ${SHIPPED_MODEL}…`);
  const { config, weights, tokenizer } = await loadCheckpoint(SHIPPED_MODEL);
  const maxRank = Math.max(...plan.ranks.pica_shared, ...plan.ranks.pica_per_layer);
  // Kept in the bench's cache, not beside the shipped model (which ships its serving basis only).
  const { basis, computed, seconds } = await loadOrComputeBasis(join(".cache", "bench"), config, weights, { rMax: maxRank });
  progress(`basis r${maxRank} ${computed ? "computed" : "loaded"} in ${seconds.toFixed(1)} s`);
  const state = await StateFile.open(statePath, basis.baseFingerprint, flags.fresh ?? false);

  const tasks = sweepTasks(plan.sizes).slice(0, plan.tasks);
  const splits = new Map(
    tasks.map((task) => {
      const validation = Math.round(task.train.length * plan.validationFraction);
      const fit = task.train.slice(0, task.train.length - validation);
      tokenizeTask(task, task.train, tokenizer);
      progress(`task ${task.name}: ${fit.length} fit, ${validation} validation, ${task.eval.length} held out — ${task.description}`);
      return [task.name, { fit, validation: task.train.slice(fit.length), heldOut: tokenizeTask(task, task.eval, tokenizer) }];
    }),
  );
  const fitSize = (task: QualityTask) => splits.get(task.name)!.fit.length;
  const configs: Config[] = FAMILIES.flatMap((f) => plan.ranks[f.key].map((rank) => ({ method: f.method, sharing: f.sharing, rank })));
  const gridRuns = tasks.length * configs.reduce((n, c) => n + plan.learningRates[c.method].length, 0);
  const finalRuns = tasks.length * configs.length * plan.seeds.length;
  const scheduleRuns = tasks.length * plan.schedule.fractions.length * plan.schedule.runs.length;
  const counter = new Progress(gridRuns + 2 * finalRuns + scheduleRuns); // a final run is trained (seed 1: found in the grid) and scored

  const picaEngine = await LlamaEngine.create(config, weights, { adapters: { basis, rank: maxRank }, allowSpinning: false });
  const model: BenchModel = { config, weights, tokenizer, basis, picaEngine };
  const graphMethod = (c: Config, seed: number): TrainingMethod =>
    c.method === "pica"
      ? { kind: "pica", basis, rank: c.rank, sharing: c.sharing ? "shared" : "per_layer" }
      : { kind: "lora", rank: c.rank, alpha: c.rank, targetModules: [...LINEAR_MODULES], seed };

  /** Trains one run on the fitting part, scored on the validation part (or reads it from the state). */
  const train = async (spec: RunSpec): Promise<RunRecord> => {
    const key = runKey(spec);
    const stored = state.state.runs[key];
    if (stored !== undefined) {
      counter.skip();
      return stored;
    }
    const split = splits.get(spec.task.name)!;
    const runStarted = performance.now();
    let trainLoss = Number.NaN;
    const result = await fineTune(
      { config, weights, tokenizer, basis },
      {
        training: toChatJsonl(split.fit.slice(0, spec.examples)),
        validation: toChatJsonl(split.validation),
        method: spec.config.method,
        hyperparameters: { n_epochs: spec.epochs, batch_size: spec.batchSize, rank: spec.config.rank, weight_sharing: spec.config.sharing },
        peakLearningRate: spec.learningRate,
        seed: spec.seed,
        maxLength: MAX_LENGTH,
        onEvent: (event) => {
          if (event.type === "epoch") trainLoss = event.trainLoss;
        },
      },
    );
    const tensors = new Map([...result.parameters].map(([name, data]) => [name, { shape: [data.length], data }]));
    await mkdir(dirname(state.parametersPath(key)), { recursive: true });
    await writeFile(state.parametersPath(key), serializeSafetensors(tensors));
    const record: RunRecord = {
      key,
      validationLoss: result.validationLoss!,
      trainLoss,
      parameters: [...result.parameters.values()].reduce((n, p) => n + p.length, 0),
      seconds: (performance.now() - runStarted) / 1000,
    };
    state.state.runs[key] = record;
    await state.save();
    counter.finished(`${key}: train ${trainLoss.toFixed(3)}, validation ${record.validationLoss.toFixed(3)} (${record.seconds.toFixed(1)} s)`);
    return record;
  };

  /** Scores a trained run once on its task's held-out set: eval loss and greedy exact match. */
  let scoring = Promise.resolve();
  const scoreHeldOut = async (spec: RunSpec): Promise<HeldOutRecord> => {
    const key = runKey(spec);
    const stored = state.state.heldOut[key];
    if (stored !== undefined) {
      counter.skip();
      return stored;
    }
    const run = async (): Promise<HeldOutRecord> => {
      const scoreStarted = performance.now();
      const saved = parseSafetensors(await readFile(state.parametersPath(key)), key).tensors;
      const parameters = new Map([...saved].map(([name, tensor]) => [name, tensor.data as Float32Array]));
      const split = splits.get(spec.task.name)!;
      const loss = await trainedLoss(config, weights, graphMethod(spec.config, spec.seed), parameters, split.heldOut);
      const id = key.replace(/[^A-Za-z0-9_-]/g, "-");
      const scored = await scoreAdapter(
        model,
        spec.config.method === "pica"
          ? {
              id,
              method: "pica",
              rank: spec.config.rank,
              trainerEvalLoss: loss,
              adapter: toAdapter(config, basis, spec.config.rank, spec.config.sharing ? "shared" : "per_layer", parameters, {}),
            }
          : { id, method: "lora", rank: spec.config.rank, trainerEvalLoss: loss, parameters },
        spec.task.eval,
        split.heldOut,
      );
      const record: HeldOutRecord = { key, loss, accuracy: scored.accuracy, samples: scored.samples, seconds: (performance.now() - scoreStarted) / 1000 };
      state.state.heldOut[key] = record;
      await state.save();
      counter.finished(
        `held out ${key}: loss ${loss.toFixed(3)}, exact match ${(100 * scored.accuracy).toFixed(1)}% (${record.seconds.toFixed(1)} s)\n  ${scored.samples.join("\n  ")}`,
      );
      return record;
    };
    // One scoring at a time: they share the serving engine.
    const result = scoring.then(run);
    scoring = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  };

  try {
    const base = { epochs: plan.epochs, batchSize: plan.batchSize };

    // 1. The learning-rate grid, scored on the validation split.
    const gridSpecs = tasks.flatMap((task) =>
      configs.flatMap((c) =>
        plan.learningRates[c.method].map((learningRate): RunSpec => ({ task, config: c, learningRate, seed: 1, examples: fitSize(task), ...base })),
      ),
    );
    const gridRecords = await inParallel(gridSpecs, CONCURRENT_RUNS, train);
    const grid = new Map<string, RunRecord[]>(); // task|family|rank → one record per rate, in grid order
    gridSpecs.forEach((spec, i) => {
      const id = `${spec.task.name}|${familyOf(spec.config)}|${spec.config.rank}`;
      grid.set(id, [...(grid.get(id) ?? []), gridRecords[i]!]);
    });
    const bestRate = (task: QualityTask, c: Config) => {
      const records = grid.get(`${task.name}|${familyOf(c)}|${c.rank}`)!;
      const best = records.reduce((b, r, i) => (r.validationLoss < records[b]!.validationLoss ? i : b), 0);
      return { learningRate: plan.learningRates[c.method][best]!, validationLoss: records[best]!.validationLoss };
    };

    // Defaults from validation losses: the rank, then the rate at that rank.
    const sharedRanks = plan.ranks.pica_shared;
    const rankLoss = sharedRanks.map((rank) => mean(tasks.map((t) => bestRate(t, { method: "pica", sharing: true, rank }).validationLoss)));
    const bestRankLoss = Math.min(...rankLoss);
    const defaultRank = sharedRanks.find((_, i) => rankLoss[i]! <= RANK_TOLERANCE * bestRankLoss)!;
    const rateScore = plan.learningRates.pica.map((_, i) =>
      mean(
        tasks.map((t) => {
          const records = grid.get(`${t.name}|pica_shared|${defaultRank}`)!;
          return records[i]!.validationLoss / Math.min(...records.map((r) => r.validationLoss));
        }),
      ),
    );
    const defaultRate = plan.learningRates.pica[rateScore.indexOf(Math.min(...rateScore))]!;
    progress(`default rank ${defaultRank} (validation loss by rank: ${rankLoss.map((l, i) => `r${sharedRanks[i]} ${l.toFixed(3)}`).join(", ")})`);
    progress(
      `default rate ${defaultRate} (validation loss over each task's best: ${rateScore.map((s, i) => `${plan.learningRates.pica[i]} ${s.toFixed(3)}`).join(", ")})`,
    );

    // 2. Epochs × batch size at two dataset sizes, PiCa shared at the default rank and rate.
    const scheduleSpecs = plan.schedule.fractions.flatMap((fraction) =>
      plan.schedule.runs.flatMap((run) =>
        tasks.map(
          (task): RunSpec => ({
            task,
            config: { method: "pica", sharing: true, rank: defaultRank },
            learningRate: defaultRate,
            seed: 1,
            examples: Math.round(fitSize(task) * fraction),
            ...run,
          }),
        ),
      ),
    );
    const scheduleRecords = await inParallel(scheduleSpecs, CONCURRENT_RUNS, train);
    const schedules = plan.schedule.fractions.flatMap((fraction, f) =>
      plan.schedule.runs.map((run, r) => {
        const first = (f * plan.schedule.runs.length + r) * tasks.length;
        const specs = scheduleSpecs.slice(first, first + tasks.length);
        const examples = specs[0]!.examples;
        return {
          examples,
          fraction,
          ...run,
          steps: Math.ceil(examples / run.batchSize) * run.epochs,
          score: mean(scheduleRecords.slice(first, first + tasks.length).map((r) => r.validationLoss)),
        };
      }),
    );
    // Per size, the schedule with the fewest optimizer steps among those within 10% of the best.
    const bestSchedules = plan.schedule.fractions.map((fraction) => {
      const tried = schedules.filter((s) => s.fraction === fraction);
      const best = Math.min(...tried.map((s) => s.score));
      return tried.filter((s) => s.score <= SCHEDULE_TOLERANCE * best).reduce((b, s) => (s.steps < b.steps ? s : b));
    });

    // 3. The best rate of each method, rank and task with every seed, scored once on the held-out set.
    const finalSpecs = tasks.flatMap((task) =>
      configs.flatMap((c) =>
        plan.seeds.map((seed): RunSpec => ({ task, config: c, learningRate: bestRate(task, c).learningRate, seed, examples: fitSize(task), ...base })),
      ),
    );
    const heldOut = await inParallel(finalSpecs, CONCURRENT_RUNS, async (spec) => {
      await train(spec);
      return scoreHeldOut(spec);
    });
    const finals = new Map<string, HeldOutRecord[]>(); // task|family|rank → one record per seed
    finalSpecs.forEach((spec, i) => {
      const id = `${spec.task.name}|${familyOf(spec.config)}|${spec.config.rank}`;
      finals.set(id, [...(finals.get(id) ?? []), heldOut[i]!]);
    });

    // Figures: per family and rank, means over tasks of the per-task means over seeds.
    const figures: Figure[] = FAMILIES.map((family) => ({
      family,
      points: plan.ranks[family.key].map((rank) => {
        const perTask = tasks.map((t) => finals.get(`${t.name}|${family.key}|${rank}`)!);
        const seedMeans = plan.seeds.map((_, s) => mean(perTask.map((records) => records[s]!.loss)));
        const c: Config = { method: family.method, sharing: family.sharing, rank };
        return {
          rank,
          parameters: gridRecords[gridSpecs.findIndex((spec) => familyOf(spec.config) === family.key && spec.config.rank === rank)]!.parameters,
          loss: mean(seedMeans),
          lossMin: Math.min(...seedMeans),
          lossMax: Math.max(...seedMeans),
          accuracy: mean(perTask.flatMap((records) => records.map((r) => r.accuracy))),
          rates: tasks.map((t) => bestRate(t, c).learningRate),
          perTask: tasks.map((t, i) => ({ task: t.name, loss: mean(perTask[i]!.map((r) => r.loss)), accuracy: mean(perTask[i]!.map((r) => r.accuracy)) })),
        };
      }),
    }));
    const lora8 = figures.find((f) => f.family.key === "lora")!.points.find((p) => p.rank === 8) ?? null;
    const shared = figures.find((f) => f.family.key === "pica_shared")!.points;
    const matching = lora8 === null ? [] : shared.filter((p) => p.loss <= lora8.loss);
    const picaAtLora8 = matching.length === 0 ? null : Math.min(...matching.map((p) => p.parameters));

    printTables(figures, tasks, plan, schedules);
    if (!flags.quick) {
      const series: PlotSeries[] = figures.map((f) => ({
        label: f.family.label,
        points: f.points.map((p) => ({ x: p.parameters, y: p.loss, low: p.lossMin, high: p.lossMax, tag: `r${p.rank}` })),
      }));
      await mkdir(dirname(PLOT_PATH), { recursive: true });
      await writeFile(
        PLOT_PATH,
        lossAgainstParametersSvg(series, {
          title: `Held-out loss against trainable parameters, each at its best rate (mean of ${tasks.length} tasks × ${plan.seeds.length} seeds)`,
        }),
      );
      progress(`wrote ${PLOT_PATH}`);
    }

    const chosen = {
      rank: defaultRank,
      learning_rate_multiplier: round(defaultRate / BASE_LEARNING_RATE.pica),
      peak_learning_rate: defaultRate,
      schedules: bestSchedules.map((s) => ({ examples: s.examples, epochs: s.epochs, batch_size: s.batchSize })),
    };
    const auto = (examples: number) => resolveHyperparameters({}, { trainExamples: examples, method: "pica" });
    const shipped = {
      rank: requestedRank(undefined),
      learning_rate_multiplier: auto(1).learningRateMultiplier,
      peak_learning_rate: auto(1).learningRate,
      schedules: bestSchedules.map((s) => ({ examples: s.examples, epochs: auto(s.examples).nEpochs, batch_size: auto(s.examples).batchSize })),
    };
    return {
      config: `${SHIPPED_MODEL}; tasks ${tasks.map((t) => t.name).join(", ")}; ${plan.sizes.train} training examples per task (${Math.round(100 * plan.validationFraction)}% of them for validation), ${plan.sizes.eval} held out; grid ${plan.epochs} epochs, batch ${plan.batchSize}, peak rates PiCa ${plan.learningRates.pica.join(", ")}, LoRA ${plan.learningRates.lora.join(", ")}; seeds ${plan.seeds.join(", ")}`,
      ...Object.fromEntries(
        figures.map((f) => [
          f.family.key,
          Object.fromEntries(
            f.points.map((p) => [
              `r${p.rank}`,
              {
                parameters: p.parameters,
                heldout_loss: round(p.loss),
                heldout_loss_seed_range: [round(p.lossMin), round(p.lossMax)],
                exact_match: round(p.accuracy),
                rates: p.rates,
              },
            ]),
          ),
        ]),
      ),
      pica_shared_params_at_lora_r8_loss: picaAtLora8,
      lora_r8_params_over_that: picaAtLora8 === null || lora8 === null ? null : round(lora8.parameters / picaAtLora8),
      chosen_defaults: chosen,
      // What a job that leaves everything "auto" gets from the code as shipped, at the same sizes.
      shipped_defaults: shipped,
      shipped_defaults_are_chosen: JSON.stringify(shipped) === JSON.stringify(chosen),
      runs: Object.keys(state.state.runs).length,
      // Seconds of every training and scoring as each was timed, over every session that resumed the state.
      recorded_seconds: round(
        Object.values(state.state.runs).reduce((sum, r) => sum + r.seconds, 0) + Object.values(state.state.heldOut).reduce((sum, r) => sum + r.seconds, 0),
      ),
      total_seconds: round((performance.now() - started) / 1000),
    };
  } finally {
    await picaEngine.dispose();
  }
}

type Figure = {
  family: (typeof FAMILIES)[number];
  points: {
    rank: number;
    parameters: number;
    loss: number;
    lossMin: number;
    lossMax: number;
    accuracy: number;
    rates: number[];
    perTask: { task: string; loss: number; accuracy: number }[];
  }[];
};

function printTables(
  figures: Figure[],
  tasks: QualityTask[],
  plan: Plan,
  schedules: { examples: number; epochs: number; batchSize: number; score: number; steps: number }[],
): void {
  const lines = [
    "| method | rank | trainable params | held-out loss (seed range) | exact match | best rate per task |",
    "| --- | ---: | ---: | ---: | ---: | --- |",
  ];
  for (const f of figures) {
    for (const p of f.points) {
      lines.push(
        `| ${f.family.label} | ${p.rank} | ${p.parameters.toLocaleString("en-US")} | ${p.loss.toFixed(3)} (${p.lossMin.toFixed(3)}–${p.lossMax.toFixed(3)}) | ${(100 * p.accuracy).toFixed(1)}% | ${p.rates.join(" / ")} |`,
      );
    }
  }
  lines.push(
    "",
    `| method | rank | ${tasks.map((t) => `${t.name} loss | ${t.name} match`).join(" | ")} |`,
    `| --- | ---: | ${tasks.map(() => "---: | ---:").join(" | ")} |`,
  );
  for (const f of figures) {
    for (const p of f.points)
      lines.push(`| ${f.family.label} | ${p.rank} | ${p.perTask.map((t) => `${t.loss.toFixed(3)} | ${(100 * t.accuracy).toFixed(1)}%`).join(" | ")} |`);
  }
  lines.push("", `| examples | epochs | batch | steps | validation loss (mean of ${plan.tasks} tasks) |`, "| ---: | ---: | ---: | ---: | ---: |");
  for (const s of schedules) lines.push(`| ${s.examples} | ${s.epochs} | ${s.batchSize} | ${s.steps} | ${s.score.toFixed(3)} |`);
  console.log(lines.join("\n"));
}
