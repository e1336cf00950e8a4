/**
 * Rendezvous (highest random weight) hashing: every runner gets a score per adapter, and the
 * adapter goes to the highest. When a runner leaves, only the adapters it held move (each to its
 * own second choice), so warm adapter caches elsewhere stay warm; ranking all runners also gives
 * the failover order for free.
 */

/** Runners ordered by preference for `key` (best first); ties cannot reorder between calls. */
export function rankByRendezvous<Runner>(key: string, runners: readonly Runner[], nodeOf: (runner: Runner) => string): Runner[] {
  return runners
    .map((runner) => ({ runner, node: nodeOf(runner), score: rendezvousScore(key, nodeOf(runner)) }))
    .sort((a, b) => b.score - a.score || (a.node < b.node ? -1 : a.node > b.node ? 1 : 0))
    .map((entry) => entry.runner);
}

/** The weight of `node` for `key`: a 53-bit hash of the pair. */
export function rendezvousScore(key: string, node: string): number {
  return hash53(`${node}\u0000${key}`);
}

// cyrb53: a small, well-mixed, non-cryptographic string hash. Routing needs only a uniform,
// stable spread over a handful of runners, computed synchronously on every request; a digest
// from crypto.subtle would be async and far more than the job needs.
function hash53(text: string): number {
  let h1 = 0xdeadbeef;
  let h2 = 0x41c6ce57;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ code, 2654435761);
    h2 = Math.imul(h2 ^ code, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return 4294967296 * (2097151 & h2) + (h1 >>> 0);
}
