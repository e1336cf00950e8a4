import { mkdtemp, readdir, rm, stat, utimes } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LlamaEngine } from "../engine/llama-engine.ts";
import { computeBasis } from "../pica/basis.ts";
import { maxAbsDiff, syntheticTokens } from "../testing/numeric.ts";
import { tinyModel, writeTinyCheckpoint } from "../testing/tiny-checkpoints.ts";
import { TrainingSession, type TrainingBatch } from "../training/training-session.ts";
import { modelFingerprint } from "../pica/fingerprint.ts";
import { openOrWriteWeightFile, openWeightFile, weightCacheDirectory, writeWeightFile, type WeightFile } from "./weight-file.ts";

const batch: TrainingBatch = {
  rows: 2,
  length: 6,
  inputIds: [5, 9, 200, 31, 7, 64, 12, 44, 90, 3, 0, 0],
  labels: [9, 200, 31, 7, 64, 1, 44, 90, 3, 8, 0, 0],
  lossWeights: [0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0],
  lengths: [6, 4],
};

describe("weight file", () => {
  const { config, weights } = tinyModel("qwen2-window-layers");
  let directory: string;
  let file: WeightFile;
  beforeAll(async () => {
    directory = await mkdtemp(join(tmpdir(), "pica-weights-"));
    file = await writeWeightFile(directory, config, weights);
  });
  afterAll(() => rm(directory, { recursive: true, force: true }));

  it("holds every frozen tensor once, 4 KiB-aligned, with the model's fingerprint", () => {
    const weightBytes = [...weights.entries()]
      .filter(([name]) => name !== "lm_head.weight" || !config.tieWordEmbeddings)
      .reduce((sum, [, t]) => sum + t.data.byteLength, 0);
    let stored = 0;
    for (const entry of file.tensors.values()) {
      expect(entry.offset % 4096).toBe(0);
      stored += entry.length;
    }
    expect(stored).toBe(weightBytes); // the same numbers, stacked per group: nothing twice, nothing missing
    expect(file.tensors.has("/model/layers.1/attn/qkv_proj/weight_t")).toBe(true);
    expect(file.fingerprint).toBe(modelFingerprint(config, weights));
  });

  it("serves the same logits as inline weights, and the graph file it loads carries none of them", async () => {
    const inline = await LlamaEngine.create(config, weights);
    const external = await LlamaEngine.create(config, weights, { weightFile: file });
    const ids = syntheticTokens(11, 2);
    const logits = async (engine: LlamaEngine) => {
      const rows = engine.createBatch(1);
      rows.addRow();
      return (await engine.step(rows, [ids], "all"))[0].data;
    };
    expect(maxAbsDiff(await logits(inline), await logits(external))).toBe(0);
    await inline.dispose();
    await external.dispose();
    // The serving graph was written beside the data file and removed once loaded.
    expect((await readdir(directory)).sort()).toEqual(["weights.data", "weights.json"]);
  });

  it("trains through references into the same file: loss and gradients equal the inline training graph's", async () => {
    const basis = await computeBasis(config, weights, { rMax: 4 });
    const method = { kind: "pica", basis, rank: 3, sharing: "shared" } as const;
    const inline = await TrainingSession.create(config, weights, method);
    const external = await TrainingSession.create(config, weights, method, { weightFile: file });
    const values = new Map(inline.parameters.map((p, i) => [p.name, Float32Array.from(p.initial, (_, j) => 0.01 * Math.sin(i + j))]));
    const [a, b] = [await inline.step(batch, values), await external.step(batch, values)];
    expect(b.loss).toBe(a.loss);
    for (const [name, gradient] of a.gradients) expect(maxAbsDiff(gradient, b.gradients.get(name)!)).toBe(0);
    expect(Math.max(...[...a.gradients.values()].map((g) => Math.max(...g.map(Math.abs))))).toBeGreaterThan(0);
    await inline.dispose();
    await external.dispose();
  });

  it("refuses full training through a weight file (every weight would be trainable)", async () => {
    await expect(TrainingSession.create(config, weights, { kind: "full" }, { weightFile: file })).rejects.toThrow(/full training/);
  });

  it("is reopened rather than rewritten, and a truncated data file is not trusted", async () => {
    const again = await openOrWriteWeightFile(directory, config, weights);
    expect(again.written).toBe(false);
    expect([...again.file.tensors.keys()]).toEqual([...file.tensors.keys()]);
    const other = await mkdtemp(join(tmpdir(), "pica-weights-"));
    try {
      await writeWeightFile(other, config, weights);
      const { truncate } = await import("node:fs/promises");
      await truncate(join(other, "weights.data"), 100);
      expect(await openWeightFile(other)).toBeNull();
      expect((await openOrWriteWeightFile(other, config, weights)).written).toBe(true);
      expect((await stat(join(other, "weights.data"))).size).toBe(file.bytes);
    } finally {
      await rm(other, { recursive: true, force: true });
    }
  });

  it("is written by runners starting together into one directory: each gets a complete file, and their engines load side by side", async () => {
    const shared = await mkdtemp(join(tmpdir(), "pica-weights-"));
    try {
      const writers = await Promise.all([1, 2, 3].map(() => openOrWriteWeightFile(shared, config, weights)));
      expect(writers.every((w) => w.written)).toBe(true); // all found it empty
      expect((await readdir(shared)).sort()).toEqual(["weights.data", "weights.json"]);
      const opened = await openWeightFile(shared);
      expect(opened?.fingerprint).toBe(file.fingerprint);
      expect(opened?.bytes).toBe(file.bytes);
      const engines = await Promise.all(writers.map((w) => LlamaEngine.create(config, weights, { weightFile: w.file })));
      const ids = syntheticTokens(7, 3);
      const logits = await Promise.all(
        engines.map(async (engine) => {
          const rows = engine.createBatch(1);
          rows.addRow();
          return (await engine.step(rows, [ids], "last"))[0].data;
        }),
      );
      expect(maxAbsDiff(logits[0], logits[1])).toBe(0);
      expect(maxAbsDiff(logits[0], logits[2])).toBe(0);
      await Promise.all(engines.map((engine) => engine.dispose()));
      expect((await readdir(shared)).sort()).toEqual(["weights.data", "weights.json"]);
    } finally {
      await rm(shared, { recursive: true, force: true });
    }
  });

  it("is cached per checkpoint: a changed weights file gets another cache directory", async () => {
    const checkpoint = await mkdtemp(join(tmpdir(), "pica-checkpoint-"));
    try {
      await writeTinyCheckpoint(checkpoint, "llama-gqa");
      const root = "/cache";
      const first = await weightCacheDirectory(root, checkpoint, config);
      expect(await weightCacheDirectory(root, checkpoint, config)).toBe(first);
      await utimes(join(checkpoint, "model.safetensors"), new Date(), new Date(Date.now() + 5000));
      expect(await weightCacheDirectory(root, checkpoint, config)).not.toBe(first);
      expect(first.startsWith("/cache/")).toBe(true);
    } finally {
      await rm(checkpoint, { recursive: true, force: true });
    }
  });
});
