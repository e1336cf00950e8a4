/**
 * `npm run bench -- load`: the local stack (edge under `wrangler dev`, one runner on the shipped
 * model) under many concurrent streaming clients, loopback only, for a bounded time.
 *
 *   - CLIENTS clients of one tenant, each streaming text completions back to back over ADAPTERS
 *     imported adapters (client i starts at adapter i and walks them all), for LOAD_SECONDS;
 *   - LIMITED_CLIENTS clients of a second tenant whose limit is LIMITED_STREAMS concurrent
 *     streams: their 429s are the intended refusals (`rate_limited`); they wait Retry-After;
 *   - after LOAD_SECONDS no new request starts; what is in flight may finish within DRAIN_SECONDS
 *     and anything left then is aborted and counted as hung (an error).
 *
 * `errors` counts everything but the intended 429s: other statuses, stream error events, streams
 * without [DONE] or their usage chunk, and hung requests. Usage is checked too: the tokens the
 * edge recorded for the tenant must equal those its clients were told. The runner's peak RSS is
 * the kernel's high-water mark for the process (VmHWM).
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BASE_MODEL_ID } from "../src/constants.ts";
import { createTenantWithKey } from "../stack/admin.ts";
import { startCluster, type Cluster } from "../stack/cluster.ts";
import { importRandomAdapters } from "../stack/random-peft.ts";
import { corpusPrompt, streamCompletion, timeToFirstToken, type StreamedCompletion } from "./load.ts";
import { Rng } from "../gpu-runner/random.ts";
import { median, percentile, progress, round } from "./stats.ts";

const CLIENTS = 200;
const ADAPTERS = 100;
const LIMITED_CLIENTS = 8;
const LIMITED_STREAMS = 2;
const LOAD_SECONDS = Number(process.env.LOAD_SECONDS ?? 60);
const DRAIN_SECONDS = 90;
const MAX_TOKENS = 12;
const PROMPT_CHARS = 24;
const SEED = 8_800;

interface ClientTally {
  completions: StreamedCompletion[];
  rateLimited: number;
  retried: number;
  retriedFor: Map<string, number>; // why, by kind
  errors: string[];
}

/**
 * Sends a request again, at most RETRIES times, when it got no response or a 503 before any token,
 * as the openai SDK does by default (it also retries 5xx and connection errors twice). Under
 * `wrangler dev` the local proxy in front of the worker loses a POST now and then on a keep-alive
 * race of its own (cloudflare/workers-sdk#14641: a 503 "Your worker restarted mid-request", or a
 * reset connection); `retried` reports how often. A stream that broke after its first byte is
 * never sent again: it counts as an error.
 */
const RETRIES = 2;
async function withRetries(tally: ClientTally, send: () => Promise<StreamedCompletion>): Promise<StreamedCompletion> {
  for (let attempt = 0; ; attempt++) {
    const completion = await send();
    const lostBeforeResponse = (completion.status === null && !completion.aborted) || (completion.status === 503 && completion.chunkTimes.length === 0);
    if (!lostBeforeResponse || attempt === RETRIES) return completion;
    tally.retried++;
    const why = errorKind(completion.error ?? `HTTP ${completion.status}`);
    tally.retriedFor.set(why, (tally.retriedFor.get(why) ?? 0) + 1);
  }
}

export async function runStackLoadBench(): Promise<Record<string, unknown>> {
  const directory = await mkdtemp(join(tmpdir(), "pica-load-bench-"));
  let cluster: Cluster | null = null;
  try {
    cluster = await startCluster({ dataDir: directory, runners: 1, log: progress });
    const { edgeUrl } = cluster;
    const admin = cluster.secrets.ADMIN_TOKEN;
    const tenant = await createTenantWithKey(edgeUrl, admin, { name: "load", requests_per_minute: 1_000_000, concurrent_streams: CLIENTS + 50 });
    const limited = await createTenantWithKey(edgeUrl, admin, { name: "limited", requests_per_minute: 1_000_000, concurrent_streams: LIMITED_STREAMS });
    progress(`importing ${ADAPTERS} random adapters through the edge…`);
    const importStart = performance.now();
    const adapters = await importRandomAdapters(edgeUrl, tenant.key, { count: ADAPTERS, seed: SEED, namePrefix: "load" });
    progress(`imported in ${((performance.now() - importStart) / 1000).toFixed(1)} s`);

    const rng = new Rng(SEED);
    const prompts = Array.from({ length: 64 }, () => corpusPrompt(rng, PROMPT_CHARS));
    const stopAt = performance.now() + LOAD_SECONDS * 1000;
    const drain = new AbortController();
    const main: ClientTally = { completions: [], rateLimited: 0, retried: 0, retriedFor: new Map(), errors: [] };
    const refused: ClientTally = { completions: [], rateLimited: 0, retried: 0, retriedFor: new Map(), errors: [] };
    const client = async (index: number, key: string, tally: ClientTally, models: string[], intended429: boolean) => {
      const headers = { authorization: `Bearer ${key}` };
      for (let n = 0; performance.now() < stopAt; n++) {
        const model = models[(index + n) % models.length];
        const completion = await withRetries(tally, () =>
          streamCompletion(edgeUrl, { model, prompt: prompts[(index + n) % prompts.length], maxTokens: MAX_TOKENS }, drain.signal, headers),
        );
        if (completion.status === 429 && intended429) {
          tally.rateLimited++;
          await new Promise((resolve) => setTimeout(resolve, 1000)); // Retry-After is at least 1 s
          continue;
        }
        const problem = completion.aborted
          ? `hung: ${model} had not finished ${DRAIN_SECONDS} s after the load stopped`
          : (completion.error ?? (completion.usageSeen ? null : `no usage chunk for ${model}`));
        if (problem !== null) tally.errors.push(problem);
        else tally.completions.push(completion);
        if (completion.aborted) return;
      }
    };

    const runnerPid = cluster.runners[0].process()!.child.pid!;
    progress(
      `${CLIENTS} clients over ${ADAPTERS} adapters (+${LIMITED_CLIENTS} clients of a tenant limited to ${LIMITED_STREAMS} streams) for ${LOAD_SECONDS} s…`,
    );
    const ticker = setInterval(
      () =>
        progress(
          `  ${main.completions.length} completed, ${main.errors.length + refused.errors.length} errors, ${refused.rateLimited} rate-limited, ${main.retried + refused.retried} retried`,
        ),
      10_000,
    );
    const started = performance.now();
    const all = Promise.all([
      ...Array.from({ length: CLIENTS }, (_, i) => client(i, tenant.key, main, adapters, false)),
      ...Array.from({ length: LIMITED_CLIENTS }, (_, i) => client(i, limited.key, refused, [BASE_MODEL_ID], true)),
    ]);
    await new Promise((resolve) => setTimeout(resolve, LOAD_SECONDS * 1000));
    const drained = await Promise.race([all.then(() => true), new Promise<boolean>((resolve) => setTimeout(() => resolve(false), DRAIN_SECONDS * 1000))]);
    if (!drained) drain.abort();
    await all;
    clearInterval(ticker);
    const elapsedSeconds = (performance.now() - started) / 1000;
    const peakRss = await peakRssBytes(runnerPid);

    const errors = [...main.errors, ...refused.errors];
    const kinds = new Map<string, number>();
    for (const error of errors) kinds.set(errorKind(error), (kinds.get(errorKind(error)) ?? 0) + 1);
    for (const [kind, count] of kinds) progress(`error ×${count}: ${kind}`);
    for (const [kind, count] of [...main.retriedFor, ...refused.retriedFor]) progress(`retried ×${count}: ${kind}`);
    if (errors.length > 0) progress(`wrangler output:\n${cluster.edge.recentOutput()}`);
    const completions = main.completions;
    const latencies = completions.map((c) => (c.chunkTimes.at(-1) ?? c.sentAt) - c.sentAt);
    const ttfts = completions.map(timeToFirstToken).filter((t): t is number => t !== null);
    const clientTokens = completions.reduce((sum, c) => sum + c.completionTokens, 0);
    const recorded = await recordedOutputTokens(edgeUrl, tenant.key, clientTokens);
    const adaptersUsed = new Set(completions.map((c) => c.request.model)).size;
    return {
      clients: CLIENTS,
      adapters: ADAPTERS,
      adapters_used: adaptersUsed,
      seconds: round(elapsedSeconds),
      completed: completions.length,
      errors: errors.length,
      rate_limited: refused.rateLimited,
      retried: main.retried + refused.retried,
      limited_tenant_completed: refused.completions.length,
      latency_ms_p50: round(median(latencies)),
      latency_ms_p99: round(percentile(latencies, 99)),
      ttft_ms_p50: round(median(ttfts)),
      ttft_ms_p99: round(percentile(ttfts, 99)),
      tokens_per_second: round(clientTokens / elapsedSeconds),
      usage_tokens_client: clientTokens,
      usage_tokens_recorded: recorded,
      runner_peak_rss_mb: round(peakRss / 2 ** 20),
    };
  } catch (error) {
    if (cluster !== null) progress(`wrangler output:\n${cluster.edge.recentOutput()}`);
    throw error;
  } finally {
    await cluster?.stop();
    await rm(directory, { recursive: true, force: true });
  }
}

/** An error message without its ids and numbers, to count errors by kind. */
function errorKind(message: string): string {
  return message.replace(/peft:\S+|\d+/g, "…").slice(0, 160);
}

/** The process's peak resident set (VmHWM), in bytes. */
async function peakRssBytes(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const kb = /^VmHWM:\s+(\d+) kB/m.exec(status)?.[1];
  if (kb === undefined) throw new Error(`no VmHWM in /proc/${pid}/status`);
  return Number(kb) * 1024;
}

/** The output tokens the edge recorded for the key's tenant, once they stop changing (recorded after each stream). */
async function recordedOutputTokens(edgeUrl: string, key: string, expected: number): Promise<number> {
  let last = -1;
  for (let attempt = 0; attempt < 40; attempt++) {
    const usage = (await (await fetch(`${edgeUrl}/v1/usage`, { headers: { authorization: `Bearer ${key}` } })).json()) as { totals: { output_tokens: number } };
    if (usage.totals.output_tokens === expected) return expected;
    if (usage.totals.output_tokens === last) return last;
    last = usage.totals.output_tokens;
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  return last;
}
