import { spawn, type ChildProcess } from "node:child_process";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DirectoryAdapterStore } from "../gpu-runner/adapters/adapter-store.ts";
import { LlamaEngine } from "../gpu-runner/engine/llama-engine.ts";
import { generate } from "../gpu-runner/generate/generate.ts";
import { loadCheckpoint } from "../gpu-runner/model/checkpoint.ts";
import { serializeAdapter } from "../gpu-runner/pica/adapter-format.ts";
import { quantizationOf, type Quantization } from "../gpu-runner/quantize/block-format.ts";
import { loadOrComputeBasis } from "../gpu-runner/pica/basis.ts";
import { randomAdapter } from "../gpu-runner/testing/random-adapters.ts";
import { writeTinyCheckpoint } from "../gpu-runner/testing/tiny-checkpoints.ts";
import { runnerAuthorization } from "../src/protocol/runner.ts";

const SECRET = "process-test-secret";
const auth = runnerAuthorization(SECRET);

/** Starts `npm run runner` with `args` and resolves once it listens. */
function startRunner(args: string[]): Promise<{ runner: ChildProcess; base: string }> {
  const runner = spawn(process.execPath, ["--import", "tsx", "gpu-runner/server/main.ts", ...args], {
    cwd: join(import.meta.dirname, ".."),
    stdio: ["ignore", "pipe", "pipe"],
  });
  return new Promise((resolve, reject) => {
    let output = "";
    runner.stdout!.on("data", (chunk: Buffer) => {
      output += chunk.toString();
      const match = /listening on (http:\/\/[\d.]+:\d+)/.exec(output);
      if (match) resolve({ runner, base: match[1] });
    });
    runner.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()));
    runner.on("exit", (code) => reject(new Error(`runner exited with ${code}: ${output}`)));
  });
}

describe("the runner process", () => {
  let directory: string;
  let runner: ChildProcess;
  let base: string;
  let runnerArgs: string[];
  let jobsDirectory: string;
  // The greedy answers to the chat below, computed in this process: by the base model and by tenant-x.
  const expected = { base: "", adapter: "" };

  beforeAll(async () => {
    directory = await mkdtemp(join(tmpdir(), "pica-runner-"));
    const model = join(directory, "tiny");
    const adapters = join(directory, "adapters");
    await writeTinyCheckpoint(model, "llama-gqa");
    await mkdir(adapters);
    const { config, weights, tokenizer } = await loadCheckpoint(model);
    const { basis } = await loadOrComputeBasis(model, config, weights, { rMax: 8 });
    const store = new DirectoryAdapterStore(adapters);
    const tenantX = randomAdapter(config, basis, { rank: 4, seed: 9 });
    await store.write("tenant-x", serializeAdapter(tenantX));

    const engine = await LlamaEngine.create(config, weights, { adapters: { basis, rank: 4 } });
    engine.registerAdapter("tenant-x", tenantX);
    const promptIds = tokenizer.encode(tokenizer.applyChatTemplate([{ role: "user", content: "hello" }], { addGenerationPrompt: true }), {
      addSpecialTokens: false,
    });
    const answer = async (adapterId: string | null) => {
      for await (const event of generate(engine, tokenizer, promptIds, { maxNewTokens: 5, temperature: 0, adapterId }))
        if (event.type === "finish") return event.text;
      throw new Error("generation ended without a finish event");
    };
    expected.base = await answer(null);
    expected.adapter = await answer("tenant-x");
    await engine.dispose();
    const corrupt = serializeAdapter(randomAdapter(config, basis, { rank: 4, seed: 10 }));
    corrupt[corrupt.length - 3] ^= 0x40;
    await store.write("tenant-corrupt", corrupt);

    jobsDirectory = join(directory, "jobs");
    runnerArgs = [
      "--model",
      model,
      "--port",
      "0",
      "--adapter-dir",
      adapters,
      "--rank",
      "4",
      "--r-max",
      "8",
      "--max-batch",
      "4",
      "--secret",
      SECRET,
      "--jobs-dir",
      jobsDirectory,
    ];
    ({ runner, base } = await startRunner(runnerArgs));
  });

  afterAll(async () => {
    if (runner.exitCode === null) runner.kill("SIGKILL");
    await rm(directory, { recursive: true, force: true });
  });

  const chat = (model: string) =>
    fetch(`${base}/v1/chat/completions`, {
      method: "POST",
      headers: { ...auth, "content-type": "application/json" },
      body: JSON.stringify({ model, messages: [{ role: "user", content: "hello" }], max_tokens: 5, temperature: 0 }),
    });

  it("serves the base model and loads a stored adapter on first use, which answers as that adapter, not as the base", async () => {
    expect((await fetch(`${base}/health`)).status).toBe(401); // the secret guards every route
    expect(await (await fetch(`${base}/health`, { headers: auth })).json()).toMatchObject({ status: "ok", model: "tiny" });
    type Body = { choices: { message: { content: string } }[]; usage: { completion_tokens: number } };
    const baseResponse = await chat("tiny");
    expect(baseResponse.status).toBe(200);
    const baseBody = (await baseResponse.json()) as Body;
    const response = await chat("tenant-x");
    expect(response.status).toBe(200);
    const body = (await response.json()) as Body;
    expect(body.usage.completion_tokens).toBe(5);
    // The adapter changes the greedy answer, so serving the base model for it would show here.
    expect(expected.adapter).not.toBe(expected.base);
    expect(baseBody.choices[0].message.content).toBe(expected.base);
    expect(body.choices[0].message.content).toBe(expected.adapter);
    expect(body.choices[0].message.content).not.toBe(baseBody.choices[0].message.content);
  });

  it("answers an unknown adapter with 404 and a corrupted one with a readable 422", async () => {
    const missing = await chat("tenant-missing");
    expect(missing.status).toBe(404);
    const corrupt = await chat("tenant-corrupt");
    expect(corrupt.status).toBe(422);
    expect(((await corrupt.json()) as { error: { message: string } }).error.message).toMatch(/tenant-corrupt could not be loaded: .*sha256|tensors hash/);
  });

  const internal = (path: string, init: RequestInit = {}) =>
    fetch(`${base}/internal${path}`, { ...init, headers: { ...auth, "content-type": "application/json", ...init.headers } });
  const job = async (id: string) =>
    (await (await internal(`/jobs/${id}`)).json()) as { status: string; step: number; resumed_from_step: number | null; total_steps: number };
  async function until(what: string, check: () => Promise<boolean>): Promise<void> {
    const deadline = Date.now() + 90_000;
    while (!(await check())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  const exitOf = (child: ChildProcess) => new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));

  it("reports requests, tokens and adapters in /metrics", async () => {
    const text = await (await fetch(`${base}/metrics`, { headers: auth })).text();
    expect(Number(/^runner_completion_tokens_total (\d+)/m.exec(text)![1])).toBeGreaterThanOrEqual(10);
    expect(Number(/^runner_adapters_resident (\d+)/m.exec(text)![1])).toBe(1);
    expect(text).toMatch(/^runner_requests_total\{route="\/v1\/chat\/completions",status="404"\} 1$/m);
  });

  it("checkpoints a training job on SIGTERM, resumes it at the next start, and again after a crash", async () => {
    const data = Array.from({ length: 40 }, (_, i) => JSON.stringify({ prompt: `n${i % 7}=`, completion: ` ${(i % 7) * 2}` })).join("\n");
    const accepted = await internal("/jobs", {
      method: "POST",
      body: JSON.stringify({ id: "job-p", training_file: { content: data }, hyperparameters: { n_epochs: 4, batch_size: 4, rank: 4 }, checkpoint_every: 2 }),
    });
    expect(accepted.status).toBe(202);
    await until("two checkpoints", async () => (await job("job-p")).step >= 4);

    const exited = exitOf(runner);
    runner.kill("SIGTERM");
    expect(await exited).toBe(0); // graceful: the job was checkpointed where it stood
    ({ runner, base } = await startRunner(runnerArgs));
    await until("the job to resume", async () => (await job("job-p")).resumed_from_step !== null);
    const resumed = await job("job-p");
    expect(resumed.resumed_from_step).toBeGreaterThanOrEqual(4);
    await until("progress past the resume point", async () => (await job("job-p")).step >= resumed.resumed_from_step! + 4);

    const crashed = exitOf(runner);
    runner.kill("SIGKILL"); // no chance to checkpoint: the last periodic checkpoint must do
    await crashed;
    ({ runner, base } = await startRunner(runnerArgs));
    await until("the job to finish", async () => (await job("job-p")).status === "succeeded");
    const finished = await job("job-p");
    expect(finished.resumed_from_step).toBeGreaterThanOrEqual(resumed.resumed_from_step! + 2);
    expect(finished.step).toBe(finished.total_steps);
  });

  it("shuts down cleanly on SIGTERM", async () => {
    const exited = exitOf(runner);
    runner.kill("SIGTERM");
    expect(await exited).toBe(0);
  });
});

describe("a runner on int4 weights", () => {
  let directory: string;
  let runner: ChildProcess;
  let base: string;

  beforeAll(async () => {
    directory = await mkdtemp(join(tmpdir(), "pica-runner-int4-"));
    const model = join(directory, "tiny");
    await writeTinyCheckpoint(model, "llama-gqa");
    ({ runner, base } = await startRunner([
      "--model",
      model,
      "--port",
      "0",
      "--weights",
      "int4",
      "--block-size",
      "16",
      "--secret",
      SECRET,
      "--cache-dir",
      join(directory, "cache"),
    ]));
  });
  afterAll(async () => {
    if (runner.exitCode === null) runner.kill("SIGKILL");
    await rm(directory, { recursive: true, force: true });
  });

  it("says so in /health and answers as an int4 engine on the same weights does, not as the float one", async () => {
    const health = (await (await fetch(`${base}/health`, { headers: auth })).json()) as Record<string, unknown>;
    expect(health.weights).toEqual({ precision: "int4", block_size: 16 });
    const { config, weights, tokenizer } = await loadCheckpoint(join(directory, "tiny"));
    const promptIds = tokenizer.encode(tokenizer.applyChatTemplate([{ role: "user", content: "hello" }], { addGenerationPrompt: true }), {
      addSpecialTokens: false,
    });
    const greedy = async (quantization: Quantization | null) => {
      const engine = await LlamaEngine.create(config, weights, { quantization });
      try {
        for await (const event of generate(engine, tokenizer, promptIds, { maxNewTokens: 12, temperature: 0 })) if (event.type === "finish") return event.text;
        throw new Error("generation ended without a finish event");
      } finally {
        await engine.dispose();
      }
    };
    const [quantized, float] = [await greedy(quantizationOf("int4", 16)), await greedy(null)];
    expect(quantized).not.toBe(float); // the two differ, so the runner's answer tells which it ran
    const response = await fetch(`${base}/v1/chat/completions`, {
      method: "POST",
      headers: { ...auth, "content-type": "application/json" },
      body: JSON.stringify({ model: "tiny", messages: [{ role: "user", content: "hello" }], max_tokens: 12, temperature: 0 }),
    });
    expect(response.status).toBe(200);
    const body = (await response.json()) as { choices: { message: { content: string } }[] };
    expect(body.choices[0].message.content).toBe(quantized);
  });

  it("refuses a precision it does not know, naming the flag", async () => {
    await expect(startRunner(["--model", join(directory, "tiny"), "--port", "0", "--weights", "int3", "--secret", SECRET])).rejects.toThrow(
      /--weights must be one of f32, int8, int4, got int3/,
    );
  });
});
