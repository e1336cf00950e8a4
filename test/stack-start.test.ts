import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BASE_MODEL_ID } from "../src/constants.ts";
import { freePort, startStack, type StackProcess } from "../stack/stack-process.ts";

const reachable = (url: string) =>
  fetch(url, { signal: AbortSignal.timeout(2000) }).then(
    () => true,
    () => false,
  );

describe("npm start", () => {
  let directory: string;
  let running: StackProcess | null = null;
  beforeAll(async () => {
    directory = await mkdtemp(join(tmpdir(), "pica-stack-"));
  });
  afterAll(async () => {
    running?.child.kill("SIGKILL");
    await rm(directory, { recursive: true, force: true });
  });

  /** Ctrl-C: the stack exits 0 and nothing is left listening (neither the edge, workerd nor the runner). */
  async function stopWithCtrlC(stack: StackProcess): Promise<void> {
    expect(await stack.stop()).toBe(0);
    expect(await reachable(`${stack.edgeUrl}/openapi.json`)).toBe(false);
    expect(await reachable(`${stack.runnerUrl}/health`)).toBe(false);
  }

  it("starts the runner and the edge, prints a working key and curl example, stops on Ctrl-C, and reuses its data", async () => {
    const ports = { edge: await freePort(), runner: await freePort() };
    running = await startStack(directory, ports);
    const first = running;
    expect(first.output()).toContain(`curl -s ${first.edgeUrl}/v1/chat/completions -H 'authorization: Bearer ${first.key}'`);
    const response = await fetch(`${first.edgeUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${first.key}`, "content-type": "application/json" },
      body: JSON.stringify({ model: BASE_MODEL_ID, messages: [{ role: "user", content: "Hello" }], max_tokens: 8, temperature: 0 }),
    });
    expect(response.status).toBe(200);
    const body = (await response.json()) as { usage: { completion_tokens: number }; choices: { message: { content: string } }[] };
    expect(body.usage.completion_tokens).toBe(8);
    expect(body.choices[0].message.content.length).toBeGreaterThan(0);
    await stopWithCtrlC(first);

    running = await startStack(directory, ports);
    const second = running;
    expect(second.key).toBe(first.key); // same tenant, same database
    expect((await fetch(`${second.edgeUrl}/v1/models`, { headers: { authorization: `Bearer ${second.key}` } })).status).toBe(200);
    await stopWithCtrlC(second);
    running = null;
  });
});
