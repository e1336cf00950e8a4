/** Small statistics helpers for benchmarks: medians of interleaved measurements. */

/** The median of a list of numbers. */
export function median(values: number[]): number {
  if (values.length === 0) throw new Error("median of nothing");
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** Milliseconds taken by an async function. */
export async function timeMs(fn: () => Promise<unknown>): Promise<number> {
  const start = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - start) / 1e6;
}

/** Rounds to a number of significant digits for readable JSON. */
export function round(value: number, digits = 4): number {
  return Number(value.toPrecision(digits));
}

/** Prints one progress line to stderr so the last stdout line stays the JSON result. */
export function progress(message: string): void {
  process.stderr.write(`${message}\n`);
}

/** The p-th percentile (0–100) of a list, interpolating linearly between the closest ranks. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) throw new Error(`percentile ${p} of nothing`);
  const sorted = [...values].sort((a, b) => a - b);
  const position = (p / 100) * (sorted.length - 1);
  const below = Math.floor(position);
  const above = Math.min(below + 1, sorted.length - 1);
  return sorted[below] + (sorted[above] - sorted[below]) * (position - below);
}
