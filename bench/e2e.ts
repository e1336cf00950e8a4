/**
 * End-to-end benchmark: `npm start`'s stack in a temporary directory, then the whole tenant flow
 * through the public API with the real clients (stack/end-to-end.ts): upload, fine-tune, follow
 * the job, exact-match accuracy of the base and of the adapter on held-out prompts, isolation
 * against a second tenant, usage. Figures: accuracies, fine-tuning time, isolation violations and
 * client failures (both must be 0).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runEndToEnd } from "../stack/end-to-end.ts";
import { stackAdminToken, startStack } from "../stack/stack-process.ts";
import { progress, round } from "./stats.ts";

/** Runs the end-to-end bench and returns its figures. */
export async function runEndToEndBench(): Promise<Record<string, unknown>> {
  const started = performance.now();
  const directory = await mkdtemp(join(tmpdir(), "pica-e2e-bench-"));
  progress("starting the stack (runner + wrangler dev)…");
  const stack = await startStack(directory);
  try {
    const result = await runEndToEnd({ edgeUrl: stack.edgeUrl, key: stack.key, adminToken: await stackAdminToken(directory), log: progress });
    progress(`base ${result.base_accuracy}, adapter ${result.adapter_accuracy} exact match on held-out prompts`);
    return {
      config: "shipped model; mood classification (240 train / 40 held-out), PiCa shared r=16, 8 epochs, batch 16; greedy exact match through the edge",
      base_accuracy: round(result.base_accuracy),
      adapter_accuracy: round(result.adapter_accuracy),
      adapter_minus_base_accuracy: round(result.adapter_minus_base_accuracy),
      hf_client_agreement: round(result.hf_client_agreement),
      finetune_seconds: result.finetune_seconds,
      job_events: result.job_events,
      isolation_violations: result.isolation_violations,
      client_failures: result.client_failures,
      usage_completion_tokens: result.usage_completion_tokens,
      seconds: round((performance.now() - started) / 1000),
    };
  } finally {
    await stack.stop();
    await rm(directory, { recursive: true, force: true });
  }
}
