import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { call, errorOf, tenantWithKey } from "./helpers.ts";
import { createdJob, upload, uploadedFile } from "./fine-tuning-helpers.ts";

const create = (key: string, json: unknown) => call("POST", "/v1/fine_tuning/jobs", { key, json });

// Tokens in one epoch of trainingJsonl(n) at one token per UTF-8 byte, plus the default 10
// template tokens per one-turn conversation (no runner has reported its own), counted by hand.
// Example i asks "What is i + 1?" (13 bytes + the digits of i) and is answered "i + 1" (its digits).
// n = 12: questions 10 × 14 + 2 × 15 = 170; answers 9 × 1 + 3 × 2 = 15; 12 conversations × 10 = 120.
const ONE_EPOCH_OF_12 = 170 + 15 + 120; // 305
// n = 20: questions 10 × 14 + 10 × 15 = 290; answers 9 × 1 + 11 × 2 = 31; 20 × 10 = 200.
const ONE_EPOCH_OF_20 = 290 + 31 + 200; // 521
// n = 30: questions 10 × 14 + 20 × 15 = 440; answers 9 × 1 + 21 × 2 = 51; 30 × 10 = 300.
const ONE_EPOCH_OF_30 = 440 + 51 + 300; // 791

describe("creating fine-tuning jobs", () => {
  it("creates a job in validating_files with an estimate, the resolved defaults and a queued dispatch", async () => {
    const { key, tenantId } = await tenantWithKey();
    const file = await uploadedFile(key, 12);
    const response = await create(key, { model: "pica-base-4m", training_file: file, suffix: "calc", seed: 42 });
    expect(response.status).toBe(200);
    const job = (await response.json()) as Record<string, any>;
    expect(job).toMatchObject({
      object: "fine_tuning.job",
      model: "pica-base-4m",
      training_file: file,
      validation_file: null,
      fine_tuned_model: null,
      organization_id: tenantId,
      seed: 42,
      user_provided_suffix: "calc",
      trained_tokens: null,
      error: null,
      finished_at: null,
      hyperparameters: { n_epochs: "auto", batch_size: "auto", learning_rate_multiplier: "auto" },
      method: {
        type: "supervised",
        supervised: { hyperparameters: { n_epochs: "auto", batch_size: "auto", learning_rate_multiplier: "auto", rank: 32, weight_sharing: true } },
      },
    });
    expect(["validating_files", "queued"]).toContain(job.status);
    expect(job.id).toMatch(/^ftjob-/);
    // 12 examples, one held out to validate on: the trainer's "auto" rule picks 8 epochs of the 11
    // others (8 up to 32 examples), so 305 × 11 / 12 × 8 = 2,237 tokens: the default 3 s of
    // overhead and 0.9 s of training at 2,500 tokens/s.
    expect(job.estimated_tokens).toBe(Math.round((ONE_EPOCH_OF_12 * 11 * 8) / 12));
    expect(job.estimated_tokens).toBe(2_237);
    expect(job.estimated_seconds).toBe(4);
    const row = await env.DB.prepare("SELECT fine_tuned_model FROM fine_tuning_jobs WHERE id = ?").bind(job.id).first<{ fine_tuned_model: string }>();
    expect(row!.fine_tuned_model).toBe(`ft:pica-base-4m:${tenantId}:calc:${job.id}`);
    const events = (await (await call("GET", `/v1/fine_tuning/jobs/${job.id}/events`, { key })).json()) as Record<string, any>;
    expect(events.data.at(-1)).toMatchObject({ id: `${job.id}:edge:created`, object: "fine_tuning.job.event", level: "info" });
    expect(events.data.at(-1).message).toContain("8 epochs");
  });

  it("accepts explicit and legacy hyper-parameters, and a validation file", async () => {
    const { key } = await tenantWithKey();
    const file = await uploadedFile(key, 20);
    const validation = await uploadedFile(key, 10);
    const job = (await (
      await create(key, {
        model: "pica-base-4m",
        training_file: file,
        validation_file: validation,
        hyperparameters: { n_epochs: 3, batch_size: 4, learning_rate_multiplier: 0.5 },
      })
    ).json()) as Record<string, any>;
    expect(job.validation_file).toBe(validation);
    expect(job.hyperparameters).toEqual({ n_epochs: 3, batch_size: 4, learning_rate_multiplier: 0.5 });
    expect(job.user_provided_suffix).toBeNull();
    expect(typeof job.seed).toBe("number");
    expect(job.estimated_tokens).toBe(3 * ONE_EPOCH_OF_20);
    const sharing = (await (
      await create(key, {
        model: "pica-base-4m",
        training_file: file,
        method: { type: "supervised", supervised: { hyperparameters: { weight_sharing: false, rank: 16 } } },
      })
    ).json()) as Record<string, any>;
    expect(sharing.method.supervised.hyperparameters).toMatchObject({ rank: 16, weight_sharing: false });
  });

  it("estimates a job exactly as creating it would, without creating it; a bad field is the same 400", async () => {
    const { key } = await tenantWithKey();
    const file = await uploadedFile(key, 30);
    const request = { model: "pica-base-4m", training_file: file, method: { type: "supervised", supervised: { hyperparameters: { n_epochs: 3, rank: 4 } } } };
    const estimate = (await (await call("POST", "/v1/fine_tuning/jobs/estimate", { key, json: request })).json()) as Record<string, any>;
    expect((await (await call("GET", "/v1/fine_tuning/jobs", { key })).json()) as { data: unknown[] }).toMatchObject({ data: [] });
    const job = (await (await create(key, request)).json()) as Record<string, any>;
    expect(estimate).toEqual({
      object: "fine_tuning.job.estimate",
      model: "pica-base-4m",
      training_examples: 30,
      n_epochs: 3,
      batch_size: job.hyperparameters.batch_size === "auto" ? estimate.batch_size : job.hyperparameters.batch_size,
      learning_rate_multiplier: estimate.learning_rate_multiplier,
      rank: 4,
      weight_sharing: true,
      target_modules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
      estimated_tokens: job.estimated_tokens,
      estimated_seconds: job.estimated_seconds,
    });
    // Without a validation file the trainer holds out floor(10% of 30) = 3 examples: 791 × 27 / 30 × 3 = 2,135.7.
    expect(estimate.estimated_tokens).toBe(Math.round((ONE_EPOCH_OF_30 * 27 * 3) / 30));
    expect(estimate.estimated_tokens).toBe(2_136);
    const bad = { ...request, method: { type: "supervised", supervised: { hyperparameters: { batch_size: 1000 } } } };
    for (const path of ["/v1/fine_tuning/jobs/estimate", "/v1/fine_tuning/jobs"]) {
      const refused = await call("POST", path, { key, json: bad });
      expect(refused.status).toBe(400);
      expect((await errorOf(refused)).param).toBe("method.supervised.hyperparameters.batch_size");
    }
    const missing = await call("POST", "/v1/fine_tuning/jobs/estimate", { key, json: { model: "pica-base-4m", training_file: "file-nope" } });
    expect(missing.status).toBe(404);
    expect((await errorOf(missing)).param).toBe("training_file");
  });

  it("estimates a large file's tokens at one per byte, less the validation holdout, and its time at the default 2,500 tokens a second after 3 s", async () => {
    const { key } = await tenantWithKey();
    // Ten examples of a 1,989-byte question and a 1-byte answer: 1,989 + 1 + 10 template tokens =
    // 2,000 tokens each; one example is held out to validate on (no validation file), so 18,000 an
    // epoch, 90,000 over 5 epochs: 3 s + 90,000 / 2,500 s = 39 s.
    const line = JSON.stringify({
      messages: [
        { role: "user", content: "a".repeat(1_989) },
        { role: "assistant", content: "b" },
      ],
    });
    const uploaded = await upload(key, `${Array.from({ length: 10 }, () => line).join("\n")}\n`);
    expect(uploaded.status).toBe(200);
    const file = ((await uploaded.json()) as { id: string }).id;
    const request = { model: "pica-base-4m", training_file: file, hyperparameters: { n_epochs: 5 } };
    const estimate = (await (await call("POST", "/v1/fine_tuning/jobs/estimate", { key, json: request })).json()) as Record<string, any>;
    expect(estimate).toMatchObject({ training_examples: 10, n_epochs: 5, estimated_tokens: 90_000, estimated_seconds: 39 });
    expect(await (await create(key, request)).json()).toMatchObject({ estimated_tokens: 90_000, estimated_seconds: 39 });
  });

  it("refuses bad requests with OpenAI-shaped 400s naming the parameter", async () => {
    const { key } = await tenantWithKey();
    const file = await uploadedFile(key, 12);
    const cases: [unknown, string | null, string | null][] = [
      [{ training_file: file }, "model", "missing_required_parameter"],
      [{ model: "gpt-4o", training_file: file }, "model", "model_not_available"],
      [{ model: "pica-base-4m" }, "training_file", "missing_required_parameter"],
      [{ model: "pica-base-4m", training_file: file, suffix: "Bad Suffix" }, "suffix", null],
      [{ model: "pica-base-4m", training_file: file, suffix: "x".repeat(41) }, "suffix", null],
      [{ model: "pica-base-4m", training_file: file, seed: -1 }, "seed", "invalid_value"],
      [{ model: "pica-base-4m", training_file: file, method: { type: "dpo" } }, "method.type", "invalid_value"],
      [
        { model: "pica-base-4m", training_file: file, method: { type: "supervised", supervised: { hyperparameters: { n_epochs: 0 } } } },
        "method.supervised.hyperparameters.n_epochs",
        "invalid_value",
      ],
      [
        { model: "pica-base-4m", training_file: file, method: { type: "supervised", supervised: { hyperparameters: { rank: 257 } } } },
        "method.supervised.hyperparameters.rank",
        "invalid_value",
      ],
      [
        { model: "pica-base-4m", training_file: file, method: { type: "supervised", supervised: { hyperparameters: { batch_size: 13 } } } },
        "method.supervised.hyperparameters.batch_size",
        "invalid_value",
      ],
      [
        { model: "pica-base-4m", training_file: file, hyperparameters: { learning_rate_multiplier: "fast" } },
        "hyperparameters.learning_rate_multiplier",
        "invalid_value",
      ],
      [
        {
          model: "pica-base-4m",
          training_file: file,
          hyperparameters: { n_epochs: 2 },
          method: { type: "supervised", supervised: { hyperparameters: { n_epochs: 2 } } },
        },
        "hyperparameters",
        "invalid_value",
      ],
      [{ model: "pica-base-4m", training_file: file, temperature: 1 }, "temperature", "unknown_parameter"], // OpenAI's answer to a field it lacks
      [[1, 2], null, "invalid_type"],
    ];
    for (const [body, param, code] of cases) {
      const response = await create(key, body);
      expect(response.status, JSON.stringify(body)).toBe(400);
      const error = await errorOf(response);
      expect(error.type).toBe("invalid_request_error");
      expect(error.param, JSON.stringify(body)).toBe(param);
      if (code !== null) expect(error.code, JSON.stringify(body)).toBe(code);
    }
    expect((await call("POST", "/v1/fine_tuning/jobs", { key, body: "{oops", headers: { "content-type": "application/json" } })).status).toBe(400);
    const missingFile = await create(key, { model: "pica-base-4m", training_file: "file-nope" });
    expect(missingFile.status).toBe(404);
    expect((await errorOf(missingFile)).param).toBe("training_file");
    const missingValidation = await create(key, { model: "pica-base-4m", training_file: file, validation_file: "file-nope" });
    expect((await errorOf(missingValidation)).param).toBe("validation_file");
    expect((await call("GET", "/v1/fine_tuning/jobs?limit=1000", { key })).status).toBe(400);
    const unknownCursor = await call("GET", "/v1/fine_tuning/jobs?after=ftjob-nope", { key });
    expect(unknownCursor.status).toBe(400);
    expect((await errorOf(unknownCursor)).param).toBe("after");
    expect((await call("GET", "/v1/fine_tuning/jobs/ftjob-nope/events", { key })).status).toBe(404);
    const inferenceOnly = await tenantWithKey(["inference"]);
    expect((await create(inferenceOnly.key, { model: "pica-base-4m", training_file: file })).status).toBe(403);
  });
});

describe("listing and reading jobs", () => {
  it("pages through the tenant's jobs with after and limit, newest first", async () => {
    const { key } = await tenantWithKey();
    const ids = [];
    for (let i = 0; i < 3; i++) ids.push((await createdJob(key)).id);
    const first = (await (await call("GET", "/v1/fine_tuning/jobs?limit=2", { key })).json()) as Record<string, any>;
    expect(first).toMatchObject({ object: "list", has_more: true });
    expect(first.data).toHaveLength(2);
    const second = (await (await call("GET", `/v1/fine_tuning/jobs?limit=2&after=${first.last_id}`, { key })).json()) as Record<string, any>;
    expect(second.has_more).toBe(false);
    expect(second.data).toHaveLength(1);
    expect([...first.data, ...second.data].map((job: { id: string }) => job.id).sort()).toEqual(ids.sort());
    const one = (await (await call("GET", `/v1/fine_tuning/jobs/${ids[0]}`, { key })).json()) as Record<string, any>;
    expect(one.id).toBe(ids[0]);
    const checkpoints = (await (await call("GET", `/v1/fine_tuning/jobs/${ids[0]}/checkpoints`, { key })).json()) as Record<string, any>;
    expect(checkpoints).toEqual({ object: "list", data: [], first_id: null, last_id: null, has_more: false });
  });

  it("pages through events with after", async () => {
    const { key } = await tenantWithKey();
    const job = await createdJob(key);
    const events = Array.from({ length: 5 }, (_, i) => ({
      id: `${job.id}:message:${i}`,
      job_id: job.id,
      created_at: 1_800_000_000 + i,
      level: "info",
      type: "message",
      message: `m${i}`,
      data: null,
    }));
    expect((await call("POST", `/internal/jobs/${job.id}/events`, { headers: { authorization: "Bearer test-runner-secret" }, json: { events } })).status).toBe(
      200,
    );
    const page = (await (await call("GET", `/v1/fine_tuning/jobs/${job.id}/events?limit=3`, { key })).json()) as Record<string, any>;
    expect(page.data.map((event: { message: string }) => event.message)).toEqual(["m4", "m3", "m2"]);
    expect(page.has_more).toBe(true);
    const rest = (await (await call("GET", `/v1/fine_tuning/jobs/${job.id}/events?limit=10&after=${page.last_id}`, { key })).json()) as Record<string, any>;
    expect(rest.data.map((event: { message: string }) => event.message).slice(0, 2)).toEqual(["m1", "m0"]);
    expect(rest.has_more).toBe(false);
    const unknownCursor = await call("GET", `/v1/fine_tuning/jobs/${job.id}/events?after=evt-nope`, { key });
    expect(unknownCursor.status).toBe(400);
    expect((await errorOf(unknownCursor)).param).toBe("after");
  });
});
