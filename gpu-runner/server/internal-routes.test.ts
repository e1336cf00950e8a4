import { mkdtemp, rm } from "node:fs/promises";
import { linearShapes } from "../model/weights.ts";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdapterCache } from "../adapters/adapter-cache.ts";
import { DirectoryAdapterStore } from "../adapters/adapter-store.ts";
import { LlamaEngine } from "../engine/llama-engine.ts";
import { generateText } from "../generate/generate.ts";
import { CallbackClient } from "../jobs/callbacks.ts";
import { JobManager } from "../jobs/job-manager.ts";
import { serializeAdapter } from "../pica/adapter-format.ts";
import { computeBasis } from "../pica/basis.ts";
import type { Basis } from "../pica/types.ts";
import { randomAdapter } from "../testing/random-adapters.ts";
import { tinyModel } from "../testing/tiny-checkpoints.ts";
import { makeByteLevelTokenizerFiles } from "../tokenizer/byte-level.ts";
import { TextTokenizer } from "../tokenizer/tokenizer.ts";
import { parseSseData, SSE_DONE } from "../../src/protocol/sse.ts";
import { createRunnerApp } from "./app.ts";
import { ComputeGate } from "./compute-gate.ts";
import { RunnerMetrics } from "./metrics.ts";
import { Scheduler } from "./scheduler.ts";

const files = makeByteLevelTokenizerFiles();
const tokenizer = TextTokenizer.fromJson(files.tokenizerJson, files.tokenizerConfig);
const { config, weights } = tinyModel("llama-gqa");
const SECRET = "a-long-runner-secret";
const auth = { authorization: `Bearer ${SECRET}` };

describe("the runner's internal API and metrics", () => {
  let engine: LlamaEngine;
  let basis: Basis;
  let directory: string;
  let app: ReturnType<typeof createRunnerApp>;
  let jobs: JobManager;

  beforeAll(async () => {
    basis = await computeBasis(config, weights, { rMax: 8 });
    engine = await LlamaEngine.create(config, weights, { adapters: { basis, rank: 4 } });
    directory = await mkdtemp(join(tmpdir(), "pica-internal-"));
    const store = new DirectoryAdapterStore(join(directory, "adapters"));
    const gate = new ComputeGate();
    const metrics: RunnerMetrics = new RunnerMetrics({
      scheduler: () => scheduler.stats,
      adapters: () => cache.stats(),
      jobs: () => jobs.stats(),
      training: () => gate.stats(),
    });
    const cache = new AdapterCache(engine, store, { maxAdapters: 8, maxBytes: 2 ** 30 }, (s) => metrics.adapterLoaded(s));
    const scheduler: Scheduler = new Scheduler(engine, tokenizer, { maxBatch: 4, maxQueue: 16, adapters: cache, gate, observer: metrics.observer });
    const publishAdapter = async (id: string, bytes: Uint8Array) => {
      const resident = await cache.insert(id, bytes);
      await store.write(id, bytes);
      return resident;
    };
    jobs = new JobManager({
      model: { config, weights, tokenizer, basis },
      directory: join(directory, "jobs"),
      rankLimits: { linearShapes: linearShapes(config), basisRows: 4 },
      callbacks: new CallbackClient({ secret: SECRET }),
      data: { secret: SECRET, trustedOrigins: [], maxBytes: 2 ** 20 },
      compute: (work) => gate.training(work),
      publishAdapter: async (id, bytes) => void (await publishAdapter(id, bytes)),
    });
    await jobs.start();
    app = createRunnerApp({
      engine,
      tokenizer,
      scheduler,
      modelId: "tiny",
      knowsAdapter: () => true,
      prepareAdapter: async (id) => (await cache.acquire(id))(),
      metrics,
      secret: SECRET,
      internal: { jobs, adapters: cache, publishAdapter },
    });
  });
  afterAll(async () => {
    await jobs.shutdown();
    await engine.dispose();
    await rm(directory, { recursive: true, force: true });
  });

  const request = (method: string, path: string, body?: string | Uint8Array, headers: Record<string, string> = auth) =>
    Promise.resolve(app.request(path, { method, headers, body: body as string }));
  const json = (body: unknown) => JSON.stringify(body);

  it("refuses every internal route without the right secret", async () => {
    for (const [method, path] of [
      ["GET", "/internal/jobs"],
      ["POST", "/internal/jobs"],
      ["PUT", "/internal/adapters/x"],
      ["DELETE", "/internal/adapters/x"],
      ["GET", "/internal/adapters"],
    ]) {
      for (const headers of [{}, { authorization: "Bearer wrong" }, { authorization: `Bearer ${SECRET}x` }] as Record<string, string>[]) {
        const response = await request(method, path, undefined, headers);
        expect(response.status, `${method} ${path} ${JSON.stringify(headers)}`).toBe(401);
        expect(((await response.json()) as { error: { type: string } }).error.type).toBe("authentication_error");
      }
    }
  });

  it("registers an adapter from its bytes, serves it at once, refuses a corrupted one, and evicts", async () => {
    const adapter = randomAdapter(config, basis, { rank: 4, seed: 21 });
    const registered = await request("PUT", "/internal/adapters/ft:tiny:acme:x:1", serializeAdapter(adapter));
    expect(registered.status).toBe(201);
    expect(await registered.json()).toMatchObject({ id: "ft:tiny:acme:x:1", resident: true });
    const listed = (await (await request("GET", "/internal/adapters")).json()) as { data: { id: string }[] };
    expect(listed.data.map((a) => a.id)).toContain("ft:tiny:acme:x:1");

    const chat = await app.request("/v1/completions", {
      method: "POST",
      headers: { ...auth, "content-type": "application/json" },
      body: json({ model: "ft:tiny:acme:x:1", prompt: "hi", max_tokens: 6, temperature: 0 }),
    });
    const text = ((await chat.json()) as { choices: { text: string }[] }).choices[0].text;
    expect(text).toBe((await generateText(engine, tokenizer, "hi", { maxNewTokens: 6, temperature: 0, adapterId: "ft:tiny:acme:x:1" })).text);

    const corrupt = serializeAdapter(randomAdapter(config, basis, { rank: 4, seed: 22 }));
    corrupt[corrupt.length - 5] ^= 0x10;
    const refused = await request("PUT", "/internal/adapters/ft:tiny:acme:x:2", corrupt);
    expect(refused.status).toBe(422);
    expect(((await refused.json()) as { error: { message: string } }).error.message).toMatch(/sha256|hash/);
    expect((await request("PUT", "/internal/adapters/..%2Fescape", corrupt)).status).toBe(400);

    const evicted = await request("DELETE", "/internal/adapters/ft:tiny:acme:x:1");
    expect(await evicted.json()).toMatchObject({ evicted: true });
    expect(engine.hasAdapter("ft:tiny:acme:x:1")).toBe(false);
    expect(await (await request("DELETE", "/internal/adapters/ft:tiny:acme:x:1")).json()).toMatchObject({ evicted: false });
  });

  it("takes a training job while requests stream, and serves its adapter when it succeeds", async () => {
    const data = Array.from({ length: 16 }, (_, i) => json({ prompt: `item ${i}:`, completion: ` ok${i % 3}` })).join("\n");
    const submitted = await request(
      "POST",
      "/internal/jobs",
      json({
        id: "job-1",
        training_file: { content: data },
        hyperparameters: { n_epochs: 3, batch_size: 4, rank: 4 },
        adapter_id: "ft:tiny:acme:trained:job-1",
      }),
    );
    expect(submitted.status).toBe(202);
    // Requests stream while the job trains; each must equal the same request run alone.
    const expected = (await generateText(engine, tokenizer, "hello", { maxNewTokens: 12, temperature: 0 })).text;
    let roundsWhileTraining = 0;
    const deadline = Date.now() + 60_000;
    while (jobs.get("job-1")!.status !== "succeeded" && Date.now() < deadline) {
      if (jobs.get("job-1")!.status === "running") roundsWhileTraining++;
      const response = await app.request("/v1/completions", {
        method: "POST",
        headers: { ...auth, "content-type": "application/json" },
        body: json({ model: "tiny", prompt: "hello", max_tokens: 12, temperature: 0, stream: true }),
      });
      const chunks = parseSseData(await response.text())
        .filter((data) => data !== SSE_DONE)
        .map((data) => JSON.parse(data) as { choices: { text: string }[] });
      expect(chunks.map((c) => c.choices[0].text).join("")).toBe(expected);
    }
    expect(roundsWhileTraining).toBeGreaterThan(3);
    const job = (await (await request("GET", "/internal/jobs/job-1")).json()) as { status: string; step: number; total_steps: number };
    expect(job).toMatchObject({ status: "succeeded", step: 12, total_steps: 12 });
    const served = await app.request("/v1/completions", {
      method: "POST",
      headers: { ...auth, "content-type": "application/json" },
      body: json({ model: "ft:tiny:acme:trained:job-1", prompt: "item 1:", max_tokens: 4, temperature: 0 }),
    });
    expect(served.status).toBe(200);
    const adapter = await request("GET", "/internal/jobs/job-1/adapter");
    expect(adapter.headers.get("x-content-sha256")).toMatch(/^[0-9a-f]{64}$/);
    expect((await request("POST", "/internal/jobs/job-1/cancel")).status).toBe(200); // finished: unchanged
  });

  it("answers bad job requests with 400 naming the field, and unknown jobs with 404", async () => {
    const cases: [unknown, string][] = [
      [{ training_file: { content: "x" } }, "id"],
      [{ id: "bad id!", training_file: { content: "x" } }, "id"],
      [{ id: "j", training_file: { url: "ftp://x" } }, "training_file.url"],
      [{ id: "j", training_file: { content: "x" }, hyperparameters: { n_epochs: 0 } }, "hyperparameters.n_epochs"],
      [{ id: "j", training_file: { content: "x" }, hyperparameters: { rank: 8 } }, "hyperparameters.rank"],
      [{ id: "j", training_file: { content: "x" }, callback_url: "not a url" }, "callback_url"],
    ];
    for (const [body, param] of cases) {
      const response = await request("POST", "/internal/jobs", json(body));
      expect(response.status, json(body)).toBe(400);
      expect(((await response.json()) as { error: { param: string } }).error.param).toBe(param);
    }
    expect((await request("POST", "/internal/jobs", "{oops")).status).toBe(400);
    expect((await request("GET", "/internal/jobs/nope")).status).toBe(404);
    expect((await request("POST", "/internal/jobs/nope/cancel")).status).toBe(404);
  });

  it("exposes Prometheus metrics for requests, tokens, batches, adapters and training", async () => {
    const text = await (await app.request("/metrics", { headers: auth })).text();
    const value = (pattern: RegExp) => Number(pattern.exec(text)?.[1] ?? Number.NaN);
    expect(value(/^runner_requests_total\{route="\/v1\/completions",status="200"\} (\d+)/m)).toBeGreaterThan(1);
    expect(value(/^runner_completion_tokens_total (\d+)/m)).toBeGreaterThan(12);
    expect(value(/^runner_batch_rows_count (\d+)/m)).toBeGreaterThan(0);
    expect(value(/^runner_time_to_first_token_seconds_count (\d+)/m)).toBeGreaterThan(1);
    expect(value(/^runner_adapters_resident (\d+)/m)).toBeGreaterThanOrEqual(1);
    expect(value(/^runner_adapter_load_seconds_count (\d+)/m)).toBeGreaterThanOrEqual(2);
    expect(value(/^runner_training_jobs\{status="succeeded"\} (\d+)/m)).toBe(1);
    expect(value(/^runner_training_tokens_total (\d+)/m)).toBeGreaterThan(0);
    expect(value(/^runner_training_slices_total (\d+)/m)).toBeGreaterThan(0);
    expect(text).toMatch(/^process_resident_memory_bytes \d+/m);
  });
});
