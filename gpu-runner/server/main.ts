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
 */
import { serve } from "@hono/node-server";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { AdapterCache } from "../adapters/adapter-cache.ts";
import { DirectoryAdapterStore } from "../adapters/adapter-store.ts";
import { LlamaEngine } from "../engine/llama-engine.ts";
import { loadCheckpoint } from "../model/checkpoint.ts";
import { SHIPPED_MODEL_DIRECTORY } from "../model/shipped-model.ts";
import { loadOrComputeBasis } from "../pica/basis.ts";
import type { ExecutionProvider } from "../runtime/onnx-session.ts";
import { createRunnerApp } from "./app.ts";
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
  },
});

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
  const engine = await LlamaEngine.create(config, weights, {
    executionProvider: provider,
    ...(values.threads !== undefined ? { intraOpThreads: integer("threads", values.threads, 1) } : {}),
    adapters: { basis, rank: integer("rank", values.rank, 1) },
  });
  const cache = new AdapterCache(engine, new DirectoryAdapterStore(values["adapter-dir"]!), {
    maxAdapters: integer("max-adapters", values["max-adapters"], 1),
    maxBytes: integer("max-adapter-mb", values["max-adapter-mb"], 1) * 2 ** 20,
  });
  const scheduler = new Scheduler(engine, tokenizer, {
    maxBatch: integer("max-batch", values["max-batch"], 1),
    maxQueue: integer("max-queue", values["max-queue"], 0),
    adapters: cache,
  });
  const modelId = directory.split(/[\\/]/).filter(Boolean).pop()!;
  const app = createRunnerApp({ engine, tokenizer, scheduler, modelId, knowsAdapter: () => true, prepareAdapter: async (id) => (await cache.acquire(id))() });
  const server = serve({ fetch: app.fetch, hostname: values.host!, port: integer("port", values.port, 0) }, (info) => {
    console.log(`runner listening on http://${info.address}:${info.port} (model ${modelId}, basis ${basis.id.slice(0, 12)}…, ${provider})`);
  });

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.error(`${signal}: no new requests; finishing the running ones…`);
    server.close();
    await scheduler.close();
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
