/**
 * Edge overhead: one runner process on the shipped model, the edge worker under
 * `wrangler dev --local` routing to it, and beside it a pass-through worker under the same
 * `wrangler dev` (bench/passthrough-worker: the runner's response body returned untouched). The
 * same streamed text completion is sent through the edge, through the pass-through and directly
 * at the runner, interleaved (the order rotates every round). Edge minus pass-through is the
 * edge's own work (key check, adapter and limits lookups, the limiter object, routing, the SSE
 * relay); pass-through minus direct is what workerd and wrangler's local proxy cost any worker;
 * edge minus direct is both. Reported for the time to first token and to last byte.
 */
import { readdirSync, readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { BASE_MODEL_ID } from "../src/constants.ts";
import { readSseData, SSE_DONE } from "../src/protocol/sse.ts";
import { createTenantWithKey } from "../stack/admin.ts";
import { startRunner, type RunnerProcess } from "../stack/runner-process.ts";
import { otherProcessCores, processCpuSeconds, readCpuTicks } from "./cpu-usage.ts";
import { median, percentile, progress, round } from "./stats.ts";
import { applyLocalMigrations, startWrangler, type WranglerProcess } from "../stack/wrangler-process.ts";

const WARMUP_ROUNDS = 20;
const ROUNDS = 200;
const MAX_TOKENS = 16;
const PROMPT = "Once upon a time";
const PASS_THROUGH_CONFIG = "bench/passthrough-worker/wrangler.jsonc";

type Path = "edge" | "passThrough" | "direct";
const PATHS: readonly Path[] = ["edge", "passThrough", "direct"];
const ORDERS: readonly (readonly Path[])[] = [
  ["edge", "passThrough", "direct"],
  ["direct", "edge", "passThrough"],
  ["passThrough", "direct", "edge"],
  ["edge", "direct", "passThrough"],
  ["passThrough", "edge", "direct"],
  ["direct", "passThrough", "edge"],
];

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
  let passThrough: WranglerProcess | null = null;
  try {
    progress("starting the runner…");
    // One core is left to the edge (workerd and wrangler) and this client.
    const threads = String(Math.max(1, cpus().length - 1));
    // No runner secret: the three paths then reach the runner alike whether or not the edge
    // presents one, and the bench measures the edge, not the runner's bearer check.
    runner = await startRunner({
      args: ["--threads", threads, "--jobs-dir", join(directory, "jobs"), "--adapter-dir", join(directory, "adapters")],
    });
    const persistTo = join(directory, "state");
    const envFile = join(directory, "edge.env");
    await writeFile(envFile, `RUNNER_SECRET=${runnerSecret}\nADMIN_TOKEN=${adminToken}\n`);
    const emptyEnvFile = join(directory, "pass-through.env");
    await writeFile(emptyEnvFile, "");
    progress("applying migrations to a local D1…");
    await applyLocalMigrations(persistTo);
    progress("starting wrangler dev…");
    edge = await startWrangler({ persistTo, envFile, vars: { RUNNER_URLS: runner.url, BASE_MODEL: BASE_MODEL_ID } });
    progress("starting the pass-through worker under wrangler dev…");
    passThrough = await startWrangler({
      config: PASS_THROUGH_CONFIG,
      persistTo: join(directory, "pass-through-state"),
      envFile: emptyEnvFile,
      vars: { RUNNER_URL: runner.url },
      ready: { path: "/ready", status: 204 },
    });
    const key = await tenantKey(edge.url, adminToken);

    // The edge always asks the runner for the usage chunk (to bill); asking for it here too makes
    // all three paths carry the same events from the same runner work.
    const body = JSON.stringify({
      model: BASE_MODEL_ID,
      prompt: PROMPT,
      max_tokens: MAX_TOKENS,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    const paths: Record<Path, () => Promise<Timing>> = {
      edge: () => streamedCompletion(`${edge!.url}/v1/completions`, body, { authorization: `Bearer ${key}` }),
      passThrough: () => streamedCompletion(`${passThrough!.url}/v1/completions`, body, {}),
      direct: () => streamedCompletion(`${runner!.url}/v1/completions`, body, {}),
    };
    progress(`warming up (${WARMUP_ROUNDS} rounds)…`);
    for (let i = 0; i < WARMUP_ROUNDS; i++) for (const path of PATHS) await paths[path]();

    progress(`measuring ${ROUNDS} interleaved rounds (edge, pass-through, direct)…`);
    const times: Record<Path, Timing[]> = { edge: [], passThrough: [], direct: [] };
    // CPU time does not grow when other work shares the machine, as wall time does: each worker's
    // process group (wrangler, workerd) serves only its own path, so its ticks over the rounds say
    // what one request costs there.
    const ticks = () => {
      const machine = readCpuTicks([process.pid, runner!.child.pid!]);
      const groups = [groupCpuTicks(edge!.pid), groupCpuTicks(passThrough!.pid)];
      return machine === null || groups.includes(null) ? null : { ...machine, processes: [...machine.processes, ...(groups as number[])] };
    };
    const ticksBefore = ticks();
    for (let i = 0; i < ROUNDS; i++) {
      // Every order in turn, so that no path always meets a runner that has just been busy.
      for (const path of ORDERS[i % ORDERS.length]) times[path].push(await paths[path]());
    }
    const ticksAfter = ticks();
    const cpuMsPerRequest = (index: number) => {
      const seconds = processCpuSeconds(ticksBefore, ticksAfter, index);
      return seconds === null ? null : round((seconds * 1000) / ROUNDS);
    };
    const others = otherProcessCores(ticksBefore, ticksAfter);
    // The platform's own cost per request: an edge answer that touches no storage (a 401) against
    // the runner's cheapest route. The edge's overhead cannot go below this under wrangler dev.
    const floor: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      const edgeMs = await timedGet(`${edge.url}/v1/models`);
      floor.push(edgeMs - (await timedGet(`${runner.url}/health`)));
    }
    const tokens = new Set(PATHS.flatMap((path) => times[path].map((t) => t.tokens)));
    if (tokens.size !== 1) progress(`note: responses streamed different token counts: ${[...tokens].join(", ")}`);
    const differences = (a: Path, b: Path, figure: keyof Timing) => times[a].map((t, i) => t[figure] - times[b][i][figure]);
    const lastByte = differences("edge", "direct", "lastByteMs");
    const firstToken = differences("edge", "direct", "firstTokenMs");
    const overPassThrough = differences("edge", "passThrough", "lastByteMs");
    const overPassThroughFirstToken = differences("edge", "passThrough", "firstTokenMs");
    const passThroughOverDirect = differences("passThrough", "direct", "lastByteMs");
    const p50 = (path: Path, figure: keyof Timing) => round(median(times[path].map((t) => t[figure])));
    return {
      rounds: ROUNDS,
      max_tokens: MAX_TOKENS,
      direct_last_byte_ms_p50: p50("direct", "lastByteMs"),
      pass_through_last_byte_ms_p50: p50("passThrough", "lastByteMs"),
      edge_last_byte_ms_p50: p50("edge", "lastByteMs"),
      direct_first_token_ms_p50: p50("direct", "firstTokenMs"),
      pass_through_first_token_ms_p50: p50("passThrough", "firstTokenMs"),
      edge_first_token_ms_p50: p50("edge", "firstTokenMs"),
      platform_floor_ms_p50: round(median(floor)),
      edge_overhead_ms_p50: round(median(lastByte)),
      edge_overhead_ms_p99: round(percentile(lastByte, 99)),
      edge_overhead_first_token_ms_p50: round(median(firstToken)),
      edge_overhead_first_token_ms_p99: round(percentile(firstToken, 99)),
      pass_through_overhead_ms_p50: round(median(passThroughOverDirect)),
      edge_overhead_over_passthrough_ms_p50: round(median(overPassThrough)),
      edge_overhead_over_passthrough_ms_p99: round(percentile(overPassThrough, 99)),
      edge_overhead_over_passthrough_first_token_ms_p50: round(median(overPassThroughFirstToken)),
      edge_cpu_ms_per_request: cpuMsPerRequest(2),
      pass_through_cpu_ms_per_request: cpuMsPerRequest(3),
      other_process_cores: others === null ? null : round(others, 2),
    };
  } catch (error) {
    if (edge !== null) progress(`wrangler output:\n${edge.recentOutput()}`);
    if (passThrough !== null) progress(`pass-through wrangler output:\n${passThrough.recentOutput()}`);
    throw error;
  } finally {
    await passThrough?.stop();
    await edge?.stop();
    await runner?.stop();
    await rm(directory, { recursive: true, force: true });
  }
}

/**
 * CPU ticks used so far by the live processes of a process group (Linux: from /proc; null
 * elsewhere). Wrangler starts and ends helpers (esbuild) as it likes, so the group is read afresh.
 */
function groupCpuTicks(groupId: number): number | null {
  let entries: string[];
  try {
    entries = readdirSync("/proc").filter((entry) => /^\d+$/.test(entry));
  } catch {
    return null;
  }
  let ticks = 0;
  for (const pid of entries) {
    try {
      // After the parenthesised command name: state, parent, process group, …, utime and stime 12th and 13th.
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(fields[2]) === groupId) ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      // gone meanwhile
    }
  }
  return ticks;
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
