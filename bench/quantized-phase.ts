/**
 * Our side of the quantized bench's engine comparison (bench/quantized.ts), in a process of its
 * own so its memory is its own:
 *
 *   node --import tsx bench/quantized-phase.ts <checkpoint> <cache root> <f32|int8|int4> <decode tokens>
 *
 * Starts as the runner does (the weight file of that precision, written once into the cache root;
 * an engine with adapter support), evaluates the same 16-token prompt as llama.cpp's phase, then
 * decodes greedily one token at a time at batch 1 (a few tokens untimed, as llama.cpp's phase does),
 * timing the decode only. Then, in the same
 * process: decode steps at batch 16, base-only rows interleaved with rows of 16 distinct adapters
 * (rank 16, on a random orthonormal basis: a product costs the same whatever P holds). Progress
 * goes to stderr; the last stdout line is one JSON object:
 *
 *   decode_tok_s          batch 1, greedy, decode only
 *   prefill_tok_s         the prompt and its first token
 *   load_seconds          checkpoint, weight file (already written) and session
 *   rss_mb                resident memory after the batch-1 decode, MiB
 *   decode_tok_s_b16      batch 16, base model (median of rounds)
 *   mixed_adapters_over_base_b16   16 distinct adapters over base-only, per round, median
 */
import { readFileSync } from "node:fs";
import { LlamaEngine } from "../gpu-runner/engine/llama-engine.ts";
import { argmax } from "../gpu-runner/generate/sampler.ts";
import { loadCheckpoint } from "../gpu-runner/model/checkpoint.ts";
import { openOrWriteWeightFile, weightCacheDirectory } from "../gpu-runner/model/weight-file.ts";
import { quantizationOf, WEIGHT_PRECISIONS, type WeightPrecision } from "../gpu-runner/quantize/block-format.ts";
import { orthonormalBasis } from "../gpu-runner/testing/pica-fixtures.ts";
import { randomAdapter } from "../gpu-runner/testing/random-adapters.ts";
import { COMPARISON_PROMPT as PROMPT, WARM_UP_TOKENS } from "./comparison-prompt.ts";
import { median } from "./stats.ts";

const RANK = 16;
const ROWS = 16;
const ROUNDS = 6;
const STEPS_PER_ROUND = 3;

function residentMb(): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync("/proc/self/status", "utf8"))![1]) / 1024;
}

async function main(): Promise<void> {
  const [directory, cacheRoot, precisionText, decodeText] = process.argv.slice(2);
  const precision = precisionText as WeightPrecision;
  if (!WEIGHT_PRECISIONS.includes(precision)) throw new Error(`precision must be one of ${WEIGHT_PRECISIONS.join(", ")}, got ${precisionText}`);
  const decodeTokens = Number(decodeText);
  const quantization = quantizationOf(precision);

  const loadStarted = performance.now();
  const { config, weights } = await loadCheckpoint(directory, { lazy: true });
  const { file } = await openOrWriteWeightFile(await weightCacheDirectory(cacheRoot, directory, config, quantization), config, weights, quantization);
  const basis = orthonormalBasis(config, { rMax: RANK, seed: 1 });
  const engine = await LlamaEngine.create(config, weights, { weightFile: file, adapters: { basis, rank: RANK } });
  const loadSeconds = (performance.now() - loadStarted) / 1000;
  process.stderr.write(`ours (${precision}): loaded in ${loadSeconds.toFixed(2)} s\n`);

  const batch = engine.createBatch(1, { initialCapacity: PROMPT.length + WARM_UP_TOKENS + decodeTokens + 1 });
  batch.addRow(null);
  const prefillStarted = performance.now();
  let [logits] = await engine.step(batch, [[...PROMPT]]);
  const prefillSeconds = (performance.now() - prefillStarted) / 1000;
  for (let i = 0; i < WARM_UP_TOKENS; i++) [logits] = await engine.step(batch, [[argmax(logits.data as Float32Array)]]);
  const decodeStarted = performance.now();
  for (let i = 0; i < decodeTokens; i++) [logits] = await engine.step(batch, [[argmax(logits.data as Float32Array)]]);
  const decodeSeconds = (performance.now() - decodeStarted) / 1000;
  const rss = residentMb();
  batch.removeRow(0);
  process.stderr.write(`ours (${precision}): ${(decodeTokens / decodeSeconds).toFixed(1)} tok/s at batch 1, ${rss.toFixed(0)} MiB resident\n`);

  // Batch 16: base-only rows and rows of 16 distinct adapters, round after round.
  for (let a = 0; a < ROWS; a++) engine.registerAdapter(`tenant-${a}`, randomAdapter(config, basis, { rank: RANK, seed: 100 + a }));
  const rowsOf = (adapters: boolean) => {
    const b = engine.createBatch(ROWS, { initialCapacity: 64 + ROUNDS * STEPS_PER_ROUND + 8 });
    for (let r = 0; r < ROWS; r++) b.addRow(adapters ? `tenant-${r}` : null);
    b.cache.reserve(new Array(ROWS).fill(64)); // a decode step costs the same whatever the cached values are
    b.cache.advance(0, new Array(ROWS).fill(64));
    return b;
  };
  const [base, mixed] = [rowsOf(false), rowsOf(true)];
  const stepRate = async (b: typeof base) => {
    const started = performance.now();
    for (let s = 0; s < STEPS_PER_ROUND; s++)
      await engine.step(
        b,
        Array.from({ length: ROWS }, (_, r) => [200 + r + s]),
      );
    return (ROWS * STEPS_PER_ROUND) / ((performance.now() - started) / 1000);
  };
  await stepRate(base); // warm-up: each batch size's first run plans its memory
  await stepRate(mixed);
  const baseRates: number[] = [];
  const ratios: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    const b = await stepRate(base);
    const m = await stepRate(mixed);
    baseRates.push(b);
    ratios.push(m / b);
  }
  await engine.dispose();
  console.log(
    JSON.stringify({
      decode_tok_s: decodeTokens / decodeSeconds,
      prefill_tok_s: PROMPT.length / prefillSeconds,
      load_seconds: loadSeconds,
      rss_mb: rss,
      decode_tok_s_b16: median(baseRates),
      mixed_adapters_over_base_b16: median(ratios),
    }),
  );
}

await main();
