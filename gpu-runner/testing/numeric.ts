/** Numeric helpers shared by the engine's tests and benchmarks. */

/** Largest absolute elementwise difference; arrays of different lengths are an error. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`cannot compare arrays of ${a.length} and ${b.length} elements`);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}

/** A deterministic, irregular sequence of byte-range token ids. */
export function syntheticTokens(count: number, seed: number): number[] {
  return Array.from({ length: count }, (_, i) => (seed * 31 + i * 17 + ((i * i) % 7)) % 256);
}
