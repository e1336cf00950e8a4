/**
 * A runner process for the local stack, tests and benchmarks: `gpu-runner/server/main.ts` started
 * as a child (on a free port unless one is given),
 * its address read from the "listening on" line, its output kept for error messages (and written
 * to a log file or echoed when asked), and a stop that always ends the child (SIGTERM, then
 * SIGKILL) so a failed bench leaves no orphan.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { collectOutput, type OutputOptions } from "./process-output.ts";

/** A started runner: its base URL and how to stop it. */
export interface RunnerProcess {
  url: string; // e.g. "http://127.0.0.1:40123"
  child: ChildProcess;
  /** The last lines the runner printed (stdout and stderr), for error messages. */
  recentOutput(): string;
  /** Stops the runner (graceful first) and resolves once the process has exited. */
  stop(): Promise<void>;
}

export interface RunnerProcessOptions {
  args: string[]; // flags for gpu-runner/server/main.ts; --port is added
  port?: number; // default 0: a free port
  env?: Record<string, string>; // added to this process's environment
  startTimeoutMs?: number; // default 120 s (a basis may need computing)
  output?: OutputOptions; // a log file for everything it prints, and whether to echo it
}

const OUTPUT_LINES_KEPT = 40;
const ROOT = join(import.meta.dirname, "..");

/** Spawns the runner and resolves once it listens; rejects with its output if it exits or times out first. */
export async function startRunner(options: RunnerProcessOptions): Promise<RunnerProcess> {
  const child = spawn(process.execPath, ["--import", "tsx", "gpu-runner/server/main.ts", ...options.args, "--port", String(options.port ?? 0)], {
    cwd: ROOT,
    env: { ...process.env, ...options.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let onLine: (line: string) => void = () => undefined;
  const output = collectOutput(child, OUTPUT_LINES_KEPT, options.output, (line) => onLine(line));
  const recentOutput = () => output.recent();
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  // Whatever way this process ends, the runner ends with it.
  const killOnExit = () => child.kill("SIGKILL");
  process.once("exit", killOnExit);
  void exited.then(() => process.off("exit", killOnExit));

  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill("SIGTERM");
    const killer = setTimeout(() => child.kill("SIGKILL"), 5000);
    await exited;
    clearTimeout(killer);
  };

  try {
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`the runner did not start within ${options.startTimeoutMs ?? 120_000} ms:\n${recentOutput()}`)),
        options.startTimeoutMs ?? 120_000,
      );
      onLine = (line) => {
        const match = /listening on (http:\/\/[\d.]+:\d+)/.exec(line);
        if (match) {
          clearTimeout(timer);
          resolve(match[1]);
        }
      };
      // "close" rather than "exit": by then everything it printed has been read.
      child.once("close", (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`the runner exited with ${code ?? signal} before listening:\n${recentOutput()}`));
      });
    });
    return { url, child, recentOutput, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}
