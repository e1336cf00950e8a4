/**
 * A job's target modules and rank on the runner: a job trains only the modules it names (the
 * adapter holds no M for the others) and the result serves exactly as its merged weights; the job
 * manager refuses, before anything is stored, a rank above what the model and basis allow
 * (src/protocol/adapter-rank.ts, the edge's own rule) and modules the basis does not cover; a
 * checkpoint resumes only a run on the same modules.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { trainingJobRequestSchema } from "../../src/protocol/runner.ts";
import { LlamaEngine } from "../engine/llama-engine.ts";
import { CallbackClient } from "../jobs/callbacks.ts";
import { JobManager, JobRequestError } from "../jobs/job-manager.ts";
import { referenceForward } from "../model/reference.ts";
import { linearShapes, type LinearModule } from "../model/weights.ts";
import { computeBasis } from "../pica/basis.ts";
import { mergeIntoWeights } from "../pica/merge-weights.ts";
import { maxAbsDiff } from "../testing/numeric.ts";
import { tinyModel } from "../testing/tiny-checkpoints.ts";
import { makeByteLevelTokenizerFiles } from "../tokenizer/byte-level.ts";
import { TextTokenizer } from "../tokenizer/tokenizer.ts";
import type { TrainerCheckpoint } from "./checkpoint.ts";
import { HyperparameterError } from "./optimizer.ts";
import { fineTune, type TrainerModel } from "./trainer.ts";

const files = makeByteLevelTokenizerFiles();
const tokenizer = TextTokenizer.fromJson(files.tokenizerJson, files.tokenizerConfig);
const WORDS = ["red", "blue", "green", "gold", "grey", "pink", "teal", "navy"];
const jsonl = (count: number) =>
  Array.from({ length: count }, (_, i) =>
    JSON.stringify({
      messages: [
        { role: "user", content: `shout ${WORDS[i % WORDS.length]}` },
        { role: "assistant", content: WORDS[i % WORDS.length].toUpperCase() },
      ],
    }),
  ).join("\n");

const PAPER_MODULES: LinearModule[] = ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"];

describe("target modules of a fine-tuning job", () => {
  let model: TrainerModel;
  beforeAll(async () => {
    const { config, weights } = tinyModel("llama-gqa");
    model = { config, weights, tokenizer, basis: await computeBasis(config, weights, { rMax: 8 }) };
  });

  it("trains only the named modules, and the adapter serves exactly as its merged weights", async () => {
    const checkpoints: TrainerCheckpoint[] = [];
    const result = await fineTune(model, {
      training: jsonl(16),
      seed: 2,
      checkpointEvery: 2,
      // Out of order on purpose: the adapter lists them in the canonical order.
      hyperparameters: {
        n_epochs: 1,
        batch_size: 4,
        learning_rate_multiplier: 0.5,
        rank: 6,
        target_modules: ["down_proj", "v_proj", "q_proj", "k_proj", "up_proj"],
      },
      onEvent: (event) => {
        if (event.type === "checkpoint") checkpoints.push(event.checkpoint);
      },
    });
    const adapter = result.adapter!;
    expect(adapter.targetModules).toEqual(PAPER_MODULES);
    expect(adapter.rank).toBe(6);
    expect([...adapter.m.keys()].sort()).toEqual([...PAPER_MODULES].sort());
    for (const module of PAPER_MODULES)
      expect(maxAbsDiff(adapter.m.get(module)!.data, new Float32Array(adapter.m.get(module)!.data.length))).toBeGreaterThan(0);
    expect([...result.parameters.keys()].some((name) => name.includes("o_proj") || name.includes("gate_proj"))).toBe(false);
    expect(checkpoints[0].targetModules).toEqual(PAPER_MODULES);

    const engine = await LlamaEngine.create(model.config, model.weights, { adapters: { basis: model.basis } });
    try {
      engine.registerAdapter("paper", adapter);
      const ids = tokenizer.encode("shout teal");
      const batch = engine.createBatch(2);
      batch.addRow("paper");
      batch.addRow(null);
      const [served, base] = await engine.step(batch, [ids, ids]);
      const merged = referenceForward(model.config, mergeIntoWeights(model.config, model.weights, model.basis, adapter), ids).at(-1)!;
      expect(maxAbsDiff(served.data, merged)).toBeLessThanOrEqual(1e-4);
      expect(maxAbsDiff(served.data, base.data)).toBeGreaterThan(1e-3);
    } finally {
      await engine.dispose();
    }
  });

  it("refuses modules outside the basis and a rank above the ceiling; resumes only a run on the same modules", async () => {
    const narrow = { ...model, basis: await computeBasis(model.config, model.weights, { rMax: 4, targetModules: ["q_proj", "v_proj"] }) };
    await expect(fineTune(narrow, { training: jsonl(8), hyperparameters: { rank: 2, target_modules: ["k_proj"] } })).rejects.toThrow(
      /target module "k_proj" is not covered by the basis \(q_proj, v_proj\)/,
    );
    await expect(fineTune(narrow, { training: jsonl(8), hyperparameters: { rank: 5 } })).rejects.toThrow(HyperparameterError);

    const run = {
      training: jsonl(8),
      seed: 1,
      checkpointEvery: 1,
      hyperparameters: { n_epochs: 1, batch_size: 4, rank: 2, target_modules: ["q_proj"] as LinearModule[] },
    };
    let checkpoint: TrainerCheckpoint | null = null;
    await fineTune(model, {
      ...run,
      onEvent: (event) => {
        if (event.type === "checkpoint" && checkpoint === null) checkpoint = event.checkpoint;
      },
    });
    await expect(fineTune(model, { ...run, hyperparameters: { ...run.hyperparameters, target_modules: ["v_proj"] }, resume: checkpoint! })).rejects.toThrow(
      /checkpoint belongs to another run/,
    );
    const resumed = await fineTune(model, { ...run, resume: checkpoint! });
    expect(resumed.adapter!.targetModules).toEqual(["q_proj"]);
  });

  describe("the job manager", () => {
    let directory: string;
    let jobs: JobManager;
    beforeAll(async () => {
      directory = await mkdtemp(join(tmpdir(), "pica-target-modules-"));
      jobs = new JobManager({
        model,
        directory,
        rankLimits: { linearShapes: linearShapes(model.config), basisRows: 8 },
        basisModules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj"],
        callbacks: new CallbackClient({ secret: "runner-secret", backoffMs: 5 }),
        data: { secret: "runner-secret", trustedOrigins: [], maxBytes: 2 ** 20 },
      });
    });
    afterAll(async () => {
      await jobs.shutdown();
      await rm(directory, { recursive: true, force: true });
    });
    const request = (id: string, hyperparameters: Record<string, unknown>) =>
      trainingJobRequestSchema.parse({ id, training_file: { content: jsonl(8) }, hyperparameters: { n_epochs: 1, ...hyperparameters } });

    it("refuses a rank above the basis's rows and modules the basis lacks, naming the field, before storing anything", async () => {
      const rank = await jobs.submit(request("too-wide", { rank: 9 })).catch((error: unknown) => error);
      expect(rank).toBeInstanceOf(JobRequestError);
      expect((rank as JobRequestError).param).toBe("hyperparameters.rank");
      expect((rank as Error).message).toBe(
        "hyperparameters.rank 9 is above 8, the largest rank this runner allows for these target modules (the rows of the runner's PiCa basis, 8)",
      );
      const modules = await jobs.submit(request("no-down", { rank: 2, target_modules: ["q_proj", "down_proj"] })).catch((error: unknown) => error);
      expect((modules as JobRequestError).param).toBe("hyperparameters.target_modules");
      expect((modules as Error).message).toMatch(/names down_proj, which this runner's basis does not cover/);
      expect(jobs.list()).toEqual([]);
      expect((await jobs.submit(request("at-ceiling", { rank: 8, target_modules: ["q_proj"] }))).status).toBe("queued");
      await jobs.cancel("at-ceiling");
    });
  });
});
