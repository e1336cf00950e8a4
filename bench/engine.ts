/**
 * Engine benchmark on a fixed generated config (hidden 512, 8 layers, 8 heads, 4 KV heads,
 * intermediate 1408, vocabulary 2048; weights generated, never committed). Settings are
 * interleaved round by round and reported as medians, so machine noise hits all of them alike.
 */
import { LlamaEngine } from "../gpu-runner/engine/llama-engine.ts";
import type { SequenceBatch } from "../gpu-runner/engine/sequence-batch.ts";
import { parseModelConfig } from "../gpu-runner/model/config.ts";
import { randomWeights } from "../gpu-runner/model/random-weights.ts";
import { referenceForward } from "../gpu-runner/model/reference.ts";
import { maxAbsDiff } from "../gpu-runner/testing/numeric.ts";
import { median, progress, round, timeMs } from "./stats.ts";

/** The engine bench's model config (shared with the adapter bench). */
export const BENCH_CONFIG_JSON = {
  architectures: ["LlamaForCausalLM"],
  vocab_size: 2048,
  hidden_size: 512,
  intermediate_size: 1408,
  num_hidden_layers: 8,
  num_attention_heads: 8,
  num_key_value_heads: 4,
  max_position_embeddings: 1024,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
};

const CONTEXT = 256; // tokens already cached when decode is timed
const ROUNDS = 7;
const DECODE_STEPS = 8; // decode steps per timed sample

/** A deterministic prompt of token ids spread over the bench model's vocabulary. */
export function promptOf(length: number, seed: number): number[] {
  return Array.from({ length }, (_, i) => (seed * 7919 + i * 104729) % 2048);
}

async function prefilled(engine: LlamaEngine, rows: number): Promise<SequenceBatch> {
  const cache = engine.createBatch(rows, { initialCapacity: CONTEXT + DECODE_STEPS * (ROUNDS + 2) });
  for (let r = 0; r < rows; r++) cache.addRow();
  await engine.step(
    cache,
    Array.from({ length: rows }, (_, r) => promptOf(CONTEXT, r + 1)),
  );
  return cache;
}

/** Runs the engine bench and returns its figures. */
export async function runEngineBench(): Promise<Record<string, unknown>> {
  const config = parseModelConfig(BENCH_CONFIG_JSON);
  progress("generating weights and building the session…");
  const weights = randomWeights(config, 2024);
  const engine = await LlamaEngine.create(config, weights);

  progress("checking against the reference forward…");
  const check = promptOf(6, 99);
  const checkCache = engine.createBatch(1);
  checkCache.addRow();
  const [onnx] = await engine.step(checkCache, [check], "all");
  const reference = referenceForward(config, weights, check).flatMap((r) => [...r]);
  const refMaxAbsDiff = maxAbsDiff(reference, onnx.data);

  progress(`prefilling ${CONTEXT} tokens for batch 1 and batch 16…`);
  const cache1 = await prefilled(engine, 1);
  const cache16 = await prefilled(engine, 16);
  const prefill: number[] = [];
  const decode1: number[] = [];
  const decode16: number[] = [];
  const recompute: number[] = [];
  const cacheStep: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    prefill.push(
      await timeMs(async () => {
        const cache = engine.createBatch(1, { initialCapacity: CONTEXT });
        cache.addRow();
        await engine.step(cache, [promptOf(CONTEXT, 50 + round)]);
      }),
    );
    decode1.push(
      (await timeMs(async () => {
        for (let s = 0; s < DECODE_STEPS; s++) await engine.step(cache1, [[s]]);
      })) / DECODE_STEPS,
    );
    decode16.push(
      (await timeMs(async () => {
        for (let s = 0; s < DECODE_STEPS; s++)
          await engine.step(
            cache16,
            Array.from({ length: 16 }, (_, r) => [(r + s) % 2048]),
          );
      })) / DECODE_STEPS,
    );
    // Without a cache, the next token costs a forward over the whole context again.
    recompute.push(
      await timeMs(async () => {
        const cache = engine.createBatch(1, { initialCapacity: CONTEXT + 1 });
        cache.addRow();
        await engine.step(cache, [promptOf(CONTEXT + 1, 60 + round)]);
      }),
    );
    cacheStep.push(decode1[decode1.length - 1]);
    progress(
      `round ${round + 1}/${ROUNDS}: prefill ${prefill.at(-1)!.toFixed(1)} ms, decode b1 ${decode1.at(-1)!.toFixed(2)} ms, b16 ${decode16.at(-1)!.toFixed(2)} ms, recompute ${recompute.at(-1)!.toFixed(1)} ms`,
    );
  }
  await engine.dispose();

  const decodeB1 = 1000 / median(decode1);
  const decodeB16 = (16 * 1000) / median(decode16);
  return {
    config: "hidden 512, 8 layers, 8 heads, 4 kv heads, intermediate 1408, vocab 2048",
    context: CONTEXT,
    prefill_tok_s: round((CONTEXT * 1000) / median(prefill)),
    decode_tok_s_b1: round(decodeB1),
    decode_tok_s_b16: round(decodeB16),
    batch16_over_batch1: round(median(decode16.map((t, i) => (16 * decode1[i]) / t))),
    cache_speedup: round(median(recompute.map((t, i) => t / cacheStep[i]))),
    ref_max_abs_diff: Number(refMaxAbsDiff.toExponential(3)),
  };
}
