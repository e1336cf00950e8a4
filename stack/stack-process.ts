/**
 * `npm start`'s script as a child process, for tests and benchmarks: started on the given ports
 * and data directory, resolved once it prints its summary (with the development key), stopped
 * the way a person stops it (Ctrl-C).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { readStackSecrets } from "./cluster.ts";
import { freePort } from "./wrangler-process.ts";

const ROOT = join(import.meta.dirname, "..");

/** A started stack: where it listens, the development key, its output so far, and how to stop it. */
export interface StackProcess {
  child: ChildProcess;
  edgeUrl: string;
  runnerUrl: string;
  key: string;
  output(): string;
  stop(): Promise<number | null>; // SIGINT, then the exit code
}

/** Starts the stack in `dataDir` on free ports (or the ones given), with more flags if given, and waits for its summary. */
export async function startStack(dataDir: string, ports: { edge?: number; runner?: number } = {}, flags: string[] = []): Promise<StackProcess> {
  const edgePort = ports.edge ?? (await freePort());
  const runnerPort = ports.runner ?? (await freePort());
  const args = ["--data-dir", dataDir, "--edge-port", String(edgePort), "--runner-port", String(runnerPort), ...flags];
  const child = spawn(process.execPath, ["--import", "tsx", "stack/start.ts", ...args], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const killOnExit = () => child.kill("SIGKILL");
  process.once("exit", killOnExit);
  await new Promise<void>((resolve, reject) => {
    const read = (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes("Ctrl-C stops everything.")) resolve();
    };
    child.stdout!.on("data", read);
    child.stderr!.on("data", read);
    void exited.then((code) => reject(new Error(`the stack exited with ${code}:\n${output}`)));
  });
  const key = /API key: (sk-pica-\S+)/.exec(output)?.[1];
  if (key === undefined) throw new Error(`the stack printed no API key:\n${output}`);
  return {
    child,
    edgeUrl: `http://127.0.0.1:${edgePort}`,
    runnerUrl: `http://127.0.0.1:${runnerPort}`,
    key,
    output: () => output,
    stop: async () => {
      process.off("exit", killOnExit);
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGINT");
      return exited;
    },
  };
}

/** The stack's admin token (generated into its data directory on the first start). */
export async function stackAdminToken(dataDir: string): Promise<string> {
  const secrets = await readStackSecrets(dataDir);
  if (secrets === null) throw new Error(`no ADMIN_TOKEN in ${join(dataDir, "secrets.env")}`);
  return secrets.ADMIN_TOKEN;
}

/** The stack's runner secret, which the edge's internal routes (the runner list) take. */
export async function stackRunnerSecret(dataDir: string): Promise<string> {
  const secrets = await readStackSecrets(dataDir);
  if (secrets === null) throw new Error(`no RUNNER_SECRET in ${join(dataDir, "secrets.env")}`);
  return secrets.RUNNER_SECRET;
}

export { freePort };
