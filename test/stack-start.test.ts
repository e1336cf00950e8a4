import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BASE_MODEL_ID } from "../src/constants.ts";

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** Runs `npm start`'s script and resolves with what it printed once the stack is up. */
function start(args: string[]): Promise<{ child: ChildProcess; output: string }> {
  const child = spawn(process.execPath, ["--import", "tsx", "stack/start.ts", ...args], { cwd: join(import.meta.dirname, ".."), stdio: ["ignore", "pipe", "pipe"] });
  return new Promise((resolve, reject) => {
    let output = "";
    const read = (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes("Ctrl-C stops everything.")) resolve({ child, output });
    };
    child.stdout!.on("data", read);
    child.stderr!.on("data", read);
    child.once("exit", (code) => reject(new Error(`the stack exited with ${code}:\n${output}`)));
  });
}

const reachable = (url: string) => fetch(url, { signal: AbortSignal.timeout(2000) }).then(() => true, () => false);

describe("npm start", () => {
  let directory: string;
  let args: string[];
  let edgeUrl: string;
  let runnerUrl: string;
  let running: ChildProcess | null = null;

  beforeAll(async () => {
    directory = await mkdtemp(join(tmpdir(), "pica-stack-"));
    const [edgePort, runnerPort] = [await freePort(), await freePort()];
    edgeUrl = `http://127.0.0.1:${edgePort}`;
    runnerUrl = `http://127.0.0.1:${runnerPort}`;
    args = ["--data-dir", directory, "--edge-port", String(edgePort), "--runner-port", String(runnerPort)];
  });
  afterAll(async () => {
    running?.kill("SIGKILL");
    await rm(directory, { recursive: true, force: true });
  });

  async function stopWithCtrlC(child: ChildProcess): Promise<void> {
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    child.kill("SIGINT");
    expect(await exited).toBe(0);
    // Nothing is left listening: neither the edge (nor workerd beneath wrangler) nor the runner.
    expect(await reachable(`${edgeUrl}/openapi.json`)).toBe(false);
    expect(await reachable(`${runnerUrl}/health`)).toBe(false);
  }

  it("starts the runner and the edge, prints a working key and curl example, stops on Ctrl-C, and reuses its data", async () => {
    const first = await start(args);
    running = first.child;
    const key = /API key: (sk-pica-\S+)/.exec(first.output)![1];
    expect(first.output).toContain(`curl -s ${edgeUrl}/v1/chat/completions -H 'authorization: Bearer ${key}'`);
    const response = await fetch(`${edgeUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify({ model: BASE_MODEL_ID, messages: [{ role: "user", content: "Hello" }], max_tokens: 8, temperature: 0 }),
    });
    expect(response.status).toBe(200);
    const body = (await response.json()) as { usage: { completion_tokens: number }; choices: { message: { content: string } }[] };
    expect(body.usage.completion_tokens).toBe(8);
    expect(body.choices[0].message.content.length).toBeGreaterThan(0);
    await stopWithCtrlC(first.child);

    const second = await start(args);
    running = second.child;
    expect(/API key: (sk-pica-\S+)/.exec(second.output)![1]).toBe(key); // same tenant, same database
    const models = await fetch(`${edgeUrl}/v1/models`, { headers: { authorization: `Bearer ${key}` } });
    expect(models.status).toBe(200);
    await stopWithCtrlC(second.child);
    running = null;
  });
});
