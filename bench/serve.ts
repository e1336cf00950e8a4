/**
 * Serving benchmark, S-LoRA style: one runner process on the shipped model, 1000 distinct random
 * PiCa adapters in a directory store (all made resident before measuring), driven over HTTP with
 * streamed text completions. Prompts of 24–56 bytes and 16–56 output tokens are drawn from a fixed
 * seed (prompt + output ≤ 112 of the model's 128 tokens); adapters are drawn with probability
 * ∝ 1/(i+1) (alpha 1). Four settings share the same prompts and lengths:
 *   base — the base model only;  1 — one adapter;  100, 1000 — a power-law mix over that many.
 *
 *   throughput — a closed loop of 2 × max-batch clients keeps the batch full, so tokens/s is the
 *                runner's capacity; settings rotate round by round on the same warm process and
 *                ratios are medians of per-round ratios ("mixed" is the 1000-adapter mix).
 *   latency    — Poisson arrivals at a fixed fraction of the base capacity (below saturation):
 *                time to first token and time per output token, pooled over rounds.
 *   training   — the 100-adapter latency run without and with a training job running on the same
 *                runner (internal API), alternated; the ratio of the median TTFT p50s.
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { BASE_MODEL_ID } from "../src/constants.ts";
import { runnerAuthorization } from "../src/protocol/runner.ts";
import { DirectoryAdapterStore } from "../gpu-runner/adapters/adapter-store.ts";
import { loadCheckpoint } from "../gpu-runner/model/checkpoint.ts";
import { SHIPPED_MODEL_DIRECTORY } from "../gpu-runner/model/shipped-model.ts";
import { serializeAdapter } from "../gpu-runner/pica/adapter-format.ts";
import { loadOrComputeBasis } from "../gpu-runner/pica/basis.ts";
import { Rng } from "../gpu-runner/random.ts";
import { randomAdapter } from "../gpu-runner/testing/random-adapters.ts";
import {
  closedLoop,
  poissonLoad,
  powerLawSampler,
  requestSource,
  streamCompletion,
  timePerOutputToken,
  timeToFirstToken,
  type LoadRequest,
  type StreamedCompletion,
  type WorkloadRanges,
} from "./load.ts";
import { formatTask, toChatJsonl } from "./quality-tasks.ts";
import { otherProcessCores, processCpuSeconds, readCpuTicks, type CpuTicks } from "./cpu-usage.ts";
import { InternalApi, readResidentAdapters, waitForIdle, type ResidentAdapters } from "./runner-client.ts";
import { startRunner, type RunnerProcess } from "../stack/runner-process.ts";
import { median, percentile, progress, round } from "./stats.ts";

const SEED = 20_240_601;
const ADAPTERS = 1000;
const SERVING_RANK = 8;
const R_MAX = 32; // the shipped basis, pica-basis-r32.safetensors
const ADAPTER_SCALE = 0.1; // small M keeps outputs (and so their lengths) close to the base model's
const MAX_BATCH = 16;
const CLIENTS = 2 * MAX_BATCH; // closed loop: enough to keep every row busy
const ALPHA = 1; // adapter popularity ∝ 1/(i+1)^ALPHA
const RANGES: WorkloadRanges = { promptChars: [24, 56], maxTokens: [16, 56] };
const PRIME_CONCURRENCY = MAX_BATCH;
// The runner is started with this secret, and every route needs it (drawn per run: never on disk).
const RUNNER_SECRET = randomBytes(24).toString("hex");
const AUTH = runnerAuthorization(RUNNER_SECRET);

const THROUGHPUT_ROUNDS = 12; // many short rounds: the medians shrug off bursts of other work on the machine
const WARMUP_MS = 500; // lets the batch fill before the window opens
const WINDOW_MS = 2000;
const LATENCY_ROUNDS = 3;
const LATENCY_MS = 6000;
const LOAD_FRACTION = 0.55; // Poisson rate as a fraction of the base capacity in requests/s
const TRAINING_PAIRS = 3;
const TRAINING_START_TIMEOUT_MS = 90_000;

type SettingName = "base" | "1" | "100" | "1000";

/** One setting: the models its requests may name and how one is picked. */
interface Setting {
  name: SettingName;
  models: string[];
  pick: (rng: Rng) => number;
}

/** A setting's requests from a seed: the same prompts and lengths for every setting. */
type RequestSourceOf = (setting: Setting, seed: number) => () => LoadRequest;

/** Per-round figures of the throughput rounds, by setting. */
interface ThroughputRounds {
  tokensPerSecond: Map<SettingName, number[]>;
  requestsPerSecond: Map<SettingName, number[]>;
  tokensPerRunnerCpuSecond: Map<SettingName, number[]>;
  outputTokens: Map<SettingName, number[]>; // of every finished request
  otherCores: number[]; // per window
}

/** Runs the serve bench and returns its figures. */
export async function runServeBench(): Promise<Record<string, unknown>> {
  const started = performance.now();
  const directory = await mkdtemp(join(tmpdir(), "pica-serve-bench-"));
  let runner: RunnerProcess | null = null;
  try {
    const adapterDirectory = join(directory, "adapters");
    const adapterIds = await writeAdapters(adapterDirectory);
    progress("starting the runner…");
    runner = await startRunner({
      args: [
        "--model",
        SHIPPED_MODEL_DIRECTORY,
        "--adapter-dir",
        adapterDirectory,
        "--jobs-dir",
        join(directory, "jobs"),
        "--rank",
        String(SERVING_RANK),
        "--r-max",
        String(R_MAX),
        "--max-batch",
        String(MAX_BATCH),
        "--max-adapters",
        String(ADAPTERS + 200),
      ],
      env: { RUNNER_SECRET }, // not a flag, so it stays out of the process list
    });
    const url = runner.url;
    progress(`runner at ${url}; loading all ${ADAPTERS} adapters with one-token requests…`);
    await primeAdapters(url, adapterIds);
    await residentAdapters(url);

    const settings: Setting[] = [
      { name: "base", models: [BASE_MODEL_ID], pick: () => 0 },
      { name: "1", models: adapterIds.slice(0, 1), pick: () => 0 },
      { name: "100", models: adapterIds.slice(0, 100), pick: powerLawSampler(100, ALPHA) },
      { name: "1000", models: adapterIds, pick: powerLawSampler(ADAPTERS, ALPHA) },
    ];
    const source: RequestSourceOf = (setting, seed) => {
      const modelRng = new Rng(seed ^ 0x5bd1e995);
      return requestSource(new Rng(seed), RANGES, () => setting.models[setting.pick(modelRng)]);
    };
    const errors: string[] = [];
    const throughput = await measureThroughput(url, settings, source, [runner.child.pid!, process.pid], errors);
    const baseRequestsPerSecond = median(throughput.requestsPerSecond.get("base")!);
    const rate = LOAD_FRACTION * baseRequestsPerSecond;
    progress(
      `latency: Poisson arrivals at ${rate.toFixed(2)} req/s (${LOAD_FRACTION} × base capacity ${baseRequestsPerSecond.toFixed(2)} req/s), ${LATENCY_ROUNDS} rounds × ${LATENCY_MS} ms…`,
    );
    const latency = await measureLatency(url, settings, source, rate, errors);
    const training = await latencyUnderTraining(url, new InternalApi(url, RUNNER_SECRET), (seed) => source(settings[2], seed), rate, errors);
    const resident = await residentAdapters(url); // after every setting: none was evicted on the way

    const figures: Record<string, unknown> = {
      config: `shipped model ${BASE_MODEL_ID} on cpu (${cpus().length} cores, shared with the clients); ${ADAPTERS} rank-${SERVING_RANK} adapters; max batch ${MAX_BATCH}; ${CLIENTS} clients; prompts ${RANGES.promptChars.join("-")} tokens, outputs ${RANGES.maxTokens.join("-")}; power law alpha ${ALPHA}`,
    };
    const { tokensPerSecond, tokensPerRunnerCpuSecond, outputTokens, otherCores } = throughput;
    // Throughput of setting a over setting b: the median of per-round ratios.
    const ratio = (perRound: Map<SettingName, number[]>, a: SettingName, b: SettingName) => median(perRound.get(a)!.map((t, i) => t / perRound.get(b)![i]));
    for (const s of settings) figures[`tok_s_${s.name}`] = round(median(tokensPerSecond.get(s.name)!));
    figures.thr_1000_over_1 = round(ratio(tokensPerSecond, "1000", "1"));
    figures.thr_mixed_over_base = round(ratio(tokensPerSecond, "1000", "base"));
    figures.thr_100_over_base = round(ratio(tokensPerSecond, "100", "base"));
    figures.thr_1_over_base = round(ratio(tokensPerSecond, "1", "base"));
    // The same per runner CPU-second: steadier where other processes take CPU time from the runner.
    if (settings.every((s) => tokensPerRunnerCpuSecond.get(s.name)!.length === THROUGHPUT_ROUNDS)) {
      for (const s of settings) figures[`tok_per_runner_cpu_s_${s.name}`] = round(median(tokensPerRunnerCpuSecond.get(s.name)!));
      figures.cpu_thr_1000_over_1 = round(ratio(tokensPerRunnerCpuSecond, "1000", "1"));
      figures.cpu_thr_mixed_over_base = round(ratio(tokensPerRunnerCpuSecond, "1000", "base"));
    }
    for (const s of settings) {
      const completions = latency.get(s.name)!;
      const ttft = numbers(completions.map(timeToFirstToken));
      const tpot = numbers(completions.map(timePerOutputToken));
      figures[`ttft_ms_p50_${s.name}`] = round(percentile(ttft, 50));
      figures[`ttft_ms_p99_${s.name}`] = round(percentile(ttft, 99));
      figures[`tpot_ms_p50_${s.name}`] = round(percentile(tpot, 50));
      figures[`latency_requests_${s.name}`] = completions.length;
    }
    Object.assign(figures, {
      resident_adapters: resident.count,
      resident_adapters_source: resident.source,
      ...training,
      poisson_rate_req_s: round(rate),
      base_capacity_req_s: round(baseRequestsPerSecond),
      mean_output_tokens: Object.fromEntries(settings.map((s) => [s.name, round(mean(outputTokens.get(s.name)!), 3)])),
      // CPU cores that unrelated processes kept busy during the throughput windows.
      other_process_cores_median: otherCores.length > 0 ? round(median(otherCores), 2) : null,
      other_process_cores_max: otherCores.length > 0 ? round(Math.max(...otherCores), 2) : null,
      errors: errors.length,
      ...(errors.length > 0 ? { first_error: errors[0] } : {}),
      seconds: round((performance.now() - started) / 1000, 3),
    });
    return figures;
  } finally {
    await runner?.stop();
    await rm(directory, { recursive: true, force: true });
  }
}

/** Closed-loop rounds at saturation; settings rotate each round on the same warm runner. */
async function measureThroughput(url: string, settings: Setting[], source: RequestSourceOf, pids: number[], errors: string[]): Promise<ThroughputRounds> {
  progress(`throughput: ${THROUGHPUT_ROUNDS} rounds × ${settings.length} settings, ${CLIENTS} closed-loop clients, ${WINDOW_MS} ms windows…`);
  await closedLoop(url, source(settings[settings.length - 1], SEED - 1), { clients: CLIENTS, warmupMs: 0, windowMs: 2000, headers: AUTH }); // warm-up, not measured
  await waitForIdle(url, AUTH);
  const perSetting = () => new Map(settings.map((s) => [s.name, [] as number[]]));
  const rounds: ThroughputRounds = {
    tokensPerSecond: perSetting(),
    requestsPerSecond: perSetting(),
    tokensPerRunnerCpuSecond: perSetting(),
    outputTokens: perSetting(),
    otherCores: [],
  };
  for (let r = 0; r < THROUGHPUT_ROUNDS; r++) {
    for (const setting of rotated(settings, r)) {
      const ticks: Record<"open" | "close", CpuTicks | null> = { open: null, close: null };
      const onWindow = (edge: "open" | "close") => (ticks[edge] = readCpuTicks(pids));
      const result = await closedLoop(url, source(setting, SEED + r), { clients: CLIENTS, warmupMs: WARMUP_MS, windowMs: WINDOW_MS, onWindow, headers: AUTH });
      errors.push(...result.errors);
      rounds.tokensPerSecond.get(setting.name)!.push((result.tokens * 1000) / result.windowMs);
      rounds.requestsPerSecond.get(setting.name)!.push((result.requests * 1000) / result.windowMs);
      rounds.outputTokens.get(setting.name)!.push(...result.completions.map((c) => c.completionTokens));
      const runnerCpuSeconds = processCpuSeconds(ticks.open, ticks.close, 0);
      if (runnerCpuSeconds !== null && runnerCpuSeconds > 0) rounds.tokensPerRunnerCpuSecond.get(setting.name)!.push(result.tokens / runnerCpuSeconds);
      const others = otherProcessCores(ticks.open, ticks.close);
      if (others !== null) rounds.otherCores.push(others);
      if (!(await waitForIdle(url, AUTH))) throw new Error(`the runner did not go idle after the ${setting.name} window of round ${r + 1}`);
    }
    const last = (figures: Map<SettingName, number[]>, name: SettingName) => figures.get(name)!.at(-1)?.toFixed(0) ?? "?";
    const busy =
      rounds.otherCores.length > 0 ? `; other processes used ${Math.max(...rounds.otherCores.slice(-settings.length)).toFixed(1)} cores at most` : "";
    progress(
      `round ${r + 1}/${THROUGHPUT_ROUNDS}: ${settings.map((s) => `${s.name} ${last(rounds.tokensPerSecond, s.name)} tok/s (${last(rounds.tokensPerRunnerCpuSecond, s.name)} per runner CPU-s)`).join(", ")}${busy}`,
    );
  }
  return rounds;
}

/** Poisson rounds below saturation; every setting's completions pooled over the rounds. */
async function measureLatency(
  url: string,
  settings: Setting[],
  source: RequestSourceOf,
  rate: number,
  errors: string[],
): Promise<Map<SettingName, StreamedCompletion[]>> {
  const latency = new Map(settings.map((s) => [s.name, [] as StreamedCompletion[]]));
  for (let r = 0; r < LATENCY_ROUNDS; r++) {
    for (const setting of rotated(settings, r)) {
      latency.get(setting.name)!.push(...(await poissonRun(url, source(setting, SEED + 100 + r), SEED + 200 + r, rate, errors)));
    }
    progress(`round ${r + 1}/${LATENCY_ROUNDS}: ${settings.map((s) => `${s.name} TTFT p50 ${ttftP50(latency.get(s.name)!).toFixed(0)} ms`).join(", ")}`);
  }
  return latency;
}

/** Writes ADAPTERS distinct random adapters against the shipped basis; returns their ids. */
async function writeAdapters(directory: string): Promise<string[]> {
  progress(`writing ${ADAPTERS} random rank-${SERVING_RANK} adapters…`);
  const { config, weights } = await loadCheckpoint(SHIPPED_MODEL_DIRECTORY);
  const { basis } = await loadOrComputeBasis(SHIPPED_MODEL_DIRECTORY, config, weights, { rMax: R_MAX });
  const store = new DirectoryAdapterStore(directory);
  const ids: string[] = [];
  for (let i = 0; i < ADAPTERS; i++) {
    const id = `serve-bench-${String(i).padStart(4, "0")}`;
    await store.write(id, serializeAdapter(randomAdapter(config, basis, { rank: SERVING_RANK, seed: SEED + i, scale: ADAPTER_SCALE })));
    ids.push(id);
  }
  return ids;
}

/** Makes every adapter resident with a one-token request each; throws on the first that fails. */
async function primeAdapters(url: string, ids: string[]): Promise<void> {
  const started = performance.now();
  let next = 0;
  const worker = async () => {
    while (next < ids.length) {
      const id = ids[next++];
      const completion = await streamCompletion(url, { model: id, prompt: "Ada had a", maxTokens: 1 }, undefined, AUTH);
      if (completion.error !== null) throw new Error(`loading adapter ${id} failed: ${completion.error}`);
    }
  };
  await Promise.all(Array.from({ length: PRIME_CONCURRENCY }, worker));
  progress(`loaded ${ids.length} adapters in ${((performance.now() - started) / 1000).toFixed(1)} s`);
}

/** The runner's resident adapter count; fails loudly if the runner cannot say. */
async function residentAdapters(url: string): Promise<ResidentAdapters> {
  const resident = await readResidentAdapters(url, AUTH);
  progress(`resident adapters: ${resident.count} (from ${resident.source})`);
  return resident;
}

/** One Poisson latency run of LATENCY_MS, waiting for the runner to drain afterwards. */
async function poissonRun(url: string, next: () => LoadRequest, seed: number, rate: number, errors: string[]): Promise<StreamedCompletion[]> {
  const completions = await poissonLoad(url, next, new Rng(seed), { ratePerSecond: rate, durationMs: LATENCY_MS, headers: AUTH });
  errors.push(...completions.flatMap((c) => (c.error !== null ? [c.error] : [])));
  await waitForIdle(url, AUTH);
  return completions.filter((c) => c.error === null);
}

/**
 * The 100-adapter latency run without and with a training job on the same runner, alternated.
 * Each "with" run starts a fresh job, waits until it has taken a step, and cancels it afterwards.
 * When the runner has no training API the figures are null and the reason is reported.
 */
async function latencyUnderTraining(
  url: string,
  api: InternalApi,
  source: (seed: number) => () => LoadRequest,
  rate: number,
  errors: string[],
): Promise<Record<string, unknown>> {
  const trainingFile = toChatJsonl(formatTask({ train: 64, eval: 1 }).train);
  const without = { ttft: [] as number[], tpot: [] as number[] };
  const during = { ttft: [] as number[], tpot: [] as number[] };
  let stepsDuringLoad = 0;
  progress(`training during load: ${TRAINING_PAIRS} pairs of 100-adapter latency runs without and with a training job…`);
  try {
    for (let pair = 0; pair < TRAINING_PAIRS; pair++) {
      const seed = SEED + 300 + pair;
      const quiet = await poissonRun(url, source(seed), seed, rate, errors);
      without.ttft.push(percentile(numbers(quiet.map(timeToFirstToken)), 50));
      without.tpot.push(percentile(numbers(quiet.map(timePerOutputToken)), 50));

      const id = `serve-bench-job-${pair}`;
      await api.submitJob({ id, training_file: { content: trainingFile }, hyperparameters: { n_epochs: 50, batch_size: 8 }, seed: pair });
      try {
        const running = await api.waitForJob(id, (job) => job.status === "running" && job.step > 0, TRAINING_START_TIMEOUT_MS);
        const busy = await poissonRun(url, source(seed), seed, rate, errors);
        const after = await api.job(id);
        if (after.status !== "running") throw new Error(`training job ${id} was ${after.status} at the end of the measured run, not running`);
        stepsDuringLoad += after.step - running.step;
        during.ttft.push(percentile(numbers(busy.map(timeToFirstToken)), 50));
        during.tpot.push(percentile(numbers(busy.map(timePerOutputToken)), 50));
      } finally {
        await api.cancelJob(id).catch((error: unknown) => progress(`cancelling ${id}: ${(error as Error).message}`));
        await api.waitForJob(id, (job) => ["succeeded", "failed", "cancelled"].includes(job.status), 30_000).catch(() => undefined);
      }
      progress(
        `pair ${pair + 1}/${TRAINING_PAIRS}: TTFT p50 ${without.ttft.at(-1)!.toFixed(0)} ms without, ${during.ttft.at(-1)!.toFixed(0)} ms with training`,
      );
    }
  } catch (error) {
    const message = (error as Error).message;
    progress(`training during load could not be measured: ${message}`);
    return { p50_latency_with_training_over_without: null, per_token_latency_with_training_over_without: null, training_error: message };
  }
  return {
    p50_latency_with_training_over_without: round(median(during.ttft) / median(without.ttft)),
    per_token_latency_with_training_over_without: round(median(during.tpot) / median(without.tpot)),
    ttft_ms_p50_100_without_training: round(median(without.ttft)),
    ttft_ms_p50_100_with_training: round(median(during.ttft)),
    training_steps_during_load: stepsDuringLoad,
  };
}

/** The settings in round-robin order, starting at `round`, so no setting always follows the same one. */
function rotated<T>(items: T[], round: number): T[] {
  const k = round % items.length;
  return [...items.slice(k), ...items.slice(0, k)];
}

function ttftP50(completions: StreamedCompletion[]): number {
  return percentile(numbers(completions.map(timeToFirstToken)), 50);
}

function numbers(values: (number | null)[]): number[] {
  return values.filter((value): value is number => value !== null);
}

function mean(values: number[]): number {
  return values.reduce((sum, value) => sum + value, 0) / values.length;
}
