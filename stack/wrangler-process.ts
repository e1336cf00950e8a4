/**
 * `wrangler dev --local` as a child process for the local stack, tests and benchmarks: the edge
 * worker (or another worker config a bench needs beside it; on a free port unless one is given) with
 * its own persistence directory (local D1 with the real migrations applied first), its output kept
 * for error messages (and written to a log file or echoed when asked), and a stop that ends the
 * whole process group (wrangler starts workerd beneath it) so a failed bench leaves no orphan.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createServer } from "node:net";
import { join } from "node:path";
import { collectOutput, type OutputOptions } from "./process-output.ts";

const ROOT = join(import.meta.dirname, "..");
const WRANGLER = join(ROOT, "node_modules", "wrangler", "bin", "wrangler.js");
const CONFIG = "workers/wrangler.jsonc";
const OUTPUT_LINES_KEPT = 60;

/** A started local edge: its base URL and how to stop it. */
export interface WranglerProcess {
  url: string;
  pid: number; // wrangler's, also the process group it shares with workerd
  child: ChildProcess;
  recentOutput(): string;
  stop(): Promise<void>;
}

export interface WranglerOptions {
  persistTo: string; // local D1/R2/DO state
  vars: Record<string, string>; // --var NAME:value
  envFile: string; // secrets, instead of workers/.dev.vars
  startTimeoutMs?: number; // default 90 s
  port?: number; // default: a free port
  config?: string; // default: the edge's, workers/wrangler.jsonc
  ready?: { path: string; status: number }; // what answers once the worker serves; default: the edge's 401 on /v1/models
  output?: OutputOptions; // a log file for everything it prints, and whether to echo it
}

/** Applies the migrations to the local D1 in `persistTo`; throws with wrangler's output on failure. */
export async function applyLocalMigrations(persistTo: string): Promise<void> {
  const child = spawn(process.execPath, [WRANGLER, "d1", "migrations", "apply", "DB", "--local", "--persist-to", persistTo, "-c", CONFIG], {
    cwd: ROOT,
    env: quietEnv(),
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
  if (code !== 0) throw new Error(`wrangler d1 migrations apply exited with ${code}:\n${output.slice(-4000)}`);
}

/** Starts `wrangler dev --local` and resolves once it serves requests. */
export async function startWrangler(options: WranglerOptions): Promise<WranglerProcess> {
  const port = options.port ?? (await freePort());
  const args = [
    WRANGLER,
    "dev",
    "-c",
    options.config ?? CONFIG,
    "--local",
    "--ip",
    "127.0.0.1",
    "--port",
    String(port),
    "--persist-to",
    options.persistTo,
    "--env-file",
    options.envFile,
    "--show-interactive-dev-session=false",
    "--log-level",
    "warn",
    "--inspector-port",
    String(await freePort()),
  ];
  for (const [name, value] of Object.entries(options.vars)) args.push("--var", `${name}:${value}`);
  // Its own process group, so that stopping it also stops workerd.
  const child = spawn(process.execPath, args, { cwd: ROOT, env: quietEnv(), stdio: ["ignore", "pipe", "pipe"], detached: true });
  const output = collectOutput(child, OUTPUT_LINES_KEPT, options.output);
  const recentOutput = () => output.recent();
  const stop = stopper(child);
  const url = `http://127.0.0.1:${port}`;
  const ready = options.ready ?? { path: "/v1/models", status: 401 };
  try {
    const deadline = Date.now() + (options.startTimeoutMs ?? 90_000);
    for (;;) {
      if (child.exitCode !== null) throw new Error(`wrangler dev exited with ${child.exitCode}:\n${recentOutput()}`);
      if (Date.now() > deadline) throw new Error(`wrangler dev did not start in time:\n${recentOutput()}`);
      const serving = await fetch(`${url}${ready.path}`).then(
        (response) => response.status === ready.status,
        () => false,
      );
      if (serving) break;
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    return { url, pid: child.pid!, child, recentOutput, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** Stops the child's whole process group: SIGTERM, then SIGKILL; also when this process exits. */
function stopper(child: ChildProcess): () => Promise<void> {
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const signalGroup = (signal: NodeJS.Signals) => {
    try {
      process.kill(-child.pid!, signal);
    } catch {
      // already gone
    }
  };
  const killOnExit = () => signalGroup("SIGKILL");
  process.once("exit", killOnExit);
  return async () => {
    process.off("exit", killOnExit);
    if (child.exitCode === null && child.signalCode === null) {
      signalGroup("SIGTERM");
      const killer = setTimeout(() => signalGroup("SIGKILL"), 5000);
      await exited;
      clearTimeout(killer);
    }
    signalGroup("SIGKILL"); // workerd may outlive wrangler's own exit
  };
}

function quietEnv(): NodeJS.ProcessEnv {
  return { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "1", NO_COLOR: "1" };
}

/** A port that was free a moment ago. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}
