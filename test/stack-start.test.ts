import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
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

  const headers = (text: string) => text.match(/^--- .* started .* ---$/gm) ?? [];
  const ports = { edge: 0, runner: 0 };
  const logs = { runner: "", edge: "" };
  let firstKey = "";
  let secondTenantKey = "";

  it("starts the runner and the edge; prints a working key and curl example, its log files and a tenant command that works as printed; stops on Ctrl-C", async () => {
    Object.assign(ports, { edge: await freePort(), runner: await freePort() });
    Object.assign(logs, { runner: join(directory, "logs", `runner-${ports.runner}.log`), edge: join(directory, "logs", "edge.log") });
    running = await startStack(directory, ports);
    const first = running;
    firstKey = first.key;
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

    // The console is where the banner says, and signs in with the printed key.
    expect(first.output()).toContain(`console: ${first.edgeUrl}/console (sign in with the API key)`);
    const signIn = await fetch(`${first.edgeUrl}/console/sign-in`, {
      method: "POST",
      headers: { origin: first.edgeUrl, "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ api_key: first.key }),
      redirect: "manual",
    });
    expect(signIn.status).toBe(303);
    expect(signIn.headers.get("set-cookie")).toMatch(/^pica_session=v2\./);
    expect(first.output()).toContain(`logs: ${logs.runner} and ${logs.edge} (npm start -- --logs also prints them here)`);
    expect(first.output()).not.toContain(`[runner-${ports.runner}]`); // nothing echoed without --logs
    const adminLine = /^admin token: ADMIN_TOKEN in (\S+); another tenant and its key: (.+)$/m.exec(first.output());
    expect(adminLine?.[1]).toBe(join(directory, "secrets.env"));
    expect(adminLine?.[2]).toBe(`npx tsx stack/create-tenant.ts --name NAME --data-dir ${directory} --url ${first.edgeUrl}`);
    const [command, ...args] = adminLine![2].replace("NAME", "second").split(" ");
    const { stdout } = await promisify(execFile)(command, args, { cwd: join(import.meta.dirname, "..") });
    const created = /^tenant (tenant_\S+) \(second\), scopes inference, fine_tuning, API key: (sk-pica-\S+)$/m.exec(stdout);
    expect(created?.[1]).toMatch(/^tenant_/);
    expect(created![1]).not.toBe(/^development tenant (tenant_\S+),/m.exec(first.output())?.[1]);
    secondTenantKey = created![2];
    expect((await fetch(`${first.edgeUrl}/v1/models`, { headers: { authorization: `Bearer ${secondTenantKey}` } })).status).toBe(200);
    await stopWithCtrlC(first);

    const runnerLog = await readFile(logs.runner, "utf8");
    expect(headers(runnerLog)).toHaveLength(1);
    expect(runnerLog).toContain(`runner listening on http://127.0.0.1:${ports.runner}`);
    expect(headers(await readFile(logs.edge, "utf8"))).toEqual([expect.stringMatching(/^--- edge \(pid \d+\) started /)]);
  });

  it("starts again on the same data, with --logs echoing both processes; when the runner dies, everything stops with its last lines", async () => {
    running = await startStack(directory, ports, ["--logs"]);
    const second = running;
    expect(second.key).toBe(firstKey); // same tenant, same database
    expect((await fetch(`${second.edgeUrl}/v1/models`, { headers: { authorization: `Bearer ${second.key}` } })).status).toBe(200);
    expect((await fetch(`${second.edgeUrl}/v1/models`, { headers: { authorization: `Bearer ${secondTenantKey}` } })).status).toBe(200);
    expect(second.output()).toContain(`logs: ${logs.runner} and ${logs.edge} (also printed here)`);
    expect(second.output()).toContain(`[runner-${ports.runner}] runner listening on http://127.0.0.1:${ports.runner}`);

    // A crash: the stack says so, with the runner's last lines and its log, and stops the edge too.
    const runnerHeaders = headers(await readFile(logs.runner, "utf8"));
    expect(runnerHeaders).toHaveLength(2); // appended, the first run's lines kept
    const pid = Number(/\(pid (\d+)\)/.exec(runnerHeaders[1])![1]);
    const exited = new Promise<number | null>((resolve) => second.child.once("close", resolve)); // "close": its output all read
    process.kill(pid, "SIGKILL");
    expect(await exited).toBe(1);
    expect(second.output()).toContain(`error: the runner exited on its own (SIGKILL); its last lines:\n`);
    expect(second.output()).toContain(`runner listening on http://127.0.0.1:${ports.runner}`);
    expect(second.output()).toContain(`full log: ${logs.runner}`);
    expect(await reachable(`${second.edgeUrl}/openapi.json`)).toBe(false);
    running = null;
  });
});
