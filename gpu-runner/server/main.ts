/**
 * The runner process: `npm run runner -- [flags]` (or environment variables) loads a model and its
 * PiCa basis, serves the OpenAI-compatible API with continuous batching and an adapter cache, and
 * shuts down gracefully on SIGINT/SIGTERM (stops accepting, lets running requests finish).
 *
 *   --model DIR (RUNNER_MODEL)          checkpoint directory; default: the shipped model
 *   --host H --port P (RUNNER_HOST/PORT) default 127.0.0.1:8400; port 0 picks a free one
 *   --provider cpu|cuda|webgpu          onnxruntime execution provider; default cpu
 *   --threads N                         intra-op threads; default: one per logical CPU
 *   --max-batch N --max-queue N         rows decoded together; requests allowed to wait
 *   --rank R --r-max R                  serving rank of adapters; rows of the stored basis
 *   --max-adapters N --max-adapter-mb M resident adapter budget (count and megabytes)
 *   --adapter-dir DIR (RUNNER_ADAPTER_DIR) local adapter store
 *   --edge-url URL (RUNNER_EDGE_URL)    read adapters from the control plane instead (and, with --secret, heartbeat to it every 10 s)
 *   --public-url URL (RUNNER_PUBLIC_URL) how the control plane reaches this runner; default: the listening address
 *   --secret S (RUNNER_SECRET)          shared secret of the internal API; unset: no internal API
 *   --jobs-dir DIR (RUNNER_JOBS_DIR)    where training jobs and their checkpoints live
 *   --micro-batch-tokens N              padded tokens per training slice (at least one row); default 64
 *   --training-wait-ms MS               longest a training slice waits for idle inference; default 1000
 *   --shutdown-grace-s S                on SIGTERM, how long running requests may finish; default 25
 */
import { serve } from "@hono/node-server";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { AdapterCache } from "../adapters/adapter-cache.ts";
import { DirectoryAdapterStore, HttpAdapterStore } from "../adapters/adapter-store.ts";
import { CallbackClient } from "../jobs/callbacks.ts";
import { JobManager } from "../jobs/job-manager.ts";
import { LlamaEngine } from "../engine/llama-engine.ts";
import { loadCheckpoint } from "../model/checkpoint.ts";
import { SHIPPED_MODEL_DIRECTORY } from "../model/shipped-model.ts";
import { loadOrComputeBasis } from "../pica/basis.ts";
import type { ExecutionProvider } from "../runtime/onnx-session.ts";
import { createRunnerApp } from "./app.ts";
import { startHeartbeat, type Heartbeat } from "./heartbeat.ts";
import { ComputeGate } from "./compute-gate.ts";
import { RunnerMetrics } from "./metrics.ts";
import { Scheduler } from "./scheduler.ts";

const env = process.env;
const { values } = parseArgs({
  options: {
    model: { type: "string", default: env.RUNNER_MODEL ?? SHIPPED_MODEL_DIRECTORY },
    host: { type: "string", default: env.RUNNER_HOST ?? "127.0.0.1" },
    port: { type: "string", default: env.RUNNER_PORT ?? "8400" },
    provider: { type: "string", default: env.RUNNER_PROVIDER ?? "cpu" },
    threads: { type: "string", default: env.RUNNER_THREADS },
    "max-batch": { type: "string", default: env.RUNNER_MAX_BATCH ?? "16" },
    "max-queue": { type: "string", default: env.RUNNER_MAX_QUEUE ?? "256" },
    rank: { type: "string", default: env.RUNNER_RANK ?? "16" },
    "r-max": { type: "string", default: env.RUNNER_R_MAX ?? "32" },
    "max-adapters": { type: "string", default: env.RUNNER_MAX_ADAPTERS ?? "1000" },
    "max-adapter-mb": { type: "string", default: env.RUNNER_MAX_ADAPTER_MB ?? "1024" },
    "adapter-dir": { type: "string", default: env.RUNNER_ADAPTER_DIR ?? join(process.cwd(), ".cache", "adapters") },
    "edge-url": { type: "string", default: env.RUNNER_EDGE_URL },
    "public-url": { type: "string", default: env.RUNNER_PUBLIC_URL },
    secret: { type: "string", default: env.RUNNER_SECRET },
    "jobs-dir": { type: "string", default: env.RUNNER_JOBS_DIR ?? join(process.cwd(), ".cache", "jobs") },
    "micro-batch-tokens": { type: "string", default: env.RUNNER_MICRO_BATCH_TOKENS ?? "64" },
    "training-wait-ms": { type: "string", default: env.RUNNER_TRAINING_WAIT_MS ?? "1000" },
    "shutdown-grace-s": { type: "string", default: env.RUNNER_SHUTDOWN_GRACE_S ?? "25" },
  },
});

/** How long an idle client connection stays open: longer than any client's pool keeps one idle. */
const KEEP_ALIVE_TIMEOUT_MS = 65_000;

function integer(name: string, value: string | undefined, min: number): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < min) throw new Error(`--${name} must be an integer ≥ ${min}, got ${value}`);
  return parsed;
}

async function main(): Promise<void> {
  const provider = values.provider as ExecutionProvider;
  if (!["cpu", "cuda", "webgpu"].includes(provider)) throw new Error(`--provider must be cpu, cuda or webgpu, got ${values.provider}`);
  const checkpoint = await loadCheckpoint(values.model!);
  const { config, weights, tokenizer, directory } = checkpoint;
  const { basis, computed, seconds } = await loadOrComputeBasis(directory, config, weights, { rMax: integer("r-max", values["r-max"], 1) });
  if (computed) console.error(`computed the PiCa basis in ${seconds.toFixed(1)} s`);
  const rank = integer("rank", values.rank, 1);
  const engine = await LlamaEngine.create(config, weights, {
    executionProvider: provider,
    ...(values.threads !== undefined ? { intraOpThreads: integer("threads", values.threads, 1) } : {}),
    adapters: { basis, rank },
  });
  const secret = values.secret ?? null;
  const edgeUrl = values["edge-url"] ?? null;
  if (edgeUrl !== null && secret === null) throw new Error("--edge-url needs --secret (the control plane's runner secret)");
  const store = edgeUrl !== null ? new HttpAdapterStore({ baseUrl: edgeUrl, secret: secret! }) : new DirectoryAdapterStore(values["adapter-dir"]!);
  // Gauges read the scheduler, cache, gate and jobs at scrape time, after all of them exist.
  const metrics: RunnerMetrics = new RunnerMetrics({ scheduler: () => scheduler.stats, adapters: () => cache.stats(), jobs: () => jobs.stats(), training: () => gate.stats() });
  const cache = new AdapterCache(
    engine,
    store,
    { maxAdapters: integer("max-adapters", values["max-adapters"], 1), maxBytes: integer("max-adapter-mb", values["max-adapter-mb"], 1) * 2 ** 20 },
    (seconds) => metrics.adapterLoaded(seconds),
  );
  const publishAdapter = async (id: string, bytes: Uint8Array) => {
    const resident = await cache.insert(id, bytes); // checked before it is stored
    if (store instanceof DirectoryAdapterStore) await store.write(id, bytes);
    return resident;
  };
  const gate = new ComputeGate({ maxTrainingWaitMs: integer("training-wait-ms", values["training-wait-ms"], 0) });
  const jobs = new JobManager({
    model: { config, weights, tokenizer, basis },
    directory: values["jobs-dir"]!,
    maxRank: rank,
    callbacks: new CallbackClient({ secret, log: (message) => console.error(message) }),
    data: { secret, trustedOrigins: edgeUrl === null ? [] : [new URL(edgeUrl).origin], maxBytes: 128 * 2 ** 20 },
    compute: (work) => gate.training(work),
    microBatchTokens: integer("micro-batch-tokens", values["micro-batch-tokens"], 1),
    publishAdapter: async (id, bytes) => void (await publishAdapter(id, bytes)),
    log: (message) => console.error(message),
  });
  const scheduler: Scheduler = new Scheduler(engine, tokenizer, {
    maxBatch: integer("max-batch", values["max-batch"], 1),
    maxQueue: integer("max-queue", values["max-queue"], 0),
    adapters: cache,
    gate,
    observer: metrics.observer,
  });
  if (secret === null) console.error("no --secret: the internal API (adapters, training jobs) is off");
  await jobs.start();
  const modelId = directory.split(/[\\/]/).filter(Boolean).pop()!;
  const app = createRunnerApp({
    engine,
    tokenizer,
    scheduler,
    modelId,
    knowsAdapter: () => true,
    prepareAdapter: async (id) => (await cache.acquire(id))(),
    metrics,
    internal: secret === null ? null : { secret, jobs, adapters: cache, publishAdapter, peft: { basis, config, baseModelName: modelId, defaultRank: rank } },
    health: () => ({ adapters: { resident: cache.stats().resident }, jobs: jobs.stats().byStatus }),
  });
  let heartbeat: Heartbeat | null = null;
  // The edge keeps idle connections to runners pooled for a few seconds (workerd: 5 s, Node's
  // default here too). A server that closes an idle connection at the moment the client reuses
  // it loses that request; a much longer idle timeout on this side leaves closing to the client.
  const serverOptions = { keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS, headersTimeout: KEEP_ALIVE_TIMEOUT_MS + 1000 };
  const server = serve({ fetch: app.fetch, hostname: values.host!, port: integer("port", values.port, 0), serverOptions }, (info) => {
    console.log(`runner listening on http://${info.address}:${info.port} (model ${modelId}, basis ${basis.id.slice(0, 12)}…, ${provider})`);
    const publicUrl = values["public-url"] ?? `http://${info.address}:${info.port}`;
    const report = () => ({ id: publicUrl, url: publicUrl, base_model: modelId, basis_id: basis.id, running: scheduler.stats.running, waiting: scheduler.stats.waiting, resident_adapters: cache.stats().resident });
    if (edgeUrl !== null) heartbeat = startHeartbeat({ edgeUrl, secret: secret!, report });
  });

  const shutdownGraceMs = integer("shutdown-grace-s", values["shutdown-grace-s"], 0) * 1000;
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.error(`${signal}: no new requests; finishing the running ones (checkpointing training)…`);
    heartbeat?.stop();
    server.close();
    await jobs.shutdown(); // the running job checkpoints and resumes at the next start
    await scheduler.close(shutdownGraceMs);
    await engine.dispose();
    process.exit(0);
  };
  process.on("SIGINT", () => void stop("SIGINT"));
  process.on("SIGTERM", () => void stop("SIGTERM"));
}

main().catch((error: unknown) => {
  console.error(`error: ${(error as Error).message}`);
  process.exit(1);
});
