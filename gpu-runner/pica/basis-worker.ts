/**
 * The PiCa basis computed off the main thread. A runner that starts without a stored basis must
 * keep serving the base model meanwhile, and the computation (a minute or more on a 1B model) is
 * synchronous JS between onnxruntime calls, so it runs in a worker_threads Worker
 * (basis-worker-thread.ts) that opens the checkpoint itself, computes the basis with the code of
 * `loadOrComputeBasis`, writes the file beside the model, and reports progress. The main thread
 * then reads that file back, so what it serves is exactly what was stored.
 */
import { Worker } from "node:worker_threads";
import { readModelConfig } from "../model/checkpoint.ts";
import type { LinearModule } from "../model/weights.ts";
import { readStoredBasis, resolveBasisRequest, type BasisRequest } from "./basis.ts";
import type { Basis } from "./types.ts";

/** What the worker is started with. */
export interface BasisWorkerInput {
  checkpointDirectory: string;
  request: BasisRequest;
}

/** What the worker posts: progress after each P, then either the stored basis's id or why it failed. */
export type BasisWorkerMessage = { kind: "progress"; done: number; total: number } | { kind: "stored"; id: string } | { kind: "failed"; message: string };

const WORKER_ENTRY = new URL("./basis-worker-thread.ts", import.meta.url);

/**
 * The basis of the checkpoint in `checkpointDirectory`: its stored `pica-basis-r{rMax}.safetensors`
 * when present (checked as `loadOrComputeBasis` checks it), else computed in a worker thread,
 * written there atomically and read back. Rejects with the worker's error, which names the
 * layer and module that failed.
 */
export async function loadOrComputeBasisInBackground(
  checkpointDirectory: string,
  options: { rMax: number; targetModules?: LinearModule[]; baseFingerprint: string },
  onProgress?: (done: number, total: number) => void,
): Promise<{ basis: Basis; computed: boolean; seconds: number }> {
  const started = performance.now();
  const seconds = () => (performance.now() - started) / 1000;
  const config = await readModelConfig(checkpointDirectory);
  const request = resolveBasisRequest(config, options, () => {
    throw new Error("loadOrComputeBasisInBackground needs options.baseFingerprint");
  });
  const stored = await readStoredBasis(checkpointDirectory, config, request);
  if (stored !== null) {
    const total = stored.numLayers * stored.targetModules.length;
    onProgress?.(total, total);
    return { basis: stored, computed: false, seconds: seconds() };
  }

  const id = await runBasisWorker({ checkpointDirectory, request }, onProgress);
  const basis = await readStoredBasis(checkpointDirectory, config, request);
  if (basis === null) throw new Error(`the basis worker reported basis ${id} stored, but ${checkpointDirectory} has no basis file for rMax ${request.rMax}`);
  if (basis.id !== id) throw new Error(`the basis worker stored basis ${id}, but the file now holds ${basis.id}: another process wrote it meanwhile`);
  return { basis, computed: true, seconds: seconds() };
}

/** Runs one worker: resolves with the id of the basis it stored, rejects with why it did not. */
function runBasisWorker(input: BasisWorkerInput, onProgress?: (done: number, total: number) => void): Promise<string> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(bootstrapSource(), { eval: true, workerData: input });
    let settled = false;
    // The outcome is posted after the file is written and the sessions are disposed: nothing is
    // left for the worker to do, so it is stopped rather than trusted to wind down by itself.
    const settle = (finish: () => void) => {
      if (settled) return;
      settled = true;
      finish();
      void worker.terminate();
    };
    const failed = (message: string) => new Error(`computing the PiCa basis of ${input.checkpointDirectory} failed: ${message}`);
    worker.on("message", (message: BasisWorkerMessage) => {
      if (message.kind === "progress") {
        // A throwing callback here would be an uncaught exception on the main thread.
        try {
          onProgress?.(message.done, message.total);
        } catch (error) {
          settle(() => reject(error));
        }
      } else if (message.kind === "stored") settle(() => resolve(message.id));
      else settle(() => reject(failed(message.message)));
    });
    // An uncaught error, e.g. the worker's module failed to load, arrives here rather than as a message.
    worker.on("error", (error) => settle(() => reject(failed(error.message))));
    worker.on("exit", (code) =>
      settle(() => reject(new Error(`the PiCa basis worker for ${input.checkpointDirectory} exited with code ${code} before reporting a result`))),
    );
  });
}

/**
 * The worker's code is TypeScript. tsx's `--import tsx` registers its loader only on the main
 * thread on Node 20 (module.register hooks do not reach workers there), and vitest compiles
 * in-process, so neither inheriting the runner's flags nor adding `--import tsx` works in both.
 * What does: a small JS bootstrap that loads the entry through tsx's tsImport, which registers
 * a loader scoped to that import in the worker itself. tsx is resolved from this file, not from
 * the working directory.
 */
function bootstrapSource(): string {
  const tsxApi = import.meta.resolve("tsx/esm/api");
  return `import(${JSON.stringify(tsxApi)}).then(({ tsImport }) => tsImport(${JSON.stringify(WORKER_ENTRY.href)}, ${JSON.stringify(import.meta.url)}));`;
}
