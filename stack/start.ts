/**
 * `npm start`: the whole platform on this machine. A runner on the shipped base model (CPU) and
 * the edge under `wrangler dev` (local D1 with the migrations applied, R2, Queues, the limiter),
 * wired to each other with generated secrets; a development tenant and its API key; a working
 * curl example. Ctrl-C stops both (and workerd under wrangler). Everything lives in the data
 * directory, so a second start reuses the database, the blobs, the jobs and the tenant. What the
 * runner and the edge print goes to `<data dir>/logs/runner-<port>.log` and `edge.log`; `--logs`
 * also prints it here, each line after the process's name. If either process ends on its own,
 * its last lines are printed and everything stops.
 *
 *   npm start -- [--data-dir DIR] [--edge-port P] [--runner-port P] [--model DIR] [--weights f32|int8|int4] [--logs]
 */
import type { ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { join, relative } from "node:path";
import { parseArgs } from "node:util";
import { BASE_MODEL_ID } from "../src/constants.ts";
import { CONSOLE_PATHS } from "../src/protocol/console.ts";
import { createTenantWithKey } from "./admin.ts";
import { DEFAULT_DATA_DIR, DEFAULT_EDGE_PORT, logsDir, startCluster, type Cluster } from "./cluster.ts";

const { values } = parseArgs({
  options: {
    "data-dir": { type: "string", default: DEFAULT_DATA_DIR },
    "edge-port": { type: "string", default: String(DEFAULT_EDGE_PORT) },
    "runner-port": { type: "string", default: "8400" },
    model: { type: "string" },
    weights: { type: "string" },
    logs: { type: "boolean", default: false },
  },
});

interface DevTenant {
  tenantId: string;
  key: string; // kept in plain text here only: a local development key
}

function port(name: string, value: string | undefined): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < 1 || parsed > 65535) throw new Error(`--${name} must be a port number, got ${value}`);
  return parsed;
}

/** A path as short as it can be said: relative to the working directory when it lies inside it. */
function shortPath(path: string): string {
  const inside = relative(process.cwd(), path);
  return inside.startsWith("..") || inside === "" ? path : inside;
}

/** The command that creates another tenant on this stack (its flags only where they differ from the defaults). */
function createTenantCommand(directory: string, edgeUrl: string): string {
  const flags = [
    directory === DEFAULT_DATA_DIR ? "" : ` --data-dir ${shortPath(directory)}`,
    edgeUrl === `http://127.0.0.1:${DEFAULT_EDGE_PORT}` ? "" : ` --url ${edgeUrl}`,
  ];
  return `npx tsx stack/create-tenant.ts --name NAME${flags.join("")}`;
}

/** The development tenant: the saved one if its key still works, else a new one. */
async function devTenant(directory: string, edgeUrl: string, adminToken: string): Promise<DevTenant> {
  const file = join(directory, "dev-tenant.json");
  const saved = await readFile(file, "utf8").then(
    (text) => JSON.parse(text) as DevTenant,
    () => null,
  );
  if (saved !== null) {
    const check = await fetch(`${edgeUrl}/v1/models`, { headers: { authorization: `Bearer ${saved.key}` } });
    if (check.ok) return saved;
  }
  const created: DevTenant = await createTenantWithKey(edgeUrl, adminToken, { name: "development" }, ["admin"]);
  await writeFile(file, `${JSON.stringify(created, null, 2)}\n`, { mode: 0o600 });
  return created;
}

async function main(): Promise<void> {
  const directory = values["data-dir"]!;
  let cluster: Cluster | null = null;
  let stopping = false;
  const stop = async (code: number) => {
    if (stopping) return;
    stopping = true;
    await cluster?.stop();
    process.exit(code);
  };
  process.on("SIGINT", () => void stop(0));
  process.on("SIGTERM", () => void stop(0));

  try {
    cluster = await startCluster({
      dataDir: directory,
      edgePort: port("edge-port", values["edge-port"]),
      runnerPorts: [port("runner-port", values["runner-port"])],
      model: values.model,
      weights: values.weights,
      log: (message) => console.error(message),
      echoLogs: values.logs,
    });
    const running = cluster;
    const runner = running.runners[0];
    const watch = (name: string, child: ChildProcess | undefined, logFile: string, lastLines: () => string) =>
      child?.once("exit", (code, signal) => {
        if (stopping) return;
        console.error(`\nerror: the ${name} exited on its own (${code ?? signal}); its last lines:\n${lastLines()}\nfull log: ${shortPath(logFile)}`);
        void stop(1);
      });
    watch("runner", runner.process()?.child, runner.logFile, () => runner.process()?.recentOutput() ?? "");
    watch("edge", running.edge.child, running.edgeLogFile, () => running.edge.recentOutput());

    const tenant = await devTenant(directory, running.edgeUrl, running.secrets.ADMIN_TOKEN);
    const { edgeUrl } = running;
    const secretsFile = shortPath(running.secretsFile);
    console.log(
      [
        "",
        `PiCa platform running: ${edgeUrl} (runner ${runner.url}, which needs RUNNER_SECRET of ${secretsFile}; data in ${shortPath(directory)})`,
        `development tenant ${tenant.tenantId}, API key: ${tenant.key}`,
        `console: ${edgeUrl}${CONSOLE_PATHS.root} (sign in with the API key)`,
        `API description: ${edgeUrl}/docs`,
        `logs: ${shortPath(runner.logFile)} and ${shortPath(running.edgeLogFile)}${values.logs ? " (also printed here)" : " (npm start -- --logs also prints them here)"}`,
        `admin token: ADMIN_TOKEN in ${secretsFile}; another tenant and its key: ${createTenantCommand(directory, edgeUrl)}`,
        "",
        `curl -s ${edgeUrl}/v1/chat/completions -H 'authorization: Bearer ${tenant.key}' -H 'content-type: application/json' \\`,
        `  -d '{"model": "${BASE_MODEL_ID}", "messages": [{"role": "user", "content": "Tell me a short story."}], "max_tokens": 60}'`,
        "",
        "Ctrl-C stops everything.",
      ].join("\n"),
    );
  } catch (error) {
    console.error(`error: ${(error as Error).message}`);
    if (existsSync(logsDir(directory))) console.error(`the runner's and the edge's logs: ${shortPath(logsDir(directory))}`);
    await stop(1);
  }
}

void main();
