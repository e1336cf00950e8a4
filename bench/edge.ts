/**
 * Edge overhead: one runner process on the shipped model and the edge worker under
 * `wrangler dev --local` routing to it. The same streamed text completion is sent through the
 * edge and directly at the runner, interleaved (which goes first alternates), and each pair's
 * difference is the edge's cost: key check, adapter and limits lookups, the limiter object,
 * routing, and relaying the SSE bytes. Reported for the time to first token and to last byte.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { BASE_MODEL_ID } from "../src/constants.ts";
import { readSseData, SSE_DONE } from "../src/protocol/sse.ts";
import { createTenantWithKey } from "../stack/admin.ts";
import { startRunner, type RunnerProcess } from "../stack/runner-process.ts";
import { median, percentile, progress, round } from "./stats.ts";
import { applyLocalMigrations, startWrangler, type WranglerProcess } from "../stack/wrangler-process.ts";

const WARMUP_PAIRS = 20;
const PAIRS = 200;
const MAX_TOKENS = 16;
const PROMPT = "Once upon a time";

interface Timing {
  firstTokenMs: number;
  lastByteMs: number;
  tokens: number;
}

/** Runs the edge bench and returns its figures. */
export async function runEdgeBench(): Promise<Record<string, unknown>> {
  const directory = await mkdtemp(join(tmpdir(), "pica-edge-bench-"));
  const runnerSecret = `bench-runner-${crypto.randomUUID()}`;
  const adminToken = `bench-admin-${crypto.randomUUID()}`;
  let runner: RunnerProcess | null = null;
  let edge: WranglerProcess | null = null;
  try {
    progress("starting the runner…");
    // One core is left to the edge (workerd and wrangler) and this client.
    const threads = String(Math.max(1, cpus().length - 1));
    runner = await startRunner({
      args: ["--secret", runnerSecret, "--threads", threads, "--jobs-dir", join(directory, "jobs"), "--adapter-dir", join(directory, "adapters")],
    });
    const persistTo = join(directory, "state");
    const envFile = join(directory, "edge.env");
    await writeFile(envFile, `RUNNER_SECRET=${runnerSecret}\nADMIN_TOKEN=${adminToken}\n`);
    progress("applying migrations to a local D1…");
    await applyLocalMigrations(persistTo);
    progress("starting wrangler dev…");
    edge = await startWrangler({ persistTo, envFile, vars: { RUNNER_URLS: runner.url, BASE_MODEL: BASE_MODEL_ID } });
    const key = await tenantKey(edge.url, adminToken);

    const body = JSON.stringify({ model: BASE_MODEL_ID, prompt: PROMPT, max_tokens: MAX_TOKENS, temperature: 0, stream: true });
    const viaEdge = () => streamedCompletion(`${edge!.url}/v1/completions`, body, { authorization: `Bearer ${key}` });
    const direct = () => streamedCompletion(`${runner!.url}/v1/completions`, body, {});
    progress(`warming up (${WARMUP_PAIRS} pairs)…`);
    for (let i = 0; i < WARMUP_PAIRS; i++) {
      await viaEdge();
      await direct();
    }

    progress(`measuring ${PAIRS} interleaved pairs…`);
    const edgeTimes: Timing[] = [];
    const directTimes: Timing[] = [];
    for (let i = 0; i < PAIRS; i++) {
      // Alternate the order so that neither side always meets a runner that has just been busy.
      if (i % 2 === 0) {
        edgeTimes.push(await viaEdge());
        directTimes.push(await direct());
      } else {
        directTimes.push(await direct());
        edgeTimes.push(await viaEdge());
      }
    }
    // The platform's own cost per request: an edge answer that touches no storage (a 401) against
    // the runner's cheapest route. The edge's overhead cannot go below this under wrangler dev.
    const floor: number[] = [];
    for (let i = 0; i < PAIRS; i++) {
      const edgeMs = await timedGet(`${edge.url}/v1/models`);
      floor.push(edgeMs - (await timedGet(`${runner.url}/health`)));
    }
    const tokens = new Set([...edgeTimes, ...directTimes].map((t) => t.tokens));
    if (tokens.size !== 1) progress(`note: responses streamed different token counts: ${[...tokens].join(", ")}`);
    const lastByte = edgeTimes.map((t, i) => t.lastByteMs - directTimes[i].lastByteMs);
    const firstToken = edgeTimes.map((t, i) => t.firstTokenMs - directTimes[i].firstTokenMs);
    return {
      pairs: PAIRS,
      max_tokens: MAX_TOKENS,
      direct_last_byte_ms_p50: round(median(directTimes.map((t) => t.lastByteMs))),
      edge_last_byte_ms_p50: round(median(edgeTimes.map((t) => t.lastByteMs))),
      direct_first_token_ms_p50: round(median(directTimes.map((t) => t.firstTokenMs))),
      edge_first_token_ms_p50: round(median(edgeTimes.map((t) => t.firstTokenMs))),
      platform_floor_ms_p50: round(median(floor)),
      edge_overhead_ms_p50: round(median(lastByte)),
      edge_overhead_ms_p99: round(percentile(lastByte, 99)),
      edge_overhead_first_token_ms_p50: round(median(firstToken)),
      edge_overhead_first_token_ms_p99: round(percentile(firstToken, 99)),
    };
  } catch (error) {
    if (edge !== null) progress(`wrangler output:\n${edge.recentOutput()}`);
    throw error;
  } finally {
    await edge?.stop();
    await runner?.stop();
    await rm(directory, { recursive: true, force: true });
  }
}

/** A tenant with high limits (the bench measures latency, not the limiter refusing) and its key. */
async function tenantKey(edgeUrl: string, adminToken: string): Promise<string> {
  return (await createTenantWithKey(edgeUrl, adminToken, { name: "bench", requests_per_minute: 1_000_000, concurrent_streams: 1000 }, ["inference"])).key;
}

/** Milliseconds for one GET, body read. */
async function timedGet(url: string): Promise<number> {
  const start = performance.now();
  await (await fetch(url)).arrayBuffer();
  return performance.now() - start;
}

/** Sends one streamed completion and times its first token and its last byte. */
async function streamedCompletion(url: string, body: string, headers: Record<string, string>): Promise<Timing> {
  const start = performance.now();
  const response = await fetch(url, { method: "POST", headers: { "content-type": "application/json", ...headers }, body });
  if (response.status !== 200 || response.body === null) throw new Error(`${url}: ${response.status} ${await response.text()}`);
  let firstTokenMs: number | null = null;
  let tokens = 0;
  let last = "";
  for await (const data of readSseData(response.body)) {
    last = data;
    if (data === SSE_DONE) continue;
    tokens++;
    // A string test, not a parse: the timing should not include this client's work.
    if (firstTokenMs === null && data.includes('"text":')) firstTokenMs = performance.now() - start;
  }
  const lastByteMs = performance.now() - start;
  if (last !== SSE_DONE) throw new Error(`${url}: the stream ended without [DONE]; its last event: ${last.slice(0, 500)}`);
  return { firstTokenMs: firstTokenMs ?? lastByteMs, lastByteMs, tokens };
}
