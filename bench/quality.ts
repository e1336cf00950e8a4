/**
 * Fine-tuning quality bench: the shipped base model fine-tuned on three small generated tasks
 * (bench/quality-tasks.ts: format, recall, classify) by each adapter method, then scored on each
 * task's held-out evaluation set, which training never sees:
 *   eval loss   — mean cross-entropy per trained token (answer + end of turn) after the last
 *                 epoch, as the trainer computes it (its per-epoch evaluation only reports; nothing
 *                 is chosen from it: no early stopping, no best-epoch pick);
 *   exact match — greedy generation (temperature 0) from the ChatML prompt; the trimmed text must
 *                 equal the expected answer.
 * Rows: the base model (no training), PiCa shared r=8 and r=32, PiCa per-layer r=8, LoRA r=1 and
 * r=8 (all seven modules, alpha = rank). Every row trains with the same data order, epochs and
 * batch size at its method's base learning rate (multiplier 1: PiCa 1e-3, LoRA 2e-4). One control
 * row, LoRA r=8 at multiplier 5 (peak 1e-3, PiCa's rate), is there because LoRA's TRAINING loss
 * stays far above PiCa's in this short run at 2e-4: it tells an under-trained LoRA from a weaker
 * one. The headline figures (`lora_*`) are the multiplier-1 row; the control is reported apart.
 *
 * PiCa adapters are served by one engine with adapter support (rank 32; rank-8 adapters are padded),
 * as in production. LoRA has no serving path, so each trained LoRA is merged into a copy of the
 * weights (W += scale · (Aᵀ Bᵀ)ᵀ) for a plain engine; the merged model's eval loss is checked
 * against the trainer's so a wrong merge cannot pass for a weak adapter.
 *
 *   npm run bench -- quality [--model DIR] [--epochs N] [--train N] [--eval N]
 *
 * The flags exist for smoke runs on other checkpoints; the reported figures use the defaults.
 */
import { parseArgs } from "node:util";
import { LlamaEngine } from "../gpu-runner/engine/llama-engine.ts";
import { loadCheckpoint } from "../gpu-runner/model/checkpoint.ts";
import { SHIPPED_MODEL_DIRECTORY as SHIPPED_MODEL } from "../gpu-runner/model/shipped-model.ts";
import { loadOrComputeBasis } from "../gpu-runner/pica/basis.ts";
import { fineTune, type FineTuneHyperparameters } from "../gpu-runner/training/trainer.ts";
import { evaluationLoss, exactMatch, MAX_LENGTH, mean, scoreAdapter, tokenizeTask, type BenchModel } from "./fine-tune-scoring.ts";
import { qualityTasks, toChatJsonl, type QualityTask } from "./quality-tasks.ts";
import { progress, round } from "./stats.ts";

const R_MAX = 32;
const EPOCHS = 8;
const BATCH_SIZE = 16;
const TRAIN_EXAMPLES = 240;
const EVAL_EXAMPLES = 80;
const SEED = 1;

interface MethodSpec {
  label: string;
  key: string; // for the JSON
  method: "pica" | "lora";
  rank: number;
  sharing: boolean;
  learningRateMultiplier: number;
}

const METHODS: MethodSpec[] = [
  { label: "PiCa shared r=8", key: "pica_shared_r8", method: "pica", rank: 8, sharing: true, learningRateMultiplier: 1 },
  { label: "PiCa shared r=32", key: "pica_shared_r32", method: "pica", rank: 32, sharing: true, learningRateMultiplier: 1 },
  { label: "PiCa per-layer r=8", key: "pica_per_layer_r8", method: "pica", rank: 8, sharing: false, learningRateMultiplier: 1 },
  { label: "LoRA r=1", key: "lora_r1", method: "lora", rank: 1, sharing: false, learningRateMultiplier: 1 },
  { label: "LoRA r=8", key: "lora_r8", method: "lora", rank: 8, sharing: false, learningRateMultiplier: 1 },
  { label: "LoRA r=8, lr ×5 (control)", key: "lora_r8_lr5x", method: "lora", rank: 8, sharing: false, learningRateMultiplier: 5 },
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
  tasks: Map<string, TaskScore>;
}

/** The markdown tables: one line per method with means over tasks, then the per-task figures. */
function tables(rows: Row[], tasks: QualityTask[]): string {
  const number = (value: number, digits: number) => value.toFixed(digits);
  const sum = (row: Row, pick: (s: TaskScore) => number) => [...row.tasks.values()].reduce((s, t) => s + pick(t), 0);
  const lines = [
    "| method | trainable params | eval loss (mean) | exact match (mean) | final train loss (mean) | train s | score s |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
  ];
  for (const row of rows) {
    const scores = [...row.tasks.values()];
    const trainLoss = scores[0]!.trainLoss === null ? "—" : number(mean(scores.map((s) => s.trainLoss!)), 3);
    lines.push(
      `| ${row.label} | ${row.parameters.toLocaleString("en-US")} | ${number(mean(scores.map((s) => s.evalLoss)), 3)} | ${number(100 * mean(scores.map((s) => s.accuracy)), 1)}% | ${trainLoss} | ${number(
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
    options: { model: { type: "string" }, epochs: { type: "string" }, train: { type: "string" }, eval: { type: "string" } },
  });
  const directory = flags.model ?? SHIPPED_MODEL;
  const epochs = Number(flags.epochs ?? EPOCHS);
  const sizes = { train: Number(flags.train ?? TRAIN_EXAMPLES), eval: Number(flags.eval ?? EVAL_EXAMPLES) };
  const started = performance.now();

  progress(`loading ${directory}…`);
  const { config, weights, tokenizer } = await loadCheckpoint(directory);
  const { basis, computed, seconds } = await loadOrComputeBasis(directory, config, weights, { rMax: R_MAX });
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
    const base: Row = { label: "base model (no training)", key: "base", parameters: 0, tasks: new Map() };
    for (const task of tasks) {
      const evalLoss = await evaluationLoss(config, weights, basis, tokenized.get(task.name)!);
      const generationStarted = performance.now();
      const { accuracy, samples } = await exactMatch(picaEngine, tokenizer, task.eval, null);
      base.tasks.set(task.name, { evalLoss, accuracy, trainLoss: null, trainSeconds: 0, evalSeconds: (performance.now() - generationStarted) / 1000 });
      progress(`base on ${task.name}: eval loss ${evalLoss.toFixed(3)}, exact match ${(100 * accuracy).toFixed(1)}%\n  ${samples.join("\n  ")}`);
    }
    rows.push(base);

    for (const spec of METHODS) {
      const row: Row = { label: spec.label, key: spec.key, parameters: 0, tasks: new Map() };
      for (const task of tasks) {
        const hyperparameters: FineTuneHyperparameters = {
          n_epochs: epochs,
          batch_size: BATCH_SIZE,
          learning_rate_multiplier: spec.learningRateMultiplier,
          rank: spec.rank,
          weight_sharing: spec.sharing,
        };
        let trainLoss = Number.NaN;
        let tokensPerSecond = 0;
        const trainingStarted = performance.now();
        const result = await fineTune(
          { config, weights, tokenizer, basis },
          {
            training: toChatJsonl(task.train),
            validation: toChatJsonl(task.eval),
            method: spec.method,
            hyperparameters,
            seed: SEED,
            maxLength: MAX_LENGTH,
            onEvent: (event) => {
              if (event.type === "step") tokensPerSecond = event.tokensPerSecond;
              if (event.type !== "epoch") return;
              trainLoss = event.trainLoss;
              progress(
                `  ${spec.label} ${task.name} epoch ${event.epoch + 1}/${epochs}: train loss ${event.trainLoss.toFixed(3)}, eval loss ${event.validationLoss!.toFixed(3)} (${tokensPerSecond.toFixed(0)} padded tok/s)`,
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
            ? { id: `${spec.key}-${task.name}`, method: "pica", rank: spec.rank, adapter: result.adapter!, trainerEvalLoss: evalLoss }
            : { id: `${spec.key}-${task.name}`, method: "lora", rank: spec.rank, parameters: result.parameters, trainerEvalLoss: evalLoss },
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
  const pica = byKey.get("pica_shared_r8")!;
  const lora = byKey.get("lora_r8")!;
  const picaLoss = meanOf(pica.key, (s) => s.evalLoss);
  const loraLoss = meanOf(lora.key, (s) => s.evalLoss);
  return {
    config: `${directory}; tasks ${tasks.map((t) => t.name).join(", ")}; ${sizes.train} train / ${sizes.eval} eval examples per task (recall at most 240 / 80); ${epochs} epochs, batch ${BATCH_SIZE}, lr multiplier 1 (PiCa 1e-3, LoRA 2e-4; control row LoRA r=8 ×5), seed ${SEED}; greedy exact match`,
    pica_shared_eval_loss: round(picaLoss),
    lora_eval_loss: round(loraLoss),
    pica_shared_minus_lora_eval_loss: round(picaLoss - loraLoss),
    lora_params_over_pica_params: round(lora.parameters / pica.parameters),
    pica_shared_accuracy: round(meanOf(pica.key, (s) => s.accuracy)),
    lora_accuracy: round(meanOf(lora.key, (s) => s.accuracy)),
    lora_lr5x_eval_loss: round(meanOf("lora_r8_lr5x", (s) => s.evalLoss)),
    lora_lr5x_accuracy: round(meanOf("lora_r8_lr5x", (s) => s.accuracy)),
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
