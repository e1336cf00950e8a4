/**
 * The local platform as parts that can be stopped one by one: the edge under `wrangler dev` and
 * any number of runner processes on fixed ports, wired with shared secrets kept in the data
 * directory. `npm start` runs it with one runner; the load and chaos benchmarks and the fault
 * tests use it to kill a runner (SIGKILL, as a crash would) and start it again on the same port,
 * jobs directory and identity. Each process writes what it prints to a log file under
 * `<data directory>/logs` (`edge.log`, `runner-<port>.log`), appended to across starts.
 */
import { randomBytes } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { HEARTBEAT_INTERVAL_SECONDS } from "../src/protocol/heartbeat.ts";
import { runnerAuthorization } from "../src/protocol/runner.ts";
import { startRunner, type RunnerProcess } from "./runner-process.ts";
import { applyLocalMigrations, freePort, startWrangler, type WranglerProcess } from "./wrangler-process.ts";

/** Where `npm start` and the scripts beside it keep the stack's data unless told otherwise. */
export const DEFAULT_DATA_DIR = join(process.cwd(), ".cache", "stack");
/** The edge's port under `npm start` unless told otherwise. */
export const DEFAULT_EDGE_PORT = 8787;

/** The stack's shared secrets, generated on the first start and read back afterwards. */
export interface StackSecrets {
  RUNNER_SECRET: string;
  ADMIN_TOKEN: string;
  SESSION_SECRET: string; // signs the console's session cookies
}
const SECRET_NAMES: (keyof StackSecrets)[] = ["RUNNER_SECRET", "ADMIN_TOKEN", "SESSION_SECRET"];

export interface ClusterOptions {
  dataDir: string; // secrets, the edge's local state, each runner's jobs
  runners?: number; // default 1
  edgePort?: number; // default: a free port
  runnerPorts?: number[]; // default: free ports
  model?: string; // the runner's model directory; default the shipped model
  weights?: string; // the runners' base weight precision (f32, int8, int4); default f32
  runnerArgs?: string[]; // more runner flags, for every runner
  log?: (message: string) => void;
  echoLogs?: boolean; // also print every process's output here, each line after its name; default false
}

/** One runner of the cluster: its fixed address, and a crash and a restart on demand. */
export interface ClusterRunner {
  url: string;
  jobsDir: string;
  logFile: string; // everything it printed, over all its starts
  process(): RunnerProcess | null; // null while it is down
  /** SIGKILL, as a crash or a lost machine would; resolves once the process is gone. */
  kill(): Promise<void>;
  /** Starts it again on the same port, jobs directory and secret. */
  start(): Promise<void>;
  /** SIGTERM with its grace period (checkpoints a running job). */
  stop(): Promise<void>;
}

export interface Cluster {
  edge: WranglerProcess;
  edgeUrl: string;
  edgeLogFile: string;
  secrets: StackSecrets;
  secretsFile: string;
  runners: ClusterRunner[];
  stop(): Promise<void>;
}

/** The data directory's secrets, as the first start wrote them; null before that. */
export async function readStackSecrets(dataDir: string): Promise<StackSecrets | null> {
  const entries = await readSecretEntries(dataDir);
  return SECRET_NAMES.every((name) => entries[name]) ? (entries as StackSecrets) : null;
}

async function readSecretEntries(dataDir: string): Promise<Partial<StackSecrets>> {
  const text = await readFile(join(dataDir, "secrets.env"), "utf8").catch(() => "");
  const lines = text.split("\n").filter((line) => line.includes("="));
  const entries = Object.fromEntries(lines.map((line) => line.split("=", 2) as [string, string]));
  return Object.fromEntries(SECRET_NAMES.filter((name) => entries[name]).map((name) => [name, entries[name]]));
}

/** Where the processes of a cluster in `dataDir` write their log files. */
export function logsDir(dataDir: string): string {
  return join(dataDir, "logs");
}

/** Reads the data directory's secrets, generating any it lacks (a data directory from before a secret existed keeps the others); mode 0600. */
export async function stackSecrets(dataDir: string): Promise<{ secrets: StackSecrets; file: string }> {
  const file = join(dataDir, "secrets.env");
  const existing = await readSecretEntries(dataDir);
  const secrets = Object.fromEntries(SECRET_NAMES.map((name) => [name, existing[name] ?? randomBytes(32).toString("hex")])) as unknown as StackSecrets;
  if (SECRET_NAMES.some((name) => existing[name] === undefined)) {
    await writeFile(file, SECRET_NAMES.map((name) => `${name}=${secrets[name]}\n`).join(""), { mode: 0o600 });
  }
  return { secrets, file };
}

/** Applies the migrations, starts the runners, then the edge routing to them. */
export async function startCluster(options: ClusterOptions): Promise<Cluster> {
  const log = options.log ?? (() => undefined);
  const count = options.runners ?? 1;
  await mkdir(join(options.dataDir, "wrangler"), { recursive: true });
  const { secrets, file: secretsFile } = await stackSecrets(options.dataDir);
  const edgePort = options.edgePort ?? (await freePort());
  const edgeUrl = `http://127.0.0.1:${edgePort}`;
  const ports: number[] = [];
  for (let i = 0; i < count; i++) ports.push(options.runnerPorts?.[i] ?? (await freePort()));

  log("applying the database migrations…");
  await applyLocalMigrations(join(options.dataDir, "wrangler"));
  const runners = ports.map((port, i) => clusterRunner(options, { port, index: i, edgeUrl, secret: secrets.RUNNER_SECRET }));
  try {
    log(`starting ${count === 1 ? "the runner" : `${count} runners`} (${options.model ?? "shipped model"}, ${options.weights ?? "f32"} weights, CPU)…`);
    await Promise.all(runners.map((runner) => runner.start()));
    log("starting the edge (wrangler dev)…");
    const edgeLogFile = join(logsDir(options.dataDir), "edge.log");
    const edge = await startWrangler({
      output: { name: "edge", logFile: edgeLogFile, echo: options.echoLogs },
      port: edgePort,
      persistTo: join(options.dataDir, "wrangler"),
      envFile: secretsFile,
      vars: { RUNNER_URLS: runners.map((runner) => runner.url).join(","), PUBLIC_URL: edgeUrl },
    });
    await heartbeatsArrived(
      edgeUrl,
      secrets.RUNNER_SECRET,
      runners.map((runner) => runner.url),
    );
    return {
      edge,
      edgeUrl,
      edgeLogFile,
      secrets,
      secretsFile,
      runners,
      stop: async () => {
        await Promise.all([edge.stop(), ...runners.map((runner) => runner.stop())]);
      },
    };
  } catch (error) {
    await Promise.all(runners.map((runner) => runner.stop()));
    throw error;
  }
}

/**
 * Waits until the edge has heard every runner's heartbeat (runners start before the edge, so their
 * first beats fail; they beat again within HEARTBEAT_INTERVAL_SECONDS). Until then the edge knows
 * them only as listed URLs, without their model, basis or load.
 */
async function heartbeatsArrived(edgeUrl: string, secret: string, urls: string[]): Promise<void> {
  const deadline = Date.now() + (HEARTBEAT_INTERVAL_SECONDS + 20) * 1000;
  for (;;) {
    const listed = await fetch(`${edgeUrl}/internal/runners`, { headers: runnerAuthorization(secret) })
      .then((response) => response.json() as Promise<{ data: { url: string; last_heartbeat: number }[] }>)
      .catch(() => ({ data: [] }));
    const heard = new Set(listed.data.filter((row) => row.last_heartbeat > 0).map((row) => row.url));
    if (urls.every((url) => heard.has(url))) return;
    if (Date.now() > deadline) throw new Error(`no heartbeat reached the edge from ${urls.filter((url) => !heard.has(url)).join(", ")}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

function clusterRunner(options: ClusterOptions, where: { port: number; index: number; edgeUrl: string; secret: string }): ClusterRunner {
  const url = `http://127.0.0.1:${where.port}`;
  // The first runner keeps the single-runner layout `npm start` has always used.
  const suffix = where.index === 0 ? "" : `-${where.index + 1}`;
  const jobsDir = join(options.dataDir, `jobs${suffix}`);
  const name = `runner-${where.port}`;
  const logFile = join(logsDir(options.dataDir), `${name}.log`);
  let current: RunnerProcess | null = null;
  return {
    url,
    jobsDir,
    logFile,
    process: () => current,
    async start() {
      if (current !== null) throw new Error(`the runner at ${url} is already running`);
      current = await startRunner({
        port: where.port,
        args: [
          ...(options.model !== undefined ? ["--model", options.model] : []),
          ...(options.weights !== undefined ? ["--weights", options.weights] : []),
          "--host",
          "127.0.0.1",
          "--edge-url",
          where.edgeUrl,
          "--public-url",
          url,
          "--jobs-dir",
          jobsDir,
          "--adapter-dir",
          join(options.dataDir, `adapters${suffix}`),
          ...(options.runnerArgs ?? []),
        ],
        env: { RUNNER_SECRET: where.secret },
        output: { name, logFile, echo: options.echoLogs },
      });
    },
    async kill() {
      const child = current?.child;
      current = null;
      if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
      child.kill("SIGKILL");
      await exited;
    },
    async stop() {
      const running = current;
      current = null;
      await running?.stop();
    },
  };
}
