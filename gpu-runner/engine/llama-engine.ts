/**
 * The inference engine: one ONNX session over the decoder graph, and the step that feeds it a
 * batch of rows (each with its own cached length and its own new tokens) and appends the new
 * keys/values to the cache. Prefill, decode and a mix of both are the same call.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { adapterInputName, type AdapterGraphSpec } from "../model/adapter-layout.ts";
import type { ModelConfig } from "../model/config.ts";
import { buildLlamaGraph, LLAMA_IO, MASK_VALUE } from "../model/llama-graph.ts";
import { linearShape, type LinearModule, type WeightMap } from "../model/weights.ts";
import { projectionKey, type Basis, type PicaAdapter } from "../pica/types.ts";
import { OnnxSession, type HostTensor, type OnnxSessionOptions } from "../runtime/onnx-session.ts";
import { AdapterRegistry, type ResidentAdapter } from "./adapter-registry.ts";
import { SequenceBatch } from "./sequence-batch.ts";

export interface EngineOptions extends OnnxSessionOptions {
  externalDataThresholdBytes?: number; // weights at or above this size load through files on disk
  adapters?: EngineAdapterOptions; // absent: base model only
}

/** PiCa serving: the basis, and the rank every row's adapter is padded to (≤ the basis's rMax). */
export interface EngineAdapterOptions {
  basis: Basis;
  rank: number;
  targetModules?: LinearModule[]; // default: the basis's
}

/** Which positions' logits a step returns. */
export type LogitsSelection = "last" | "all";

/** Logits of one row: `[positions, vocab]` flattened, one position for "last". */
export interface RowLogits {
  positions: number;
  data: Float32Array;
}

export class LlamaEngine {
  private constructor(
    readonly config: ModelConfig,
    private readonly session: OnnxSession,
    private readonly registry: AdapterRegistry | null,
  ) {}

  /**
   * Builds the graph from config and weights and opens its session. Models whose weights pass
   * `externalDataThresholdBytes` (default 1 GiB, below protobuf's 2 GiB cap) go through a
   * temporary .onnx + .onnx.data pair on disk, removed once the session has loaded it.
   */
  static async create(config: ModelConfig, weights: WeightMap, options: EngineOptions = {}): Promise<LlamaEngine> {
    const registry = options.adapters === undefined ? null : createRegistry(config, options.adapters);
    const graph = buildLlamaGraph(config, weights, { adapters: registry === null ? undefined : graphSpec(config, options.adapters!, registry) });
    const signature = { inputs: graph.inputs, outputs: graph.outputs };
    const threshold = options.externalDataThresholdBytes ?? 2 ** 30;
    if (graph.initializerBytes() < threshold) {
      return new LlamaEngine(config, await OnnxSession.create(graph.serialize(), signature, options), registry);
    }
    const directory = await mkdtemp(join(tmpdir(), "pica-model-"));
    try {
      const path = join(directory, "model.onnx");
      graph.writeWithExternalData(path);
      return new LlamaEngine(config, await OnnxSession.create(path, signature, options), registry);
    } finally {
      await rm(directory, { recursive: true, force: true });
    }
  }

  /** A batch for up to `maxRows` concurrent sequences. */
  createBatch(maxRows: number, initialCapacity = 64): SequenceBatch {
    return new SequenceBatch(this.config, maxRows, initialCapacity, this.registry);
  }

  /** Validates and registers an adapter; the session is untouched. */
  registerAdapter(id: string, adapter: PicaAdapter): ResidentAdapter {
    return this.requireRegistry().register(id, adapter);
  }

  /** Unregisters an adapter (rows using it keep their copy of its weights). */
  evictAdapter(id: string): boolean {
    return this.requireRegistry().evict(id);
  }

  /** Ids of the registered adapters. */
  adapterIds(): string[] {
    return this.registry?.ids() ?? [];
  }

  /** Whether an adapter is registered. */
  hasAdapter(id: string): boolean {
    return this.registry?.has(id) ?? false;
  }

  private requireRegistry(): AdapterRegistry {
    if (this.registry === null) throw new Error("this engine was created without adapter support (no basis)");
    return this.registry;
  }

  /**
   * Runs one step: row r of the cache receives `newTokens[r]` (at least one token; rows of
   * different lengths are right-padded to the longest and the padding is masked). Returns each
   * row's logits for its last new token or for all of them.
   */
  async step(batch: SequenceBatch, newTokens: number[][], logits: LogitsSelection = "last"): Promise<RowLogits[]> {
    const { vocabSize, numLayers, numKvHeads, headDim } = this.config;
    const cache = batch.cache;
    const rows = newTokens.length;
    if (rows === 0) return [];
    if (rows !== cache.rows) throw new Error(`step has ${rows} rows but the batch has ${cache.rows}`);
    const counts = newTokens.map((tokens, row) => {
      if (tokens.length === 0) throw new Error(`row ${row} has no new tokens`);
      for (const id of tokens) {
        if (!Number.isInteger(id) || id < 0 || id >= vocabSize) throw new Error(`row ${row}: token id ${id} outside vocabulary of ${vocabSize}`);
      }
      return tokens.length;
    });
    cache.reserve(counts);
    const tokens = Math.max(...counts);
    // A cache with nothing in it is fed as zero past slots: a pure prefill attends only to itself.
    const past = cache.lengths.some((n) => n > 0) ? cache.capacity : 0;
    const context = past + tokens;

    const inputIds = new BigInt64Array(rows * tokens);
    const positionIds = new BigInt64Array(rows * tokens);
    const bias = new Float32Array(rows * tokens * context).fill(MASK_VALUE);
    const logitsRows: bigint[] = [];
    for (let row = 0; row < rows; row++) {
      const start = cache.lengths[row];
      for (let t = 0; t < tokens; t++) {
        const flat = row * tokens + t;
        inputIds[flat] = BigInt(t < counts[row] ? newTokens[row][t] : 0);
        positionIds[flat] = BigInt(start + Math.min(t, counts[row] - 1));
        const biasRow = bias.subarray(flat * context, (flat + 1) * context);
        if (past > 0) biasRow.fill(0, 0, start); // every cached token of this row
        biasRow.fill(0, past, past + Math.min(t, counts[row] - 1) + 1); // causal among the new ones
      }
      if (logits === "last") logitsRows.push(BigInt(row * tokens + counts[row] - 1));
      else for (let t = 0; t < counts[row]; t++) logitsRows.push(BigInt(row * tokens + t));
    }

    const feeds: Record<string, HostTensor> = {
      [LLAMA_IO.inputIds]: { dtype: "int64", shape: [rows, tokens], data: inputIds },
      [LLAMA_IO.positionIds]: { dtype: "int64", shape: [rows, tokens], data: positionIds },
      [LLAMA_IO.attentionBias]: { dtype: "float32", shape: [rows, tokens, context], data: bias },
      [LLAMA_IO.logitsRows]: { dtype: "int64", shape: [logitsRows.length], data: BigInt64Array.from(logitsRows) },
    };
    const empty = new Float32Array(0);
    for (let layer = 0; layer < numLayers; layer++) {
      feeds[LLAMA_IO.pastKey(layer)] = { dtype: "float32", shape: [rows, numKvHeads, headDim, past], data: past > 0 ? cache.pastKeys(layer) : empty };
      feeds[LLAMA_IO.pastValue(layer)] = { dtype: "float32", shape: [rows, numKvHeads, past, headDim], data: past > 0 ? cache.pastValues(layer) : empty };
    }
    const adapterRows = batch.adapterRows;
    if (adapterRows !== null) {
      adapterRows.modules.forEach((module, i) => {
        const shape = adapterRows.inputShape(i);
        for (let layer = 0; layer < numLayers; layer++) {
          feeds[adapterInputName(layer, module)] = { dtype: "float32", shape, data: adapterRows.input(layer, i) };
        }
      });
    }
    const results = await this.session.run(feeds);
    for (let layer = 0; layer < numLayers; layer++) {
      const keys = results[LLAMA_IO.presentKey(layer)].data as Float32Array;
      const values = results[LLAMA_IO.presentValue(layer)].data as Float32Array;
      cache.append(layer, keys, values, tokens, counts);
    }
    cache.advance(counts);

    const all = results[LLAMA_IO.logits].data as Float32Array;
    const out: RowLogits[] = [];
    let offset = 0;
    for (let row = 0; row < rows; row++) {
      const positions = logits === "last" ? 1 : counts[row];
      out.push({ positions, data: all.slice(offset * vocabSize, (offset + positions) * vocabSize) });
      offset += positions;
    }
    return out;
  }

  /** Ends onnxruntime profiling (when the session was created with a profile prefix). */
  endProfiling(): void {
    this.session.endProfiling();
  }

  /** Releases the session. */
  async dispose(): Promise<void> {
    await this.session.dispose();
  }
}

function createRegistry(config: ModelConfig, options: EngineAdapterOptions): AdapterRegistry {
  const { basis, rank } = options;
  if (!Number.isInteger(rank) || rank < 1 || rank > basis.rMax) throw new Error(`serving rank must be an integer in [1, ${basis.rMax}], got ${rank}`);
  if (basis.numLayers !== config.numLayers) throw new Error(`basis has ${basis.numLayers} layers, the model ${config.numLayers}`);
  const targetModules = options.targetModules ?? basis.targetModules;
  for (const module of targetModules) {
    if (!basis.targetModules.includes(module)) throw new Error(`module ${module} is not in the basis (it covers ${basis.targetModules.join(", ")})`);
  }
  return new AdapterRegistry(config, basis, rank, targetModules);
}

function graphSpec(config: ModelConfig, options: EngineAdapterOptions, registry: AdapterRegistry): AdapterGraphSpec {
  return {
    rank: registry.rank,
    targetModules: registry.targetModules,
    projection(layer, module) {
      const p = options.basis.projections.get(projectionKey(layer, module));
      const inputs = linearShape(config, module)[1];
      if (p === undefined || p.shape[1] !== inputs) throw new Error(`basis has no projection of shape [·, ${inputs}] for layer ${layer} ${module}`);
      return p.data.subarray(0, registry.rank * inputs); // the first `rank` rows
    },
  };
}
