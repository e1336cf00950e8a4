/**
 * Real base models on the runner: `npm run bench -- realsize`. Writes random weights with the
 * exact shapes of Qwen2.5-0.5B and Llama-3.2-1B (deterministic, into a temporary folder; nothing
 * downloaded), then measures each phase in a process of its own, so every memory figure is that
 * phase's alone (bench/realsize-phase.ts):
 *   - serving the 0.5B shapes as the runner does: start-up (cold, when the weight file is written,
 *     and warm), resident memory, decode tokens/s at batch 1 and 16, at 64 and 1,024 tokens of
 *     context, and the decoding rows' per-token p99 while a 2,000-token prompt is admitted;
 *   - the PiCa basis of both shapes (rMax 32), as a runner computes it the first time;
 *   - a real fine-tuning step on the 1B shapes beside a serving session, with its memory.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { writeRealSizeCheckpoint } from "../gpu-runner/testing/realsize-checkpoints.ts";
import { runPhase } from "./child-phase.ts";
import { progress, round } from "./stats.ts";

const phase = (name: string, args: string[]) => runPhase("realsize-phase.ts", [name, ...args]);

const R_MAX = 32;

/** Runs the real-size bench and returns its figures. */
export async function runRealSizeBench(): Promise<Record<string, unknown>> {
  const root = await mkdtemp(join(tmpdir(), "pica-realsize-"));
  try {
    const qwen = join(root, "qwen2.5-0.5b");
    const llama = join(root, "llama-3.2-1b");
    progress("writing random checkpoints with the shapes of Qwen2.5-0.5B and Llama-3.2-1B…");
    const written = [await writeRealSizeCheckpoint(qwen, "qwen2.5-0.5b-instruct"), await writeRealSizeCheckpoint(llama, "llama-3.2-1b-instruct")];
    progress(`parameters: ${written.map((w) => `${(w.parameterCount / 1e9).toFixed(3)}B`).join(", ")}`);
    const cache = join(root, "cache");
    progress("serving the 0.5B shapes (a cold start: the weight file is written)…");
    const serve = await phase("serve", [qwen, cache]);
    progress("starting again on the 0.5B shapes (warm: the weight file is reused)…");
    const warm = await phase("load", [qwen, cache]);
    progress(`the basis of the 0.5B shapes (rMax ${R_MAX})…`);
    const basis05 = await phase("basis", [qwen, String(R_MAX)]);
    progress(`the basis of the 1B shapes (rMax ${R_MAX})…`);
    const basis1 = await phase("basis", [llama, String(R_MAX)]);
    progress("a fine-tuning step on the 1B shapes beside their serving session…");
    const train = await phase("train", [llama, cache, String(R_MAX)]);
    return {
      params_05b: written[0].parameterCount,
      params_1b: written[1].parameterCount,
      load_seconds_05b: round(serve.load_seconds),
      load_seconds_05b_warm: round(warm.load_seconds),
      weight_file_seconds_05b: round(serve.weight_file_seconds),
      basis_seconds_05b: round(basis05.seconds),
      basis_seconds_1b: round(basis1.seconds),
      rss_mb_serving_05b: Math.round(serve.rss_mb),
      kv_cache_mb_serving_05b: Math.round(serve.kv_cache_mb),
      rss_mb_serving_with_ctx1024_batch_05b: Math.round(serve.rss_mb_with_ctx1024),
      peak_rss_mb_serving_05b: Math.round(serve.peak_rss_mb),
      weight_mb_05b: Math.round(serve.weight_mb),
      rss_over_weight_bytes_05b: round(serve.rss_mb / serve.weight_mb, 3),
      decode_tok_s_b1_05b: round(serve.decode_tok_s_b1),
      decode_tok_s_b16_05b: round(serve.decode_tok_s_b16),
      decode_tok_s_b16_ctx1024_05b: round(serve.decode_tok_s_b16_ctx1024),
      decode_ctx1024_over_ctx64_b16_05b: round(serve.ctx1024_over_ctx64_b16, 3),
      decode_p99_ms_without_prompt_05b: round(serve.p99_ms_without),
      decode_p99_ms_with_prompt_05b: round(serve.p99_ms_with),
      chunked_prefill_decode_p99_ms_over_without: round(serve.p99_ms_with / serve.p99_ms_without, 3),
      prompt_2000_ttft_seconds_05b: round(serve.prompt_ttft_seconds),
      train_step_seconds_1b: round(train.step_seconds),
      train_session_seconds_1b: round(train.session_seconds),
      rss_mb_training_1b: Math.round(train.rss_mb),
      rss_over_weight_bytes_training_1b: round(train.rss_mb / train.weight_mb, 3),
      peak_rss_mb_training_1b: Math.round(train.peak_rss_mb),
      weight_mb_1b: Math.round(train.weight_mb),
    };
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}
