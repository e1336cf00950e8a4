import { mkdir, mkdtemp, open, readFile, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CHECKPOINT_FILE, readSafetensorsHeader, writeSafetensorsFile } from "../checkpoint/safetensors.ts";
import { parseModelConfig } from "../model/config.ts";
import { randomWeights } from "../model/random-weights.ts";
import { makeByteLevelTokenizerFiles } from "../tokenizer/byte-level.ts";
import { tinyConfigJson, tinyModel, writeTinyCheckpoint } from "../testing/tiny-checkpoints.ts";
import { basisFileName, computeBasis, loadOrComputeBasis } from "./basis.ts";
import { loadOrComputeBasisInBackground } from "./basis-worker.ts";
import { modelFingerprint } from "./fingerprint.ts";

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "pica-basis-worker-"));
});
afterAll(() => rm(root, { recursive: true, force: true }));

/** A tiny llama-gqa checkpoint in a fresh directory, and its fingerprint. */
async function tinyCheckpoint(name: string): Promise<{ directory: string; baseFingerprint: string }> {
  const directory = join(root, name);
  await writeTinyCheckpoint(directory, "llama-gqa");
  const { config, weights } = tinyModel("llama-gqa");
  return { directory, baseFingerprint: modelFingerprint(config, weights) };
}

describe("loadOrComputeBasisInBackground", () => {
  it("computes in a worker the basis computeBasis computes, bit for bit, writes the same file, then loads it", async () => {
    const { directory, baseFingerprint } = await tinyCheckpoint("same-basis");
    const progress: [number, number][] = [];
    const first = await loadOrComputeBasisInBackground(directory, { rMax: 8, baseFingerprint }, (done, total) => progress.push([done, total]));
    expect(first.computed).toBe(true);
    expect(first.seconds).toBeGreaterThan(0);
    expect(progress).toEqual(Array.from({ length: 14 }, (_, i) => [i + 1, 14])); // 2 layers × 7 modules, in order

    const { config, weights } = tinyModel("llama-gqa");
    const direct = await computeBasis(config, weights, { rMax: 8 });
    expect(first.basis.id).toBe(direct.id); // a sha256 over every P's float32 bytes
    for (const [key, p] of direct.projections) expect(Buffer.from(first.basis.projections.get(key)!.data.buffer)).toEqual(Buffer.from(p.data.slice().buffer));
    const synchronous = join(root, "same-basis-synchronous");
    await loadOrComputeBasis(synchronous, config, weights, { rMax: 8 });
    expect(await readFile(join(directory, basisFileName(8)))).toEqual(await readFile(join(synchronous, basisFileName(8))));

    const loaded: [number, number][] = [];
    const second = await loadOrComputeBasisInBackground(directory, { rMax: 8, baseFingerprint }, (done, total) => loaded.push([done, total]));
    expect(second.computed).toBe(false);
    expect(second.basis.id).toBe(first.basis.id);
    expect(loaded).toEqual([[14, 14]]);
  });

  it("takes target modules and refuses a stored basis of another base model", async () => {
    const { directory, baseFingerprint } = await tinyCheckpoint("modules");
    const { basis } = await loadOrComputeBasisInBackground(directory, { rMax: 4, targetModules: ["v_proj", "q_proj"], baseFingerprint });
    expect(basis.targetModules).toEqual(["q_proj", "v_proj"]);
    expect([...basis.projections.keys()]).toEqual(["0.q_proj", "0.v_proj", "1.q_proj", "1.v_proj"]);
    await expect(loadOrComputeBasisInBackground(directory, { rMax: 4, targetModules: ["q_proj", "v_proj"], baseFingerprint: "another" })).rejects.toThrow(
      /another base model: its base_fingerprint is [0-9a-f]{64}, this model's is another/,
    );
  });

  it("refuses an rMax above a module's rank limit, naming the module", async () => {
    const { directory, baseFingerprint } = await tinyCheckpoint("rank-limit");
    // k_proj is [32, 64] in llama-gqa.
    await expect(loadOrComputeBasisInBackground(directory, { rMax: 33, baseFingerprint })).rejects.toThrow(
      /rMax 33 exceeds the rank limit of k_proj: its weight is \[32, 64\], so at most min\(out, in\) = 32/,
    );
  });

  it("rejects with the worker's error, naming the layer and module, when a weight is damaged after the header", async () => {
    const { directory, baseFingerprint } = await tinyCheckpoint("damaged");
    const path = join(directory, CHECKPOINT_FILE);
    const header = await readSafetensorsHeader(path);
    const entry = header.entries.find((e) => e.name === "model.layers.1.mlp.up_proj.weight")!;
    const file = await open(path, "r+");
    await file.write(new Uint8Array(new Float32Array([Number.NaN]).buffer), 0, 4, header.dataStart + entry.begin + 4 * 70); // row 1, column 6 of [112, 64]
    await file.close();
    await expect(loadOrComputeBasisInBackground(directory, { rMax: 8, baseFingerprint })).rejects.toThrow(
      /computing the PiCa basis of .*damaged failed: model\.layers\.1\.mlp\.up_proj\.weight: element 70 \(row 1, column 6\) is NaN/,
    );
    await expect(readFile(join(directory, basisFileName(8)))).rejects.toThrow(/ENOENT/); // nothing half-written is left
  });

  it("rejects when the worker cannot read the checkpoint, naming the file", async () => {
    const { directory, baseFingerprint } = await tinyCheckpoint("truncated");
    const path = join(directory, CHECKPOINT_FILE);
    await truncate(path, (await readFile(path)).length - 100);
    await expect(loadOrComputeBasisInBackground(directory, { rMax: 8, baseFingerprint })).rejects.toThrow(
      /computing the PiCa basis of .*truncated failed: .*model\.safetensors/,
    );
  });

  it("keeps the event loop responsive while the worker computes", async () => {
    // A model big enough that the basis takes a few hundred milliseconds of computation.
    const directory = join(root, "responsive");
    const raw = {
      ...tinyConfigJson("llama-gqa"),
      hidden_size: 384,
      intermediate_size: 1024,
      num_hidden_layers: 4,
      num_attention_heads: 6,
      num_key_value_heads: 2,
    };
    const config = parseModelConfig(raw);
    const weights = randomWeights(config, 3);
    await mkdir(directory, { recursive: true });
    const { tokenizerJson, tokenizerConfig } = makeByteLevelTokenizerFiles();
    await writeFile(join(directory, "config.json"), JSON.stringify(raw));
    await writeFile(join(directory, "tokenizer.json"), JSON.stringify(tokenizerJson));
    await writeFile(join(directory, "tokenizer_config.json"), JSON.stringify(tokenizerConfig));
    await writeSafetensorsFile(join(directory, CHECKPOINT_FILE), weights, { format: "pt" });

    let ticks = 0;
    let largestGap = 0;
    let last = performance.now();
    const timer = setInterval(() => {
      const now = performance.now();
      largestGap = Math.max(largestGap, now - last);
      last = now;
      ticks++;
    }, 10);
    const ticksAtProgress: number[] = [];
    const before = performance.eventLoopUtilization();
    let busy: number;
    try {
      const { computed } = await loadOrComputeBasisInBackground(directory, { rMax: 32, baseFingerprint: "responsive" }, () => ticksAtProgress.push(ticks));
      busy = performance.eventLoopUtilization(before).utilization;
      expect(computed).toBe(true);
    } finally {
      clearInterval(timer);
    }
    expect(ticksAtProgress).toHaveLength(28);
    // Between the first and the last P, the timer kept firing: the main thread was free.
    expect(ticksAtProgress[27] - ticksAtProgress[0]).toBeGreaterThanOrEqual(10);
    expect(largestGap).toBeLessThan(250);
    // onnxruntime's runs block the thread that calls them: computed here, this model keeps the
    // event loop ~99% busy (in short slices, so the gaps alone would not tell); in the worker, ~2%.
    expect(busy).toBeLessThan(0.25);
  });
});
