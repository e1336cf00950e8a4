/**
 * `npm start`: the whole platform on this machine. A runner on the shipped base model (CPU) and
 * the edge under `wrangler dev` (local D1 with the migrations applied, R2, Queues, the limiter),
 * wired to each other with generated secrets; a development tenant and its API key; a working
 * curl example. Ctrl-C stops both (and workerd under wrangler). Everything lives in the data
 * directory, so a second start reuses the database, the blobs, the jobs and the tenant.
 *
 *   npm start -- [--data-dir DIR] [--edge-port P] [--runner-port P] [--model DIR]
 */
import { randomBytes } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { BASE_MODEL_ID } from "../src/constants.ts";
import { startRunner, type RunnerProcess } from "./runner-process.ts";
import { applyLocalMigrations, startWrangler, type WranglerProcess } from "./wrangler-process.ts";

const { values } = parseArgs({
  options: {
    "data-dir": { type: "string", default: join(process.cwd(), ".cache", "stack") },
    "edge-port": { type: "string", default: "8787" },
    "runner-port": { type: "string", default: "8400" },
    model: { type: "string" },
  },
});

interface Secrets {
  RUNNER_SECRET: string;
  ADMIN_TOKEN: string;
}

interface DevTenant {
  tenantId: string;
  key: string; // kept in plain text here only: a local development key
}

function port(name: string, value: string | undefined): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < 1 || parsed > 65535) throw new Error(`--${name} must be a port number, got ${value}`);
  return parsed;
}

/** The stack's secrets: generated on the first start, read back afterwards. */
async function secrets(directory: string): Promise<{ secrets: Secrets; envFile: string }> {
  const envFile = join(directory, "secrets.env");
  const existing = await readFile(envFile, "utf8").catch(() => null);
  if (existing !== null) {
    const entries = Object.fromEntries(existing.split("\n").filter((line) => line.includes("=")).map((line) => line.split("=", 2) as [string, string]));
    if (entries.RUNNER_SECRET && entries.ADMIN_TOKEN) return { secrets: entries as unknown as Secrets, envFile };
  }
  const created: Secrets = { RUNNER_SECRET: randomBytes(32).toString("hex"), ADMIN_TOKEN: randomBytes(32).toString("hex") };
  await writeFile(envFile, `RUNNER_SECRET=${created.RUNNER_SECRET}\nADMIN_TOKEN=${created.ADMIN_TOKEN}\n`, { mode: 0o600 });
  return { secrets: created, envFile };
}

/** The development tenant: the saved one if its key still works, else a new one. */
async function devTenant(directory: string, edgeUrl: string, adminToken: string): Promise<DevTenant> {
  const file = join(directory, "dev-tenant.json");
  const saved = await readFile(file, "utf8").then((text) => JSON.parse(text) as DevTenant, () => null);
  if (saved !== null) {
    const check = await fetch(`${edgeUrl}/v1/models`, { headers: { authorization: `Bearer ${saved.key}` } });
    if (check.ok) return saved;
  }
  const admin = { authorization: `Bearer ${adminToken}`, "content-type": "application/json" };
  const tenant = await fetch(`${edgeUrl}/admin/tenants`, { method: "POST", headers: admin, body: JSON.stringify({ name: "development" }) });
  if (!tenant.ok) throw new Error(`creating the development tenant failed: ${tenant.status} ${await tenant.text()}`);
  const { id } = (await tenant.json()) as { id: string };
  const issued = await fetch(`${edgeUrl}/admin/tenants/${id}/keys`, { method: "POST", headers: admin, body: JSON.stringify({ name: "development", scopes: ["admin"] }) });
  if (!issued.ok) throw new Error(`creating the development key failed: ${issued.status} ${await issued.text()}`);
  const created: DevTenant = { tenantId: id, key: ((await issued.json()) as { key: string }).key };
  await writeFile(file, `${JSON.stringify(created, null, 2)}\n`, { mode: 0o600 });
  return created;
}

async function main(): Promise<void> {
  const directory = values["data-dir"]!;
  const edgePort = port("edge-port", values["edge-port"]);
  const runnerPort = port("runner-port", values["runner-port"]);
  await mkdir(join(directory, "wrangler"), { recursive: true });
  const { secrets: keys, envFile } = await secrets(directory);
  const edgeUrl = `http://127.0.0.1:${edgePort}`;
  const runnerUrl = `http://127.0.0.1:${runnerPort}`;

  let runner: RunnerProcess | null = null;
  let edge: WranglerProcess | null = null;
  let stopping = false;
  const stop = async (code: number) => {
    if (stopping) return;
    stopping = true;
    await Promise.all([edge?.stop(), runner?.stop()]);
    process.exit(code);
  };
  process.on("SIGINT", () => void stop(0));
  process.on("SIGTERM", () => void stop(0));

  try {
    console.error("applying the database migrations…");
    await applyLocalMigrations(join(directory, "wrangler"));
    console.error("starting the runner (shipped model, CPU)…");
    runner = await startRunner({
      port: runnerPort,
      args: [
        ...(values.model !== undefined ? ["--model", values.model] : []),
        "--host", "127.0.0.1",
        "--edge-url", edgeUrl,
        "--public-url", runnerUrl,
        "--jobs-dir", join(directory, "jobs"),
        "--adapter-dir", join(directory, "adapters"),
      ],
      env: { RUNNER_SECRET: keys.RUNNER_SECRET },
    });
    console.error("starting the edge (wrangler dev)…");
    edge = await startWrangler({ port: edgePort, persistTo: join(directory, "wrangler"), envFile, vars: { RUNNER_URLS: runner.url, PUBLIC_URL: edgeUrl } });
    const tenant = await devTenant(directory, edge.url, keys.ADMIN_TOKEN);
    console.log(
      [
        "",
        `PiCa platform running: ${edge.url} (runner ${runner.url}, data in ${directory})`,
        `development tenant ${tenant.tenantId}, API key: ${tenant.key}`,
        `API description: ${edge.url}/docs`,
        "",
        `curl -s ${edge.url}/v1/chat/completions -H 'authorization: Bearer ${tenant.key}' -H 'content-type: application/json' \\`,
        `  -d '{"model": "${BASE_MODEL_ID}", "messages": [{"role": "user", "content": "Tell me a short story."}], "max_tokens": 60}'`,
        "",
        "Ctrl-C stops everything.",
      ].join("\n"),
    );
  } catch (error) {
    console.error(`error: ${(error as Error).message}`);
    await stop(1);
  }
}

void main();
