import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LlamaEngine } from "../gpu-runner/engine/llama-engine.ts";
import { generate } from "../gpu-runner/generate/generate.ts";
import { loadCheckpoint } from "../gpu-runner/model/checkpoint.ts";
import { writeTinyCheckpoint } from "../gpu-runner/testing/tiny-checkpoints.ts";

const run = promisify(execFile);

describe("the demo command", () => {
  let directory: string;
  beforeAll(async () => {
    directory = await mkdtemp(join(tmpdir(), "pica-demo-"));
    await writeTinyCheckpoint(directory, "qwen2-bias");
  });
  afterAll(() => rm(directory, { recursive: true, force: true }));

  it("streams the same completion as the library for the same seed", async () => {
    const args = ["tsx", "gpu-runner/demo.ts", "--model", directory, "--prompt", "Hello", "--max-tokens", "12", "--temperature", "0.7", "--seed", "3"];
    const { stdout, stderr } = await run("npx", args, { cwd: join(import.meta.dirname, "..") });
    expect(stderr).toMatch(/loaded Qwen2ForCausalLM \(2 layers, hidden 64, vocab 259\)/);
    expect(stderr).toMatch(/finish: (length|stop), \d+ tokens/);

    const checkpoint = await loadCheckpoint(directory);
    const engine = await LlamaEngine.create(checkpoint.config, checkpoint.weights);
    const prompt = checkpoint.tokenizer.applyChatTemplate([{ role: "user", content: "Hello" }], { addGenerationPrompt: true });
    let text = "";
    for await (const event of generate(engine, checkpoint.tokenizer, checkpoint.tokenizer.encode(prompt, { addSpecialTokens: false }), {
      maxNewTokens: 12,
      temperature: 0.7,
      seed: 3,
    })) {
      if (event.type === "finish") text = event.text;
    }
    await engine.dispose();
    expect(stdout).toBe(`${text}\n`);
  });

  it("exits non-zero with a readable error for a directory that is not a checkpoint", async () => {
    const failed = await run("npx", ["tsx", "gpu-runner/demo.ts", "--model", join(directory, "missing")], { cwd: join(import.meta.dirname, "..") }).then(
      () => null,
      (error: { code: number; stderr: string }) => error,
    );
    expect(failed?.code).toBe(1);
    expect(failed?.stderr).toMatch(/error: cannot read .*missing\/config\.json: ENOENT/);
  });
});
