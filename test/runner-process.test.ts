import { spawn, type ChildProcess } from "node:child_process";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DirectoryAdapterStore } from "../gpu-runner/adapters/adapter-store.ts";
import { loadCheckpoint } from "../gpu-runner/model/checkpoint.ts";
import { serializeAdapter } from "../gpu-runner/pica/adapter-format.ts";
import { loadOrComputeBasis } from "../gpu-runner/pica/basis.ts";
import { randomAdapter } from "../gpu-runner/testing/random-adapters.ts";
import { writeTinyCheckpoint } from "../gpu-runner/testing/tiny-checkpoints.ts";

describe("the runner process", () => {
  let directory: string;
  let runner: ChildProcess;
  let base: string;

  beforeAll(async () => {
    directory = await mkdtemp(join(tmpdir(), "pica-runner-"));
    const model = join(directory, "tiny");
    const adapters = join(directory, "adapters");
    await writeTinyCheckpoint(model, "llama-gqa");
    await mkdir(adapters);
    const { config, weights } = await loadCheckpoint(model);
    const { basis } = await loadOrComputeBasis(model, config, weights, { rMax: 8 });
    const store = new DirectoryAdapterStore(adapters);
    await store.write("tenant-x", serializeAdapter(randomAdapter(config, basis, { rank: 4, seed: 9 })));
    const corrupt = serializeAdapter(randomAdapter(config, basis, { rank: 4, seed: 10 }));
    corrupt[corrupt.length - 3] ^= 0x40;
    await store.write("tenant-corrupt", corrupt);

    runner = spawn(process.execPath, ["--import", "tsx", "gpu-runner/server/main.ts", "--model", model, "--port", "0", "--adapter-dir", adapters, "--rank", "4", "--r-max", "8", "--max-batch", "4"], {
      cwd: join(import.meta.dirname, ".."),
      stdio: ["ignore", "pipe", "pipe"],
    });
    base = await new Promise<string>((resolve, reject) => {
      let output = "";
      runner.stdout!.on("data", (chunk: Buffer) => {
        output += chunk.toString();
        const match = /listening on (http:\/\/[\d.]+:\d+)/.exec(output);
        if (match) resolve(match[1]);
      });
      runner.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()));
      runner.on("exit", (code) => reject(new Error(`runner exited with ${code}: ${output}`)));
    });
  });

  afterAll(async () => {
    if (runner.exitCode === null) runner.kill("SIGKILL");
    await rm(directory, { recursive: true, force: true });
  });

  const chat = (model: string) =>
    fetch(`${base}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model, messages: [{ role: "user", content: "hello" }], max_tokens: 5, temperature: 0 }),
    });

  it("serves the base model and loads a stored adapter on first use", async () => {
    expect(await (await fetch(`${base}/health`)).json()).toMatchObject({ status: "ok", model: "tiny" });
    expect((await chat("tiny")).status).toBe(200);
    const response = await chat("tenant-x");
    expect(response.status).toBe(200);
    const body = (await response.json()) as { usage: { completion_tokens: number } };
    expect(body.usage.completion_tokens).toBe(5);
  });

  it("answers an unknown adapter with 404 and a corrupted one with a readable 422", async () => {
    const missing = await chat("tenant-missing");
    expect(missing.status).toBe(404);
    const corrupt = await chat("tenant-corrupt");
    expect(corrupt.status).toBe(422);
    expect(((await corrupt.json()) as { error: { message: string } }).error.message).toMatch(/tenant-corrupt could not be loaded: .*sha256|tensors hash/);
  });

  it("shuts down cleanly on SIGTERM", async () => {
    const exited = new Promise<number | null>((resolve) => runner.on("exit", (code) => resolve(code)));
    runner.kill("SIGTERM");
    expect(await exited).toBe(0);
  });
});
