/**
 * Fine-tuning quality bench: the shipped base model fine-tuned on three small generated tasks
 * (bench/quality-tasks.ts: format, recall, classify) by each adapter method, then scored on each
 * task's held-out evaluation set, which training never sees (bench/fine-tune-scoring.ts):
 *   eval loss   — mean cross-entropy per trained token (answer + end of turn) after the last
 *                 epoch, as the trainer computes it (its per-epoch evaluation only reports; nothing
 *                 is chosen from it: no early stopping, no best-epoch pick);
 *   exact match — greedy generation (temperature 0) from the ChatML prompt; the trimmed text must
 *                 equal the expected answer.
 * Rows: the base model (no training); the tuned rows, which use the platform's defaults as a
 * tenant gets them ("auto" everything: rank, epochs, batch size and learning rate, all chosen by
 * `npm run bench -- sweep`), for PiCa and for LoRA r=8 (LoRA's own tuned base rate); and the
 * untuned rows, at fixed settings customary before the sweep (8 epochs, batch 16, PiCa 1e-3,
 * LoRA 2e-4): PiCa shared r=8 and r=32, PiCa per-layer r=8, LoRA r=8. Every row sees the same data
 * in the same order for a given batch size (seed 1).
 *
 * PiCa adapters are served by one engine with adapter support, as in production; each LoRA is
 * merged into a copy of the weights for a plain engine, its merged loss checked against the
 * trainer's.
 *
 *   npm run bench -- quality [--model DIR] [--train N] [--eval N]
 *
 * The flags exist for smoke runs on other checkpoints; the reported figures use the defaults.
 */
import { join } from "node:path";
import { parseArgs } from "node:util";
import { LlamaEngine } from "../gpu-runner/engine/llama-engine.ts";
import { loadCheckpoint } from "../gpu-runner/model/checkpoint.ts";
import { SHIPPED_MODEL_DIRECTORY as SHIPPED_MODEL } from "../gpu-runner/model/shipped-model.ts";
import { loadOrComputeBasis } from "../gpu-runner/pica/basis.ts";
import { fineTune, type FineTuneHyperparameters } from "../gpu-runner/training/trainer.ts";
import { evaluationLoss, exactMatch, MAX_LENGTH, mean, scoreAdapter, tokenizeTask, type BenchModel } from "./fine-tune-scoring.ts";
import { qualityTasks, toChatJsonl, type QualityTask } from "./quality-tasks.ts";
import { progress, round } from "./stats.ts";

const R_MAX = 64; // the basis rows the bench's engine serves (the shipped model's ceiling)
const TRAIN_EXAMPLES = 240;
const EVAL_EXAMPLES = 80;
const SEED = 1;
const UNTUNED = { n_epochs: 8, batch_size: 16 } as const;

interface MethodSpec {
  label: string;
  key: string; // for the JSON
  method: "pica" | "lora";
  hyperparameters: FineTuneHyperparameters;
  peakLearningRate?: number; // the untuned rows' fixed rate; tuned rows take the defaults' rate
}

const METHODS: MethodSpec[] = [
  { label: "PiCa shared, defaults (tuned)", key: "pica_defaults", method: "pica", hyperparameters: {} },
  { label: "LoRA r=8, tuned rate", key: "lora_r8_tuned", method: "lora", hyperparameters: { rank: 8 } },
  { label: "PiCa shared r=8, lr 1e-3 (untuned)", key: "pica_shared_r8", method: "pica", hyperparameters: { ...UNTUNED, rank: 8 }, peakLearningRate: 1e-3 },
  { label: "PiCa shared r=32, lr 1e-3 (untuned)", key: "pica_shared_r32", method: "pica", hyperparameters: { ...UNTUNED, rank: 32 }, peakLearningRate: 1e-3 },
  {
    label: "PiCa per-layer r=8, lr 1e-3 (untuned)",
    key: "pica_per_layer_r8",
    method: "pica",
    hyperparameters: { ...UNTUNED, rank: 8, weight_sharing: false },
    peakLearningRate: 1e-3,
  },
  { label: "LoRA r=8, lr 2e-4 (untuned)", key: "lora_r8", method: "lora", hyperparameters: { ...UNTUNED, rank: 8 }, peakLearningRate: 2e-4 },
];

/** One method's figures on one task. */
interface TaskScore {
  evalLoss: number;
  accuracy: number;
  trainLoss: number | null; // the last epoch's mean training loss; null for the base model
  trainSeconds: number;
  evalSeconds: number; // scoring: generation over the eval set (LoRA: plus the merge, its check and an engine)
}

/** One row of the table: a method over every task. */
interface Row {
  label: string;
  key: string;
  parameters: number;
  settings: string; // the resolved rank, epochs, batch size and rate
  tasks: Map<string, TaskScore>;
}

/** The markdown tables: one line per method with means over tasks, then the per-task figures. */
function tables(rows: Row[], tasks: QualityTask[]): string {
  const number = (value: number, digits: number) => value.toFixed(digits);
  const sum = (row: Row, pick: (s: TaskScore) => number) => [...row.tasks.values()].reduce((s, t) => s + pick(t), 0);
  const lines = [
    "| method | settings | trainable params | eval loss (mean) | exact match (mean) | final train loss (mean) | train s | score s |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
  ];
  for (const row of rows) {
    const scores = [...row.tasks.values()];
    const trainLoss = scores[0]!.trainLoss === null ? "—" : number(mean(scores.map((s) => s.trainLoss!)), 3);
    lines.push(
      `| ${row.label} | ${row.settings} | ${row.parameters.toLocaleString("en-US")} | ${number(mean(scores.map((s) => s.evalLoss)), 3)} | ${number(100 * mean(scores.map((s) => s.accuracy)), 1)}% | ${trainLoss} | ${number(
        sum(row, (s) => s.trainSeconds),
        0,
      )} | ${number(
        sum(row, (s) => s.evalSeconds),
        0,
      )} |`,
    );
  }
  lines.push("", `| method | ${tasks.map((t) => `${t.name} loss | ${t.name} match`).join(" | ")} |`, `| --- | ${tasks.map(() => "---: | ---:").join(" | ")} |`);
  for (const row of rows) {
    lines.push(
      `| ${row.label} | ${tasks.map((t) => `${number(row.tasks.get(t.name)!.evalLoss, 3)} | ${number(100 * row.tasks.get(t.name)!.accuracy, 1)}%`).join(" | ")} |`,
    );
  }
  return lines.join("\n");
}

/** Runs the quality bench and returns its figures. */
export async function runQualityBench(): Promise<Record<string, unknown>> {
  const { values: flags } = parseArgs({
    args: process.argv.slice(3),
    options: { model: { type: "string" }, train: { type: "string" }, eval: { type: "string" } },
  });
  const directory = flags.model ?? SHIPPED_MODEL;
  const sizes = { train: Number(flags.train ?? TRAIN_EXAMPLES), eval: Number(flags.eval ?? EVAL_EXAMPLES) };
  const started = performance.now();

  progress(`loading ${directory}…`);
  const { config, weights, tokenizer } = await loadCheckpoint(directory);
  // Kept in the bench's cache, not beside the model (which ships its serving basis only).
  const { basis, computed, seconds } = await loadOrComputeBasis(join(".cache", "bench"), config, weights, { rMax: R_MAX });
  progress(`basis r${R_MAX} ${computed ? "computed" : "loaded"} in ${seconds.toFixed(1)} s`);
  const tasks = qualityTasks(sizes);
  const tokenized = new Map(tasks.map((task) => [task.name, tokenizeTask(task, task.eval, tokenizer)]));
  for (const task of tasks) {
    tokenizeTask(task, task.train, tokenizer);
    progress(`task ${task.name}: ${task.train.length} train, ${task.eval.length} eval — ${task.description}`);
  }

  // One engine serves the base model (no adapter) and every PiCa adapter, as the runner does.
  const picaEngine = await LlamaEngine.create(config, weights, { adapters: { basis, rank: R_MAX }, allowSpinning: false });
  const model: BenchModel = { config, weights, tokenizer, basis, picaEngine };
  const rows: Row[] = [];
  try {
    const base: Row = { label: "base model (no training)", key: "base", parameters: 0, settings: "—", tasks: new Map() };
    for (const task of tasks) {
      const evalLoss = await evaluationLoss(config, weights, basis, tokenized.get(task.name)!);
      const generationStarted = performance.now();
      const { accuracy, samples } = await exactMatch(picaEngine, tokenizer, task.eval, null);
      base.tasks.set(task.name, { evalLoss, accuracy, trainLoss: null, trainSeconds: 0, evalSeconds: (performance.now() - generationStarted) / 1000 });
      progress(`base on ${task.name}: eval loss ${evalLoss.toFixed(3)}, exact match ${(100 * accuracy).toFixed(1)}%\n  ${samples.join("\n  ")}`);
    }
    rows.push(base);

    for (const spec of METHODS) {
      const row: Row = { label: spec.label, key: spec.key, parameters: 0, settings: "", tasks: new Map() };
      for (const task of tasks) {
        let resolved = "";
        let rank = 0;
        let trainLoss = Number.NaN;
        let tokensPerSecond = 0;
        const trainingStarted = performance.now();
        const result = await fineTune(
          { config, weights, tokenizer, basis },
          {
            training: toChatJsonl(task.train),
            validation: toChatJsonl(task.eval),
            method: spec.method,
            hyperparameters: spec.hyperparameters,
            ...(spec.peakLearningRate === undefined ? {} : { peakLearningRate: spec.peakLearningRate }),
            seed: SEED,
            maxLength: MAX_LENGTH,
            onEvent: (event) => {
              if (event.type === "started") {
                const h = event.hyperparameters;
                rank = h.rank;
                resolved = `r${h.rank}, ${h.nEpochs} epochs, batch ${h.batchSize}, peak lr ${h.learningRate}`;
                row.settings = resolved;
              }
              if (event.type === "step") tokensPerSecond = event.tokensPerSecond;
              if (event.type !== "epoch") return;
              trainLoss = event.trainLoss;
              progress(
                `  ${spec.label} ${task.name} (${resolved}) epoch ${event.epoch + 1}: train loss ${event.trainLoss.toFixed(3)}, eval loss ${event.validationLoss!.toFixed(3)} (${tokensPerSecond.toFixed(0)} padded tok/s)`,
              );
            },
          },
        );
        const trainSeconds = (performance.now() - trainingStarted) / 1000;
        row.parameters = [...result.parameters.values()].reduce((n, p) => n + p.length, 0);
        const evalLoss = result.validationLoss!;

        const generationStarted = performance.now();
        const scored = await scoreAdapter(
          model,
          spec.method === "pica"
            ? { id: `${spec.key}-${task.name}`, method: "pica", rank, adapter: result.adapter!, trainerEvalLoss: evalLoss }
            : { id: `${spec.key}-${task.name}`, method: "lora", rank, parameters: result.parameters, trainerEvalLoss: evalLoss },
          task.eval,
          tokenized.get(task.name)!,
        );
        const evalSeconds = (performance.now() - generationStarted) / 1000;
        row.tasks.set(task.name, { evalLoss, accuracy: scored.accuracy, trainLoss, trainSeconds, evalSeconds });
        progress(
          `${spec.label} on ${task.name}: ${result.steps} steps in ${trainSeconds.toFixed(1)} s, eval loss ${evalLoss.toFixed(3)}, exact match ${(100 * scored.accuracy).toFixed(1)}% (${evalSeconds.toFixed(1)} s)\n  ${scored.samples.join("\n  ")}`,
        );
      }
      rows.push(row);
    }
  } finally {
    await picaEngine.dispose();
  }

  console.log(tables(rows, tasks));
  const byKey = new Map(rows.map((row) => [row.key, row]));
  const meanOf = (key: string, pick: (s: TaskScore) => number) => mean([...byKey.get(key)!.tasks.values()].map(pick));
  const figure = (key: string) => ({
    eval_loss: round(meanOf(key, (s) => s.evalLoss)),
    accuracy: round(meanOf(key, (s) => s.accuracy)),
    trainable_parameters: byKey.get(key)!.parameters,
    settings: byKey.get(key)!.settings,
  });
  return {
    config: `${directory}; tasks ${tasks.map((t) => t.name).join(", ")}; ${sizes.train} train / ${sizes.eval} eval examples per task (recall at most 240 / 80); tuned rows: the platform's defaults; untuned rows: ${UNTUNED.n_epochs} epochs, batch ${UNTUNED.batch_size}, PiCa 1e-3, LoRA 2e-4; seed ${SEED}; greedy exact match`,
    pica_defaults: figure("pica_defaults"),
    lora_r8_tuned: figure("lora_r8_tuned"),
    pica_shared_r8_untuned: figure("pica_shared_r8"),
    lora_r8_untuned: figure("lora_r8"),
    pica_defaults_minus_lora_r8_tuned_eval_loss: round(meanOf("pica_defaults", (s) => s.evalLoss) - meanOf("lora_r8_tuned", (s) => s.evalLoss)),
    base_eval_loss: round(meanOf("base", (s) => s.evalLoss)),
    base_accuracy: round(meanOf("base", (s) => s.accuracy)),
    rows: Object.fromEntries(
      rows.map((row) => [
        row.key,
        {
          trainable_parameters: row.parameters,
          eval_loss: round(meanOf(row.key, (s) => s.evalLoss)),
          accuracy: round(meanOf(row.key, (s) => s.accuracy)),
          train_seconds: round([...row.tasks.values()].reduce((sum, s) => sum + s.trainSeconds, 0)),
          tasks: Object.fromEntries([...row.tasks].map(([name, s]) => [name, { eval_loss: round(s.evalLoss), accuracy: round(s.accuracy) }])),
        },
      ]),
    ),
    total_seconds: round((performance.now() - started) / 1000),
  };
}
