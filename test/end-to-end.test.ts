import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execFile } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { promisify } from "node:util";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { classifyTask, formatTask, toChatJsonl } from "../bench/quality-tasks.ts";
import { parseSafetensors } from "../gpu-runner/checkpoint/safetensors.ts";
import { parseModelConfig } from "../gpu-runner/model/config.ts";
import { SHIPPED_MODEL_DIRECTORY } from "../gpu-runner/model/shipped-model.ts";
import { linearShapes } from "../gpu-runner/model/weights.ts";
import { runEndToEnd } from "../stack/end-to-end.ts";
import { stackAdminToken, stackRunnerSecret, startStack, type StackProcess } from "../stack/stack-process.ts";

describe("the platform end to end", () => {
  let directory: string;
  let stack: StackProcess;
  beforeAll(async () => {
    directory = await mkdtemp(join(tmpdir(), "pica-e2e-"));
    stack = await startStack(directory);
  });
  afterAll(async () => {
    await stack?.stop();
    await rm(directory, { recursive: true, force: true });
  });

  it("turns a tenant's JSONL into an adapter that does what the base cannot, through the public API with real clients", async () => {
    const result = await runEndToEnd({
      edgeUrl: stack.edgeUrl,
      key: stack.key,
      adminToken: await stackAdminToken(directory),
      log: (message) => console.log(message),
    });
    expect(result.client_failures).toBe(0);
    expect(result.isolation_violations).toBe(0);
    expect(result.base_accuracy).toBeLessThan(0.2);
    expect(result.adapter_minus_base_accuracy).toBeGreaterThanOrEqual(0.5);
    expect(result.hf_client_agreement).toBe(1); // both clients, same greedy answers
    expect(result.job_events).toBeGreaterThan(5);
    expect(result.usage_completion_tokens).toBeGreaterThan(0);
    adapter = result.fine_tuned_model;
  }, 600_000);

  let adapter = "";
  /** Runs the `pica` command (through its bin script) against the stack. */
  async function pica(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
    const base = { ...process.env, PICA_URL: stack.edgeUrl, PICA_API_KEY: stack.key, PICA_CONFIG: join(directory, "cli-config.json"), ...env };
    try {
      const { stdout, stderr } = await promisify(execFile)(process.execPath, ["cli/pica.mjs", ...args], { cwd: join(import.meta.dirname, ".."), env: base });
      return { code: 0, stdout, stderr };
    } catch (error) {
      const failed = error as { code: number; stdout: string; stderr: string };
      return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr };
    }
  }

  it("the pica CLI lists and watches the job, chats with the adapter, names bad lines, and moves adapters as PEFT", async () => {
    expect(adapter).not.toBe("");
    const jobId = adapter.split(":").at(-1)!;
    expect((await pica(["jobs", "list"])).stdout).toContain(adapter);
    // Models are the base and fine-tuned ones; a job's checkpoints (the newest few it keeps) are listed under it.
    const models = (await pica(["models", "list"])).stdout;
    expect(models).toContain(adapter);
    expect(models).not.toContain(":ckpt-step-");
    const checkpoints = await pica(["jobs", "checkpoints", jobId]);
    expect(checkpoints.code).toBe(0);
    const checkpointLines = checkpoints.stdout.split("\n").filter((line) => line !== "");
    expect(checkpointLines.length).toBeLessThanOrEqual(3);
    for (const line of checkpointLines) expect(line).toContain(`${adapter}:ckpt-step-`);
    const watched = await pica(["jobs", "watch", jobId]);
    expect(watched.code).toBe(0);
    expect(watched.stdout).toMatch(new RegExp(`${jobId} succeeded  \\[#{24}\\]  step (\\d+)/\\1`));
    expect(watched.stdout).toContain(`fine-tuned model: ${adapter}`);

    const prompt = classifyTask({ train: 240, eval: 40 }).eval[0].prompt;
    const openai = new OpenAI({ baseURL: `${stack.edgeUrl}/v1`, apiKey: stack.key, maxRetries: 0 });
    const expected = (await openai.chat.completions.create({ model: adapter, messages: [{ role: "user", content: prompt }], max_tokens: 8, temperature: 0 }))
      .choices[0].message.content;
    expect((await pica(["chat", "--model", adapter, "--max-tokens", "8", "--temperature", "0", prompt])).stdout).toBe(`${expected}\n`);

    const bad = join(directory, "bad.jsonl");
    await writeFile(bad, [toChatJsonl(classifyTask({ train: 12, eval: 1 }).train), "not json", '{"messages": []}'].join("\n"));
    const refused = await pica(["files", "upload", bad]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/error \(400\): .*line 13.*line 14/s);

    // Export: PEFT's LoRA form of the job's rank-16 adapter on the shipped model (6 layers, hidden
    // 256, 2 KV heads of 64, MLP 704): lora_A = P[:16] [16, in], lora_B = M [out, 16], alpha = r.
    const exported = join(directory, "exported");
    expect((await pica(["adapters", "export", adapter, "--out", exported])).code).toBe(0);
    const modules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];
    expect(JSON.parse(await readFile(join(exported, "adapter_config.json"), "utf8"))).toMatchObject({
      peft_type: "LORA",
      task_type: "CAUSAL_LM",
      base_model_name_or_path: "pica-base-4m",
      r: 16,
      lora_alpha: 16,
      target_modules: modules,
      fan_in_fan_out: false,
      use_rslora: false,
      use_dora: false,
    });
    // [out, in] of each module, from the shipped model's config (hidden 256, k and v 128, MLP 704).
    const outIn = linearShapes(parseModelConfig(JSON.parse(await readFile(join(SHIPPED_MODEL_DIRECTORY, "config.json"), "utf8")))) as Record<
      string,
      readonly [number, number]
    >;
    expect(outIn.k_proj).toEqual([128, 256]);
    const expectedShapes = new Map<string, number[]>();
    for (let layer = 0; layer < 6; layer++) {
      for (const module of modules) {
        // q, k, v and o are the attention's; the rest the MLP's.
        const prefix = `base_model.model.model.layers.${layer}.${modules.indexOf(module) < 4 ? "self_attn" : "mlp"}.${module}`;
        expectedShapes.set(`${prefix}.lora_A.weight`, [16, outIn[module][1]]);
        expectedShapes.set(`${prefix}.lora_B.weight`, [outIn[module][0], 16]);
      }
    }
    const tensorsOf = async (dir: string) => parseSafetensors(new Uint8Array(await readFile(join(dir, "adapter_model.safetensors"))), dir).tensors;
    const tensors = await tensorsOf(exported);
    expect(new Map([...tensors].map(([name, tensor]) => [name, tensor.shape]))).toEqual(expectedShapes);
    expect([...tensors.values()].every((tensor) => tensor.dtype === "F32")).toBe(true);
    // A trained adapter: no lora_B is still all zero.
    const untrained = [...tensors].filter(([name, tensor]) => name.endsWith("lora_B.weight") && tensor.data.every((v) => v === 0));
    expect(untrained.map(([name]) => name)).toEqual([]);

    // Import: the projection onto the basis is exact (lora_A is the basis), so the copy exports to
    // the same tensors and answers exactly as the original.
    const imported = await pica(["adapters", "import", "--name", "copy", exported]);
    expect(imported.code).toBe(0);
    const line = /^(peft:\S+copy\S*) {2}(\{.*\})$/m.exec(imported.stdout);
    expect(line, imported.stdout).not.toBeNull();
    const [, copy, reportText] = line!;
    const report = JSON.parse(reportText) as { rank: number; sharing: string; lora_r: number; lora_alpha: number; max_projection_error: number };
    expect(report).toMatchObject({ rank: 16, sharing: "shared", lora_r: 16, lora_alpha: 16, base_model_name_or_path: "pica-base-4m" });
    expect(report.max_projection_error).toBeLessThan(1e-5);
    const again = join(directory, "exported-again");
    expect((await pica(["adapters", "export", copy, "--out", again])).code).toBe(0);
    const roundTripped = await tensorsOf(again);
    expect([...roundTripped.keys()].sort()).toEqual([...tensors.keys()].sort());
    for (const [name, tensor] of tensors) {
      const other = roundTripped.get(name)!;
      let largest = 0;
      let worst = 0;
      tensor.data.forEach((value, i) => {
        largest = Math.max(largest, Math.abs(Number(value)));
        worst = Math.max(worst, Math.abs(Number(value) - Number(other.data[i])));
      });
      expect(worst, name).toBeLessThanOrEqual(1e-5 * largest);
    }
    expect((await pica(["chat", "--model", copy, "--max-tokens", "8", "--temperature", "0", prompt])).stdout).toBe(`${expected}\n`);

    expect((await pica(["configure", "--url", stack.edgeUrl, "--key", stack.key])).code).toBe(0);
    const configured = await pica(["adapters", "list"], { PICA_URL: "", PICA_API_KEY: "" });
    expect(configured.stdout).toContain(adapter);
  }, 120_000);

  it("estimates a job's trained tokens and seconds within 30% of what the job then does, at the rate the runner measured", async () => {
    expect(adapter).not.toBe(""); // the first job ran: the runner has measured its rate
    const edge = (path: string, init: RequestInit = {}, bearer = stack.key) =>
      fetch(`${stack.edgeUrl}${path}`, { ...init, headers: { authorization: `Bearer ${bearer}`, ...init.headers } });
    const secret = await stackRunnerSecret(directory);
    // The runner's next heartbeat carries its tokenizer's template tokens and the rate of its finished job.
    type Figures = { template_tokens: Record<string, number>; rate: { tokens_per_second: number; jobs: number } | null };
    let figures: Figures | null = null;
    for (let tries = 0; figures?.rate == null; tries++) {
      if (tries > 0) await new Promise((resolve) => setTimeout(resolve, 500));
      const runners = (await (await edge("/internal/runners", {}, secret)).json()) as { data: { training: Figures | null }[] };
      figures = runners.data[0]?.training ?? null;
      if (tries > 60) throw new Error(`no training rate reported: ${JSON.stringify(runners)}`);
    }
    expect(figures.template_tokens).toEqual({ conversation: 20, turn: 21, system: 10, prompt_completion: 0 }); // the shipped model's ChatML, byte by byte
    expect(figures.rate!.jobs).toBeGreaterThanOrEqual(1);

    const form = new FormData();
    form.set("purpose", "fine-tune");
    form.set("file", new File([toChatJsonl(formatTask({ train: 160, eval: 0 }).train)], "format.jsonl"));
    const file = (await (await edge("/v1/files", { method: "POST", body: form })).json()) as { id: string };
    const created = (await (
      await edge("/v1/fine_tuning/jobs", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: "pica-base-4m", training_file: file.id, hyperparameters: { n_epochs: 4, batch_size: 16 } }),
      })
    ).json()) as { id: string; estimated_tokens: number; estimated_seconds: number };
    let job = { status: "", trained_tokens: null as number | null };
    while (!["succeeded", "failed", "cancelled"].includes(job.status)) {
      await new Promise((resolve) => setTimeout(resolve, 500));
      job = (await (await edge(`/v1/fine_tuning/jobs/${created.id}`)).json()) as typeof job;
    }
    expect(job.status).toBe("succeeded");
    // How long it ran: from the runner's "started" event to its "succeeded" one (seconds).
    const events = (await (await edge(`/v1/fine_tuning/jobs/${created.id}/events?limit=100`)).json()) as {
      data: { created_at: number; data: { status?: string } | null }[];
    };
    const at = (status: string) => events.data.find((event) => event.data?.status === status)?.created_at;
    const ran = at("succeeded")! - at("running")!;
    expect(ran).toBeGreaterThan(0);
    const tokens = job.trained_tokens! / created.estimated_tokens;
    const seconds = ran / created.estimated_seconds;
    console.log(`estimate: ${created.estimated_tokens} tokens, ${created.estimated_seconds} s; the job: ${job.trained_tokens} tokens, ${ran} s`);
    expect(tokens).toBeGreaterThanOrEqual(0.7);
    expect(tokens).toBeLessThanOrEqual(1.3);
    expect(seconds).toBeGreaterThanOrEqual(0.7);
    expect(seconds).toBeLessThanOrEqual(1.3);
  }, 180_000);
});
