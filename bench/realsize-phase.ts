/**
 * One phase of the real-size bench (bench/realsize.ts), run in a process of its own so its memory
 * figures are its own: `serve`, `load`, `basis` or `train`. Prints progress on stderr and one JSON
 * object as its last stdout line.
 */
import { readFileSync } from "node:fs";
import { LlamaEngine } from "../gpu-runner/engine/llama-engine.ts";
import type { SequenceBatch } from "../gpu-runner/engine/sequence-batch.ts";
import type { GenerationEvent } from "../gpu-runner/generate/generate.ts";
import { loadCheckpoint, type Checkpoint } from "../gpu-runner/model/checkpoint.ts";
import { openOrWriteWeightFile, weightCacheDirectory, type WeightFile } from "../gpu-runner/model/weight-file.ts";
import { loadOrComputeBasis } from "../gpu-runner/pica/basis.ts";
import { Scheduler } from "../gpu-runner/server/scheduler.ts";
import { fineTune } from "../gpu-runner/training/trainer.ts";
import { median, percentile, progress } from "./stats.ts";

const ROUNDS = 10;
const STEPS_PER_SAMPLE = 3;
const WARM_UP_ROUNDS = 2; // the first steps after a start also pay for pages the kernel is still writing back

/** Resident and peak resident memory of this process, in MiB. */
function memory(): { rss_mb: number; peak_rss_mb: number } {
  const status = readFileSync("/proc/self/status", "utf8");
  const field = (name: string) => Number(new RegExp(`${name}:\\s+(\\d+)`).exec(status)![1]) / 1024;
  return { rss_mb: field("VmRSS"), peak_rss_mb: field("VmHWM") };
}

/** The checkpoint (lazily loaded), its weight file and its serving engine, as the runner starts them. */
async function start(
  directory: string,
  cacheRoot: string,
): Promise<{ checkpoint: Checkpoint; file: WeightFile; engine: LlamaEngine; load_seconds: number; weight_file_seconds: number }> {
  const started = performance.now();
  const checkpoint = await loadCheckpoint(directory, { lazy: true });
  const { config, weights } = checkpoint;
  const fileStarted = performance.now();
  const { file } = await openOrWriteWeightFile(await weightCacheDirectory(cacheRoot, directory, config), config, weights);
  const weightFileSeconds = (performance.now() - fileStarted) / 1000;
  const engine = await LlamaEngine.create(config, weights, { weightFile: file, adapters: { basis: null, rank: 16 } });
  return { checkpoint, file, engine, load_seconds: (performance.now() - started) / 1000, weight_file_seconds: weightFileSeconds };
}

/** Decode tokens/s at batch 1 and 16 and 64 and 1,024 cached tokens, interleaved, medians. */
async function decodeThroughput(engine: LlamaEngine): Promise<Record<string, number>> {
  const batchAt = (rows: number, context: number): SequenceBatch => {
    const batch = engine.createBatch(rows, { initialCapacity: context + 64 });
    for (let r = 0; r < rows; r++) batch.addRow();
    // Filled without computing: a decode step costs the same whatever the cached values are.
    batch.cache.reserve(new Array(rows).fill(context));
    batch.cache.advance(0, new Array(rows).fill(context));
    return batch;
  };
  const settings = [
    { name: "decode_tok_s_b1", rows: 1, context: 64 },
    { name: "decode_tok_s_b16", rows: 16, context: 64 },
    { name: "decode_tok_s_b16_ctx1024", rows: 16, context: 1024 },
  ];
  const batches = settings.map((s) => batchAt(s.rows, s.context));
  const samples: number[][] = settings.map(() => []);
  for (let round = 0; round < ROUNDS + WARM_UP_ROUNDS; round++) {
    for (let i = 0; i < settings.length; i++) {
      const tokens = Array.from({ length: settings[i].rows }, (_, r) => [100 + r + round]);
      const started = performance.now();
      for (let step = 0; step < STEPS_PER_SAMPLE; step++) await engine.step(batches[i], tokens);
      if (round >= WARM_UP_ROUNDS) samples[i].push((settings[i].rows * STEPS_PER_SAMPLE * 1000) / (performance.now() - started));
    }
    progress(
      `  decode round ${round}: ${settings.map((s, i) => `${s.name} ${round >= WARM_UP_ROUNDS ? samples[i].at(-1)!.toFixed(1) : "(warm-up)"}`).join(", ")}`,
    );
  }
  // The context ratio as the median of each round's ratio: the two settings ran back to back, so
  // whatever else the machine was doing weighed on both.
  const ratio = median(samples[2].map((long, round) => long / samples[1][round]));
  return { ...Object.fromEntries(settings.map((s, i) => [s.name, median(samples[i])])), ctx1024_over_ctx64_b16: ratio };
}

/** Resident memory while serving 16 rows at 64 tokens of context, and the KV cache's share of it. */
async function servingMemory(engine: LlamaEngine): Promise<Record<string, number>> {
  const batch = engine.createBatch(16, { initialCapacity: 128 });
  for (let r = 0; r < 16; r++) batch.addRow();
  batch.cache.reserve(new Array(16).fill(64));
  batch.cache.advance(0, new Array(16).fill(64));
  for (let step = 0; step < 3; step++)
    await engine.step(
      batch,
      Array.from({ length: 16 }, (_, r) => [200 + r]),
    );
  const { rss_mb } = memory();
  return { rss_mb, kv_cache_mb: batch.cache.bytes / 2 ** 20 };
}

/**
 * Eight rows decode; the gaps between their tokens are measured for a while, then while a
 * 2,000-token prompt is admitted (read in adaptive chunks beside them), until its first token.
 */
async function chunkedPrefill(engine: LlamaEngine, checkpoint: Checkpoint): Promise<Record<string, number>> {
  const { tokenizer } = checkpoint;
  const scheduler = new Scheduler(engine, tokenizer, { maxBatch: 16, maxQueue: 32, adaptivePrefill: true });
  const controller = new AbortController();
  const gaps: { at: number; gap: number }[] = [];
  const rows = Array.from({ length: 8 }, (_, i) =>
    (async () => {
      let last: number | null = null;
      const stream = scheduler.submit({
        promptIds: tokenizer.encode(`Row ${i} writes a long story about the sea.`),
        adapterId: null,
        options: { maxNewTokens: 100_000, temperature: 0, eosTokenIds: [] },
        signal: controller.signal,
      });
      try {
        for await (const event of stream) {
          if (event.type !== "token") continue;
          const now = performance.now();
          if (last !== null) gaps.push({ at: now, gap: now - last });
          last = now;
        }
      } catch {
        // aborted at the end
      }
    })(),
  );
  const waitFor = async (condition: () => boolean) => {
    while (!condition()) await new Promise((resolve) => setTimeout(resolve, 20));
  };
  await waitFor(() => gaps.length >= 8 * 4); // every row decoding
  const baselineFrom = performance.now();
  await waitFor(() => gaps.filter((g) => g.at > baselineFrom).length >= 8 * 20);
  const promptFrom = performance.now();
  const text = "The sea was calm and the ship sailed on through the long grey night. ".repeat(200);
  const prompt = tokenizer.encode(text).slice(0, 2000);
  let firstToken = 0;
  for await (const event of scheduler.submit({
    promptIds: prompt,
    adapterId: null,
    options: { maxNewTokens: 1, temperature: 0, eosTokenIds: [] },
  }) as AsyncIterable<GenerationEvent>) {
    if (event.type === "token") firstToken = performance.now();
  }
  controller.abort();
  await Promise.all(rows);
  await scheduler.close();
  const without = gaps.filter((g) => g.at > baselineFrom && g.at <= promptFrom).map((g) => g.gap);
  const during = gaps.filter((g) => g.at > promptFrom && g.at <= firstToken).map((g) => g.gap);
  progress(
    `  decode gaps: ${without.length} without the prompt (p99 ${percentile(without, 99).toFixed(0)} ms), ${during.length} while it was read (p99 ${percentile(during, 99).toFixed(0)} ms)`,
  );
  return { p99_ms_without: percentile(without, 99), p99_ms_with: percentile(during, 99), prompt_ttft_seconds: (firstToken - promptFrom) / 1000 };
}

async function main(): Promise<Record<string, number>> {
  const [name, directory, second, third] = process.argv.slice(2);
  switch (name) {
    case "serve": {
      const { checkpoint, file, engine, load_seconds, weight_file_seconds } = await start(directory, second);
      progress(`  serving after ${load_seconds.toFixed(1)} s (weight file ${weight_file_seconds.toFixed(1)} s)`);
      const serving = await servingMemory(engine);
      const decode = await decodeThroughput(engine);
      const rssWithContexts = memory().rss_mb;
      const prefill = await chunkedPrefill(engine, checkpoint);
      return {
        load_seconds,
        weight_file_seconds,
        weight_mb: file.bytes / 2 ** 20,
        ...serving,
        rss_mb_with_ctx1024: rssWithContexts,
        peak_rss_mb: memory().peak_rss_mb,
        ...decode,
        ...prefill,
      };
    }
    case "load": {
      const { load_seconds, file } = await start(directory, second);
      return { load_seconds, weight_mb: file.bytes / 2 ** 20, ...memory() };
    }
    case "basis": {
      const { config, weights } = await loadCheckpoint(directory, { lazy: true });
      const { seconds } = await loadOrComputeBasis(directory, config, weights, { rMax: Number(second) }, (done, total) => {
        if (done % 16 === 0 || done === total) progress(`  basis ${done}/${total}`);
      });
      return { seconds, ...memory() };
    }
    case "train": {
      const { checkpoint, file, engine } = await start(directory, second);
      const { config, weights, tokenizer } = checkpoint;
      const { basis } = await loadOrComputeBasis(directory, config, weights, { rMax: Number(third), baseFingerprint: file.fingerprint });
      await engine.setBasis(basis);
      const examples = Array.from({ length: 12 }, (_, i) =>
        JSON.stringify({
          messages: [
            { role: "user", content: `Question ${i}: what is ${i} plus ${i}?` },
            { role: "assistant", content: `It is ${2 * i}.` },
          ],
        }),
      ).join("\n");
      let stepStarted = performance.now();
      const stepSeconds: number[] = [];
      let sessionSeconds = 0;
      let trainingRss = 0;
      const started = performance.now();
      await fineTune(
        { config, weights, tokenizer, basis, weightFile: file },
        {
          training: examples,
          validationFraction: 0.01,
          hyperparameters: { n_epochs: 1, batch_size: 8, rank: 16 },
          onEvent(event) {
            if (event.type === "started") {
              sessionSeconds = (performance.now() - started) / 1000;
              stepStarted = performance.now();
            }
            if (event.type === "step") {
              trainingRss = Math.max(trainingRss, memory().rss_mb);
              stepSeconds.push((performance.now() - stepStarted) / 1000);
              stepStarted = performance.now();
              progress(`  step ${event.step}/${event.totalSteps}: loss ${event.loss.toFixed(3)}`);
            }
          },
        },
      );
      const { peak_rss_mb } = memory();
      await engine.dispose();
      return { step_seconds: median(stepSeconds), session_seconds: sessionSeconds, weight_mb: file.bytes / 2 ** 20, rss_mb: trainingRss, peak_rss_mb };
    }
    default:
      throw new Error(`unknown phase ${name}`);
  }
}

const result = await main();
console.log(JSON.stringify(result));
process.exit(0);
