/**
 * A job's estimate counts what the base model's runners measured: the tokens their tokenizer's
 * template adds to each example (counted into the file's tokens at upload) and the training rate
 * of the jobs they finished (tokens per second and overhead per job). Without a report, the
 * defaults of src/protocol/training-figures.ts apply (fine-tuning-jobs.test.ts covers those).
 */
import { env } from "cloudflare:test";
import { beforeEach, describe, expect, it } from "vitest";
import { call, errorOf, tenantWithKey } from "./helpers.ts";
import { RUNNER_AUTH, upload, uploadedFile } from "./fine-tuning-helpers.ts";
import { forgetRunners } from "./inference-helpers.ts";

const heartbeat = (id: string, training: unknown) =>
  call("POST", "/internal/runners/heartbeat", {
    headers: RUNNER_AUTH,
    json: { id, url: `http://${id}.test`, base_model: env.BASE_MODEL, basis_id: "basis-1", running: 0, waiting: 0, resident_adapters: 0, training },
  });

const SHIPPED_TEMPLATE = { conversation: 20, turn: 21, system: 10, prompt_completion: 0 };

const estimate = async (key: string, file: string, hyperparameters: Record<string, unknown>) =>
  (await (
    await call("POST", "/v1/fine_tuning/jobs/estimate", { key, json: { model: env.BASE_MODEL, training_file: file, hyperparameters } })
  ).json()) as Record<string, any>;

beforeEach(forgetRunners);

describe("estimates from what runners measured", () => {
  it("counts the reported template tokens at upload and the reported rate for the seconds", async () => {
    const { key } = await tenantWithKey();
    expect((await heartbeat("runner-a", { template_tokens: SHIPPED_TEMPLATE, rate: { tokens_per_second: 1_000, overhead_seconds: 5, jobs: 2 } })).status).toBe(
      200,
    );
    // trainingJsonl(12): 170 bytes of questions and 15 of answers (fine-tuning-jobs.test.ts), and
    // 20 template tokens for each one-turn conversation: 185 + 240 = 425 an epoch.
    const file = await uploadedFile(key, 12);
    const row = await env.DB.prepare("SELECT estimated_tokens FROM files WHERE id = ?").bind(file).first<{ estimated_tokens: number }>();
    expect(row!.estimated_tokens).toBe(425);
    // One of the 12 is held out to validate on (no validation file): 425 × 11 / 12 = 389.6 an epoch;
    // two epochs: 779 tokens, 5 s + 779 / 1,000 s = 5.8 s.
    expect(await estimate(key, file, { n_epochs: 2 })).toMatchObject({ estimated_tokens: 779, estimated_seconds: 6 });
  });

  it("counts a system message and further turns with their own template tokens", async () => {
    const { key } = await tenantWithKey();
    await heartbeat("runner-a", { template_tokens: SHIPPED_TEMPLATE, rate: null });
    const line = JSON.stringify({
      messages: [
        { role: "system", content: "ab" },
        { role: "user", content: "cd" },
        { role: "assistant", content: "e" },
        { role: "user", content: "f" },
        { role: "assistant", content: "g" },
      ],
    });
    const uploaded = await upload(key, `${Array.from({ length: 10 }, () => line).join("\n")}\n`);
    const file = ((await uploaded.json()) as { id: string }).id;
    // Each example: 7 bytes of text + 20 (conversation) + 21 (a second turn) + 10 (system) = 58.
    const row = await env.DB.prepare("SELECT estimated_tokens FROM files WHERE id = ?").bind(file).first<{ estimated_tokens: number }>();
    expect(row!.estimated_tokens).toBe(580);
    // One of the 10 is held out to validate on: 522 tokens. No rate measured yet: the default rate
    // (2,500 tokens a second after 3 s) applies: 3 + 522 / 2,500 s.
    expect(await estimate(key, file, { n_epochs: 1 })).toMatchObject({ estimated_tokens: 522, estimated_seconds: 3 });
  });

  it("takes the freshest runner's figures", async () => {
    const { key } = await tenantWithKey();
    await heartbeat("runner-a", { template_tokens: SHIPPED_TEMPLATE, rate: { tokens_per_second: 100, overhead_seconds: 0, jobs: 1 } });
    await env.DB.prepare("UPDATE runners SET last_heartbeat = last_heartbeat - 60 WHERE id = 'runner-a'").run();
    await heartbeat("runner-b", { template_tokens: SHIPPED_TEMPLATE, rate: { tokens_per_second: 425, overhead_seconds: 1, jobs: 1 } });
    const file = await uploadedFile(key, 12);
    // 425 × 11 / 12 tokens an epoch (one example held out), 4 epochs: 1,558 tokens, 1 s + 1,558 / 425 s
    // = 4.7 s (the older runner's rate would say 16 s).
    expect(await estimate(key, file, { n_epochs: 4 })).toMatchObject({ estimated_tokens: 1_558, estimated_seconds: 5 });
  });

  it("refuses a heartbeat with malformed figures, naming the field", async () => {
    const refused = await heartbeat("runner-a", { template_tokens: SHIPPED_TEMPLATE, rate: { tokens_per_second: 0, overhead_seconds: 1, jobs: 1 } });
    expect(refused.status).toBe(400);
    expect((await errorOf(refused)).param).toBe("training.rate.tokens_per_second");
  });
});
