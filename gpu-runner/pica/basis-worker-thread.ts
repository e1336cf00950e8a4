/**
 * The worker-thread side of basis-worker.ts: opens the checkpoint lazily, computes the basis
 * with the same code as `loadOrComputeBasis`, writes it beside the model, and reports progress
 * and the outcome to the parent as `BasisWorkerMessage`s. Never imported by the main thread.
 */
import { parentPort, workerData } from "node:worker_threads";
import { readCheckpointTensorsLazily } from "../checkpoint/lazy-tensors.ts";
import { readModelConfig } from "../model/checkpoint.ts";
import { validateWeights } from "../model/weights.ts";
import { computeAndStoreBasis } from "./basis.ts";
import type { BasisWorkerInput, BasisWorkerMessage } from "./basis-worker.ts";

const port = parentPort;
if (port === null) throw new Error("basis-worker-thread.ts runs only as a worker thread (see loadOrComputeBasisInBackground)");
const post = (message: BasisWorkerMessage) => port.postMessage(message);
const { checkpointDirectory, request } = workerData as BasisWorkerInput;

try {
  // config.json and the safetensors headers only: each weight is read when its P is computed, and
  // the tokenizer, which loadCheckpoint would also load, plays no part in the basis.
  const config = await readModelConfig(checkpointDirectory);
  const weights = await readCheckpointTensorsLazily(checkpointDirectory);
  validateWeights(config, weights);
  const basis = await computeAndStoreBasis(checkpointDirectory, config, weights, request, (done, total) => post({ kind: "progress", done, total }));
  post({ kind: "stored", id: basis.id });
} catch (error) {
  post({ kind: "failed", message: error instanceof Error ? error.message : String(error) });
}
