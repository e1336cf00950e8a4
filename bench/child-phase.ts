/**
 * A bench phase in a process of its own, so its memory figures are its own: runs
 * `node --import tsx bench/<script> ...args` and returns the JSON object it prints as its last
 * stdout line (its progress goes to stderr, passed through).
 */
import { spawn } from "node:child_process";
import { join } from "node:path";

export function runPhase(script: string, args: string[]): Promise<Record<string, number>> {
  const label = [script, ...args.slice(0, 1)].join(" ");
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", join(import.meta.dirname, script), ...args], { stdio: ["ignore", "pipe", "inherit"] });
    let output = "";
    child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.on("error", reject);
    child.on("exit", (code) => {
      const last = output.trim().split("\n").pop() ?? "";
      if (code !== 0) return reject(new Error(`phase ${label} exited with ${code}`));
      try {
        resolve(JSON.parse(last) as Record<string, number>);
      } catch {
        reject(new Error(`phase ${label} printed no result: ${last.slice(0, 200)}`));
      }
    });
  });
}
