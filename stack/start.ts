/**
 * `npm start`: the whole platform on this machine. A runner on the shipped base model (CPU) and
 * the edge under `wrangler dev` (local D1 with the migrations applied, R2, Queues, the limiter),
 * wired to each other with generated secrets; a development tenant and its API key; a working
 * curl example. Ctrl-C stops both (and workerd under wrangler). Everything lives in the data
 * directory, so a second start reuses the database, the blobs, the jobs and the tenant.
 *
 *   npm start -- [--data-dir DIR] [--edge-port P] [--runner-port P] [--model DIR]
 */
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { BASE_MODEL_ID } from "../src/constants.ts";
import { createTenantWithKey } from "./admin.ts";
import { startCluster, type Cluster } from "./cluster.ts";

const { values } = parseArgs({
  options: {
    "data-dir": { type: "string", default: join(process.cwd(), ".cache", "stack") },
    "edge-port": { type: "string", default: "8787" },
    "runner-port": { type: "string", default: "8400" },
    model: { type: "string" },
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
      log: (message) => console.error(message),
    });
    const tenant = await devTenant(directory, cluster.edgeUrl, cluster.secrets.ADMIN_TOKEN);
    const { edgeUrl } = cluster;
    console.log(
      [
        "",
        `PiCa platform running: ${edgeUrl} (runner ${cluster.runners[0].url}, which needs RUNNER_SECRET of ${cluster.secretsFile}; data in ${directory})`,
        `development tenant ${tenant.tenantId}, API key: ${tenant.key}`,
        `API description: ${edgeUrl}/docs`,
        "",
        `curl -s ${edgeUrl}/v1/chat/completions -H 'authorization: Bearer ${tenant.key}' -H 'content-type: application/json' \\`,
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
