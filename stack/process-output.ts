/**
 * What a child process of the stack prints (stdout and stderr together): the last lines, kept
 * for error messages; everything, appended to a log file when one is named, so that a process
 * that failed while nobody watched leaves a trace; and each line echoed to this process's stderr
 * with the child's name in front when asked (`npm start -- --logs`).
 */
import type { ChildProcess } from "node:child_process";
import { createWriteStream, mkdirSync, type WriteStream } from "node:fs";
import { dirname } from "node:path";

export interface OutputOptions {
  name: string; // e.g. "runner-8400": heads its runs in the log file and each echoed line
  logFile?: string; // appended to (its folder is created); unset: no file
  echo?: boolean; // print each line to this process's stderr as `[name] line`; default false
}

/** A child's collected output. */
export interface ProcessOutput {
  /** The last lines it printed, oldest first. */
  recent(): string;
  /** Resolves once the child has closed its output and all of it is in the log file. */
  closed: Promise<void>;
}

/**
 * Collects `child`'s output from now on: keeps the last `linesKept` non-blank lines, appends all of
 * it to `options.logFile` under a line that says which process started when, echoes it when
 * `options.echo` asks, and calls `onLine` with every complete line.
 */
export function collectOutput(child: ChildProcess, linesKept: number, options?: OutputOptions, onLine?: (line: string) => void): ProcessOutput {
  const lines: string[] = [];
  let file: WriteStream | null = null;
  if (options?.logFile !== undefined) {
    mkdirSync(dirname(options.logFile), { recursive: true });
    file = createWriteStream(options.logFile, { flags: "a" });
    file.write(`--- ${options.name} (pid ${child.pid}) started ${new Date().toISOString()} ---\n`);
    // A log file that cannot be written must not take the stack down; the lines are still kept.
    file.on("error", () => undefined);
  }
  const closed = new Promise<void>((resolve) =>
    child.once("close", () => {
      if (file === null) return resolve();
      file.once("close", () => resolve()); // after the last write, or after a failed one
      file.end();
    }),
  );
  const line = (text: string) => {
    onLine?.(text);
    if (text.trim().length === 0) return;
    lines.push(text);
    if (lines.length > linesKept) lines.splice(0, lines.length - linesKept);
    if (options?.echo) process.stderr.write(`[${options.name}] ${text}\n`);
  };
  for (const stream of [child.stdout, child.stderr]) {
    if (stream === null) continue;
    // A chunk may end inside a line (or a character); the rest comes with the next chunk.
    stream.setEncoding("utf8");
    let partial = "";
    stream.on("data", (chunk: string) => {
      file?.write(chunk);
      const parts = (partial + chunk).split("\n");
      partial = parts.pop() ?? "";
      for (const part of parts) line(part.replace(/\r$/, ""));
    });
    stream.on("end", () => {
      if (partial.length > 0) line(partial);
      partial = "";
    });
  }
  return { recent: () => lines.join("\n"), closed };
}
