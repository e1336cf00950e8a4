/**
 * The runner process: `npm run runner -- [flags]` (or environment variables) loads a model,
 * serves the OpenAI-compatible API with continuous batching and an adapter cache, computes or
 * loads the model's PiCa basis in the background (base-model requests are served meanwhile;
 * adapters and training wait for it), and shuts down gracefully on SIGINT/SIGTERM (stops
 * accepting, lets running requests finish).
 *
 *   --model DIR (RUNNER_MODEL)          checkpoint directory; default: the shipped model
 *   --host H --port P (RUNNER_HOST/PORT) default 127.0.0.1:8400; port 0 picks a free one
 *   --provider cpu|cuda|webgpu          onnxruntime execution provider for serving, training and all; default cpu
 *   --threads N                         intra-op threads; default: one per logical CPU
 *   --cache-dir DIR (RUNNER_CACHE_DIR)  where the model's weights are kept in onnxruntime's layout; default .cache/models
 *   --max-batch N --max-queue N         rows decoded together; requests allowed to wait
 *   --kv-cache-mb M (RUNNER_KV_CACHE_MB) memory for the KV cache of a full batch; it bounds each request's context; default: a quarter of the memory
 *   --prefill-chunk N                   most prompt tokens read per step beside the decoding rows (fewer where a step's
 *                                       prompt tokens would cost more than a decode step); default 256
 *   --r-max R (RUNNER_R_MAX)            rows of the PiCa basis: the largest adapter rank served and trained; default
 *                                       the model's ceiling, min(256, min(out, in) of every linear weight)
 *   --rank R (RUNNER_RANK)              PiCa rank of a PEFT import that names none; default 16 (within --r-max)
 *   --max-adapters N --max-adapter-mb M resident adapter budget (count and megabytes)
 *   --adapter-dir DIR (RUNNER_ADAPTER_DIR) local adapter store
 *   --edge-url URL (RUNNER_EDGE_URL)    read adapters from the control plane instead (and, with --secret, heartbeat to it every 10 s)
 *   --public-url URL (RUNNER_PUBLIC_URL) how the control plane reaches this runner; default: the listening address
 *   --secret S (RUNNER_SECRET)          the runner secret: every route needs it as a bearer token; unset: every route is open
 *                                       and the internal API is off (for local use only)
 *   --max-body-mb M (RUNNER_MAX_BODY_MB) largest body of the public API; default: room for the longest prompt that fits
 *   --jobs-dir DIR (RUNNER_JOBS_DIR)    where training jobs and their checkpoints live
 *   --micro-batch-tokens N              padded tokens per training slice (at least one row); default 64
 *   --training-wait-ms MS               longest a training slice waits for idle inference; default 1000
 *   --shutdown-grace-s S                on SIGTERM, how long running requests may finish; default 25
 */
import { serve } from "@hono/node-server";
import { readFile } from "node:fs/promises";
import { totalmem } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { AdapterCache } from "../adapters/adapter-cache.ts";
import { DirectoryAdapterStore, HttpAdapterStore } from "../adapters/adapter-store.ts";
import { CallbackClient } from "../jobs/callbacks.ts";
import { JobManager } from "../jobs/job-manager.ts";
import { LlamaEngine } from "../engine/llama-engine.ts";
import { loadCheckpoint } from "../model/checkpoint.ts";
import { SHIPPED_MODEL_DIRECTORY } from "../model/shipped-model.ts";
import { BASIS_PENDING } from "../../src/protocol/heartbeat.ts";
import { BasisNotReadyError } from "../engine/adapter-registry.ts";
import { openOrWriteWeightFile, weightCacheDirectory } from "../model/weight-file.ts";
import { DEFAULT_BLOCK_SIZE, quantizationOf, WEIGHT_PRECISIONS, type WeightPrecision } from "../quantize/block-format.ts";
import { loadOrComputeBasisInBackground } from "../pica/basis-worker.ts";
import { DEFAULT_TARGET_MODULES, type Basis } from "../pica/types.ts";
import { basisRowsFor, rankCeiling, rankLimitsBody } from "../../src/protocol/adapter-rank.ts";
import { linearShapes } from "../model/weights.ts";
import type { ExecutionProvider, OnnxSessionOptions } from "../runtime/onnx-session.ts";
import { createRunnerApp } from "./app.ts";
import { bytesPerTokenBound } from "./request-size.ts";
import { assertUsableSecret } from "./runner-auth.ts";
import { startHeartbeat, type Heartbeat } from "./heartbeat.ts";
import { measureTemplateTokens } from "../training/template-tokens.ts";
import { DEFAULT_TEMPLATE_TOKENS } from "../../src/protocol/training-figures.ts";
import { ComputeGate } from "./compute-gate.ts";
import { RunnerMetrics } from "./metrics.ts";
import { DEFAULT_PREFILL_CHUNK_TOKENS, Scheduler } from "./scheduler.ts";

const env = process.env;
const { values } = parseArgs({
  options: {
    model: { type: "string", default: env.RUNNER_MODEL ?? SHIPPED_MODEL_DIRECTORY },
    weights: { type: "string", default: env.RUNNER_WEIGHTS ?? "f32" },
    "block-size": { type: "string", default: env.RUNNER_BLOCK_SIZE ?? String(DEFAULT_BLOCK_SIZE) },
    host: { type: "string", default: env.RUNNER_HOST ?? "127.0.0.1" },
    port: { type: "string", default: env.RUNNER_PORT ?? "8400" },
    provider: { type: "string", default: env.RUNNER_PROVIDER ?? "cpu" },
    threads: { type: "string", default: env.RUNNER_THREADS },
    "cache-dir": { type: "string", default: env.RUNNER_CACHE_DIR ?? join(process.cwd(), ".cache", "models") },
    "max-batch": { type: "string", default: env.RUNNER_MAX_BATCH ?? "16" },
    "max-queue": { type: "string", default: env.RUNNER_MAX_QUEUE ?? "256" },
    "kv-cache-mb": { type: "string", default: env.RUNNER_KV_CACHE_MB },
    "prefill-chunk": { type: "string", default: env.RUNNER_PREFILL_CHUNK ?? String(DEFAULT_PREFILL_CHUNK_TOKENS) },
    rank: { type: "string", default: env.RUNNER_RANK ?? "16" },
    "r-max": { type: "string", default: env.RUNNER_R_MAX },
    "max-adapters": { type: "string", default: env.RUNNER_MAX_ADAPTERS ?? "1000" },
    "max-adapter-mb": { type: "string", default: env.RUNNER_MAX_ADAPTER_MB ?? "1024" },
    "adapter-dir": { type: "string", default: env.RUNNER_ADAPTER_DIR ?? join(process.cwd(), ".cache", "adapters") },
    "edge-url": { type: "string", default: env.RUNNER_EDGE_URL },
    "public-url": { type: "string", default: env.RUNNER_PUBLIC_URL },
    secret: { type: "string", default: env.RUNNER_SECRET },
    "max-body-mb": { type: "string", default: env.RUNNER_MAX_BODY_MB },
    "jobs-dir": { type: "string", default: env.RUNNER_JOBS_DIR ?? join(process.cwd(), ".cache", "jobs") },
    "micro-batch-tokens": { type: "string", default: env.RUNNER_MICRO_BATCH_TOKENS ?? "64" },
    "training-wait-ms": { type: "string", default: env.RUNNER_TRAINING_WAIT_MS ?? "1000" },
    "shutdown-grace-s": { type: "string", default: env.RUNNER_SHUTDOWN_GRACE_S ?? "25" },
  },
});

/** How long an idle client connection stays open: longer than any client's pool keeps one idle. */
const KEEP_ALIVE_TIMEOUT_MS = 65_000;

function seconds(since: number): string {
  return ((performance.now() - since) / 1000).toFixed(1);
}

function integer(name: string, value: string | undefined, min: number): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < min) throw new Error(`--${name} must be an integer ≥ ${min}, got ${value}`);
  return parsed;
}

async function main(): Promise<void> {
  const provider = values.provider as ExecutionProvider;
  if (!["cpu", "cuda", "webgpu"].includes(provider)) throw new Error(`--provider must be cpu, cuda or webgpu, got ${values.provider}`);
  const session: OnnxSessionOptions = {
    executionProvider: provider,
    ...(values.threads !== undefined ? { intraOpThreads: integer("threads", values.threads, 1) } : {}),
  };
  const precision = values.weights as WeightPrecision;
  if (!WEIGHT_PRECISIONS.includes(precision)) throw new Error(`--weights must be one of ${WEIGHT_PRECISIONS.join(", ")}, got ${values.weights}`);
  const quantization = quantizationOf(precision, integer("block-size", values["block-size"], 1));
  // Weights are read tensor by tensor into the weight file once (quantized on the way), then only referenced.
  const checkpoint = await loadCheckpoint(values.model!, { lazy: true });
  const { config, weights, tokenizer, directory } = checkpoint;
  const started = performance.now();
  const cacheDirectory = await weightCacheDirectory(values["cache-dir"]!, directory, config, quantization);
  const { file: weightFile, written } = await openOrWriteWeightFile(cacheDirectory, config, weights, quantization);
  if (written)
    console.error(
      `wrote the ${precision} weights in onnxruntime's layout (${(weightFile.bytes / 2 ** 30).toFixed(2)} GiB) in ${seconds(started)} s to ${weightFile.directory}`,
    );
  const importRank = integer("rank", values.rank, 1);
  // Every adapter rank the model allows is served: the basis holds that many rows (adapter-rank.ts).
  const shapes = linearShapes(config);
  const ceiling = basisRowsFor(shapes, DEFAULT_TARGET_MODULES);
  const rMax = values["r-max"] === undefined ? ceiling : integer("r-max", values["r-max"], 1);
  if (rMax > ceiling) throw new Error(`--r-max must be at most ${ceiling} for this model (min(256, min(out, in) of every linear weight)), got ${rMax}`);
  const rankLimits = { linearShapes: shapes, basisRows: rMax };
  const maxRank = rankCeiling(rankLimits, DEFAULT_TARGET_MODULES).rank;
  const maxBatch = integer("max-batch", values["max-batch"], 1);
  const kvCacheMb = values["kv-cache-mb"] === undefined ? Math.floor(totalmem() / 4 / 2 ** 20) : integer("kv-cache-mb", values["kv-cache-mb"], 1);
  const engine = await LlamaEngine.create(config, weights, {
    ...session,
    weightFile,
    adapters: { basis: null },
    kvCache: { budgetBytes: kvCacheMb * 2 ** 20 },
  });
  console.error(`loaded the model (${precision} weights) on ${provider} in ${seconds(started)} s`);

  // The basis: read from beside the model, or computed in a worker while the base model serves.
  const basisProgress = {
    status: "loading" as "loading" | "computing" | "ready" | "failed",
    done: 0,
    total: 0,
    seconds: null as number | null,
    error: null as string | null,
  };
  const basisReady = loadOrComputeBasisInBackground(directory, { rMax, baseFingerprint: weightFile.fingerprint }, (done, total) => {
    basisProgress.status = done < total ? "computing" : basisProgress.status;
    basisProgress.done = done;
    basisProgress.total = total;
  }).then(async ({ basis, computed, seconds: took }) => {
    await engine.setBasis(basis);
    Object.assign(basisProgress, { status: "ready", seconds: took });
    console.error(`${computed ? "computed" : "loaded"} the PiCa basis ${basis.id.slice(0, 12)}… in ${took.toFixed(1)} s; adapters are served`);
    return basis;
  });
  basisReady.catch((error: Error) => {
    Object.assign(basisProgress, { status: "failed", error: error.message });
    console.error(`the PiCa basis could not be computed: ${error.message}; only the base model is served`);
  });
  const readyBasis = (): Basis => {
    const basis = engine.basis;
    if (basis === null) throw new BasisNotReadyError();
    return basis;
  };
  const secret = values.secret || null;
  if (secret !== null) assertUsableSecret(secret);
  const edgeUrl = values["edge-url"] ?? null;
  if (edgeUrl !== null && secret === null) throw new Error("--edge-url needs --secret (the control plane's runner secret)");
  const store = edgeUrl !== null ? new HttpAdapterStore({ baseUrl: edgeUrl, secret: secret! }) : new DirectoryAdapterStore(values["adapter-dir"]!);
  // Gauges read the scheduler, cache, gate and jobs at scrape time, after all of them exist.
  const metrics: RunnerMetrics = new RunnerMetrics({
    scheduler: () => scheduler.stats,
    adapters: () => cache.stats(),
    jobs: () => jobs.stats(),
    training: () => gate.stats(),
  });
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
    model: async () => ({ config, weights, tokenizer, basis: await basisReady, weightFile, session }),
    directory: values["jobs-dir"]!,
    rankLimits,
    basisModules: DEFAULT_TARGET_MODULES,
    callbacks: new CallbackClient({ secret, log: (message) => console.error(message) }),
    data: { secret, trustedOrigins: edgeUrl === null ? [] : [new URL(edgeUrl).origin], maxBytes: 128 * 2 ** 20 },
    compute: (work) => gate.training(work),
    microBatchTokens: integer("micro-batch-tokens", values["micro-batch-tokens"], 1),
    publishAdapter: async (id, bytes) => void (await publishAdapter(id, bytes)),
    log: (message) => console.error(message),
  });
  const scheduler: Scheduler = new Scheduler(engine, tokenizer, {
    maxBatch,
    prefillChunkTokens: integer("prefill-chunk", values["prefill-chunk"], 1),
    adaptivePrefill: true,
    maxQueue: integer("max-queue", values["max-queue"], 0),
    adapters: cache,
    gate,
    observer: metrics.observer,
  });
  if (secret === null) console.error("no --secret: every route is open; for local use only (the internal API for adapters and training jobs is off)");
  const bytesPerToken = bytesPerTokenBound(JSON.parse(await readFile(join(directory, "tokenizer.json"), "utf8")));
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
    secret,
    bytesPerToken,
    ...(values["max-body-mb"] !== undefined ? { maxBodyBytes: integer("max-body-mb", values["max-body-mb"], 1) * 2 ** 20 } : {}),
    internal:
      secret === null
        ? null
        : { jobs, adapters: cache, publishAdapter, peft: () => ({ basis: readyBasis(), config, baseModelName: modelId, defaultRank: importRank }) },
    health: () => ({
      adapters: { resident: cache.stats().resident },
      jobs: jobs.stats().byStatus,
      basis: { ...basisProgress, id: engine.basis?.id ?? null },
      context_tokens: scheduler.contextLimit,
      max_rank: maxRank,
      weights: { precision, block_size: quantization?.blockSize ?? null },
    }),
  });
  // What the edge's estimates count for this model's chat template (the defaults without one).
  let templateTokens = DEFAULT_TEMPLATE_TOKENS;
  try {
    templateTokens = measureTemplateTokens(tokenizer);
  } catch (error) {
    console.error(`the template's tokens could not be measured (${(error as Error).message}); estimates assume ${JSON.stringify(templateTokens)}`);
  }
  let heartbeat: Heartbeat | null = null;
  // The edge keeps idle connections to runners pooled for a few seconds (workerd: 5 s, Node's
  // default here too). A server that closes an idle connection at the moment the client reuses
  // it loses that request; a much longer idle timeout on this side leaves closing to the client.
  const serverOptions = { keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS, headersTimeout: KEEP_ALIVE_TIMEOUT_MS + 1000 };
  const server = serve({ fetch: app.fetch, hostname: values.host!, port: integer("port", values.port, 0), serverOptions }, (info) => {
    console.log(
      `runner listening on http://${info.address}:${info.port} (model ${modelId}, ${provider}, ${scheduler.contextLimit} tokens of context per request)`,
    );
    const publicUrl = values["public-url"] ?? `http://${info.address}:${info.port}`;
    const report = () => ({
      id: publicUrl,
      url: publicUrl,
      base_model: modelId,
      basis_id: engine.basis?.id ?? BASIS_PENDING,
      compatible_basis_ids: engine.basis?.prefixes?.map((prefix) => prefix.id) ?? [],
      running: scheduler.stats.running,
      waiting: scheduler.stats.waiting,
      resident_adapters: cache.stats().resident,
      rank_limits: rankLimitsBody(rankLimits),
      training: { template_tokens: templateTokens, rate: jobs.trainingRate },
    });
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
