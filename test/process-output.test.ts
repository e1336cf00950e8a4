/**
 * How the stack keeps a child's output (stack/process-output.ts): whole lines however the chunks
 * fall, the last N kept for error messages, everything appended to the log file across runs, and
 * the echo that `npm start -- --logs` prints.
 */
import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { collectOutput, type OutputOptions } from "../stack/process-output.ts";

// Writes "alpha", "beta" (split over two writes, with a multi-byte character split between them),
// a blank line and "gamma" on stdout, and "oops" on stderr, then exits 3.
const SCRIPT = `
const euro = Buffer.from("€");
process.stdout.write("alpha\\nbe");
process.stdout.write(Buffer.concat([Buffer.from("ta "), euro.subarray(0, 1)]));
setTimeout(() => {
  process.stdout.write(Buffer.concat([euro.subarray(1), Buffer.from("\\n\\ngamma\\n")]));
  process.stderr.write("oops\\n");
  process.exitCode = 3;
}, 50);
`;

/** Runs SCRIPT with its output collected; resolves once it has closed. */
async function run(linesKept: number, options?: OutputOptions) {
  const child = spawn(process.execPath, ["-e", SCRIPT], { stdio: ["ignore", "pipe", "pipe"] });
  const seen: string[] = [];
  const output = collectOutput(child, linesKept, options, (line) => seen.push(line));
  const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
  await output.closed;
  return { code, output, seen };
}

describe("a child's collected output", () => {
  let directory: string;
  beforeAll(async () => {
    directory = await mkdtemp(join(tmpdir(), "pica-output-"));
  });
  afterAll(() => rm(directory, { recursive: true, force: true }));

  it("hands over whole lines, keeps the last non-blank ones, and echoes nothing unless asked", async () => {
    const echoed = vi.spyOn(process.stderr, "write").mockImplementation(() => true);
    try {
      const { code, output, seen } = await run(2);
      expect(code).toBe(3);
      expect([...seen].sort()).toEqual(["", "alpha", "beta €", "gamma", "oops"]);
      expect(output.recent().split("\n").sort()).toEqual(["gamma", "oops"]);
      expect(echoed).not.toHaveBeenCalled();
    } finally {
      echoed.mockRestore();
    }
  });

  it("appends everything to the log file under a header per run, and echoes each line after the name", async () => {
    const logFile = join(directory, "logs", "runner-1234.log");
    const echoed: string[] = [];
    const write = vi.spyOn(process.stderr, "write").mockImplementation((text) => {
      echoed.push(String(text));
      return true;
    });
    try {
      await run(10, { name: "runner-1234", logFile, echo: true });
    } finally {
      write.mockRestore();
    }
    await run(10, { name: "runner-1234", logFile });
    const text = await readFile(logFile, "utf8");
    const runs = text.split(/^--- runner-1234 \(pid \d+\) started \d{4}-\d\d-\d\dT[\d:.]+Z ---\n/m);
    expect(runs).toHaveLength(3); // before the first header, then two runs
    expect(runs[0]).toBe("");
    for (const body of runs.slice(1)) {
      expect(
        body
          .split("\n")
          .filter((line) => line !== "")
          .sort(),
      ).toEqual(["alpha", "beta €", "gamma", "oops"]);
    }
    expect([...echoed].sort()).toEqual(["[runner-1234] alpha\n", "[runner-1234] beta €\n", "[runner-1234] gamma\n", "[runner-1234] oops\n"]);
  });
});
