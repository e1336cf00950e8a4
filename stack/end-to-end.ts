/**
 * The platform's end-to-end flow through the public API only, with the clients tenants use: a
 * tenant uploads a JSONL file for a task the base model cannot do (the quality bench's mood
 * classification), fine-tunes, follows the job to `succeeded`, then the base model and the new
 * adapter answer held-out prompts through the real `openai` client, and the adapter again through
 * `@huggingface/inference`; a second tenant must not reach the adapter or the job; usage must show
 * the tokens. Shared by the end-to-end test and `npm run bench -- e2e`.
 */
import { InferenceClient } from "@huggingface/inference";
import OpenAI, { toFile } from "openai";
import { classifyTask, toChatJsonl, type QualityExample } from "../bench/quality-tasks.ts";
import { BASE_MODEL_ID } from "../src/constants.ts";
import { createTenantWithKey } from "./admin.ts";

export interface EndToEndOptions {
  edgeUrl: string;
  key: string; // the first tenant's key
  adminToken: string; // to create the second tenant
  trainExamples?: number; // default 240
  evalExamples?: number; // default 40
  epochs?: number; // default 8
  rank?: number; // default 16
  log?: (message: string) => void;
}

export interface EndToEndResult {
  base_accuracy: number;
  adapter_accuracy: number;
  adapter_minus_base_accuracy: number;
  hf_client_agreement: number; // share of prompts where @huggingface/inference gave the openai client's answer
  finetune_seconds: number;
  job_events: number;
  isolation_violations: number;
  client_failures: number;
  usage_completion_tokens: number;
  fine_tuned_model: string;
}

/** Runs the flow; client failures are counted (and logged), not thrown, so a bench can report them. */
export async function runEndToEnd(options: EndToEndOptions): Promise<EndToEndResult> {
  const log = options.log ?? (() => undefined);
  const openai = new OpenAI({ baseURL: `${options.edgeUrl}/v1`, apiKey: options.key, maxRetries: 0 });
  const task = classifyTask({ train: options.trainExamples ?? 240, eval: options.evalExamples ?? 40 });
  let clientFailures = 0;
  const attempt = async <T>(what: string, call: () => Promise<T>): Promise<T | null> => {
    try {
      return await call();
    } catch (error) {
      clientFailures++;
      log(`${what} failed: ${(error as Error).message}`);
      return null;
    }
  };

  const file = await openai.files.create({ file: await toFile(Buffer.from(toChatJsonl(task.train)), "mood.jsonl"), purpose: "fine-tune" });
  log(`uploaded ${file.id} (${task.train.length} examples)`);
  const started = performance.now();
  const hyperparameters = { n_epochs: options.epochs ?? 8, batch_size: 16, rank: options.rank ?? 16 };
  // `rank` is PiCa's; the openai client's types only know OpenAI's hyper-parameters.
  const job = await openai.fineTuning.jobs.create({
    model: BASE_MODEL_ID,
    training_file: file.id,
    suffix: "mood",
    seed: 7,
    method: { type: "supervised", supervised: { hyperparameters: hyperparameters as never } },
  });
  log(`created ${job.id}`);
  let finished = job;
  for (let polls = 0; !["succeeded", "failed", "cancelled"].includes(finished.status); polls++) {
    if (polls > 3000) throw new Error(`job ${job.id} did not finish (status ${finished.status})`);
    await new Promise((resolve) => setTimeout(resolve, 500));
    finished = await openai.fineTuning.jobs.retrieve(job.id);
  }
  const finetuneSeconds = (performance.now() - started) / 1000;
  if (finished.status !== "succeeded" || finished.fine_tuned_model === null)
    throw new Error(`job ${job.id} ended ${finished.status}: ${JSON.stringify(finished.error)}`);
  const adapter = finished.fine_tuned_model;
  const events = await openai.fineTuning.jobs.listEvents(job.id, { limit: 100 });
  log(`${job.id} succeeded in ${finetuneSeconds.toFixed(1)} s as ${adapter}`);

  const answer = async (model: string, example: QualityExample) =>
    attempt(
      `openai chat with ${model}`,
      async () =>
        (await openai.chat.completions.create({ model, messages: [{ role: "user", content: example.prompt }], max_tokens: 8, temperature: 0 })).choices[0]
          .message.content,
    );
  const hf = new InferenceClient(options.key, { endpointUrl: options.edgeUrl });
  let base = 0;
  let tuned = 0;
  let agreed = 0;
  for (const example of task.eval) {
    if ((await answer(BASE_MODEL_ID, example)) === example.answer) base++;
    const viaOpenai = await answer(adapter, example);
    if (viaOpenai === example.answer) tuned++;
    const viaHf = await attempt(
      "@huggingface/inference chatCompletion",
      async () =>
        (await hf.chatCompletion({ model: adapter, messages: [{ role: "user", content: example.prompt }], max_tokens: 8, temperature: 0 })).choices[0].message
          .content,
    );
    if (viaHf === viaOpenai) agreed++;
  }

  // A second tenant: neither the adapter nor the job may be reachable, whatever it tries.
  const other = (await createTenantWithKey(options.edgeUrl, options.adminToken, { name: "intruder" })).key;
  const intruder = new OpenAI({ baseURL: `${options.edgeUrl}/v1`, apiKey: other, maxRetries: 0 });
  let violations = 0;
  const mustBeRefused = async (what: string, call: () => Promise<unknown>) => {
    try {
      await call();
      violations++;
      log(`isolation violated: ${what} succeeded for another tenant`);
    } catch (error) {
      if ((error as { status?: number }).status !== 404) {
        violations++;
        log(`isolation: ${what} answered ${(error as { status?: number }).status} instead of 404`);
      }
    }
  };
  await mustBeRefused("chat with the adapter", () =>
    intruder.chat.completions.create({ model: adapter, messages: [{ role: "user", content: "hi" }], max_tokens: 2 }),
  );
  await mustBeRefused("retrieving the job", () => intruder.fineTuning.jobs.retrieve(job.id));
  await mustBeRefused("retrieving the file", () => intruder.files.retrieve(file.id));
  await mustBeRefused("cancelling the job", () => intruder.fineTuning.jobs.cancel(job.id));

  const usage = (await (await fetch(`${options.edgeUrl}/v1/usage`, { headers: { authorization: `Bearer ${options.key}` } })).json()) as {
    totals: { output_tokens: number };
  };
  const n = task.eval.length;
  return {
    base_accuracy: base / n,
    adapter_accuracy: tuned / n,
    adapter_minus_base_accuracy: (tuned - base) / n,
    hf_client_agreement: agreed / n,
    finetune_seconds: Math.round(finetuneSeconds * 10) / 10,
    job_events: events.data.length,
    isolation_violations: violations,
    client_failures: clientFailures,
    usage_completion_tokens: usage.totals.output_tokens,
    fine_tuned_model: adapter,
  };
}
