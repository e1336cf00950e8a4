/**
 * The inference engine: one ONNX session over the decoder graph, and the step that feeds it a
 * batch of rows (each with its own cached length and its own new tokens) and appends the new
 * keys/values to the cache. Prefill, decode and a mix of both are the same call.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { adapterInputName, groupLayouts, projectionInputName, stackedProjection } from "../model/adapter-layout.ts";
import { slidingWindow, type ModelConfig } from "../model/config.ts";
import { buildLlamaGraph, LLAMA_IO } from "../model/llama-graph.ts";
import { weightFileSource, writeGraphBeside, writeWeightFile, type WeightFile } from "../model/weight-file.ts";
import { MASK_VALUE } from "../model/training-graph.ts";
import { linearShape, type LinearModule, type WeightMap } from "../model/weights.ts";
import { DEFAULT_TARGET_MODULES, type Basis, type PicaAdapter } from "../pica/types.ts";
import { OnnxSession, type HostTensor, type OnnxSessionOptions } from "../runtime/onnx-session.ts";
import { AdapterRegistry, type ResidentAdapter } from "./adapter-registry.ts";
import type { KvCacheOptions } from "./kv-cache.ts";
import { SequenceBatch } from "./sequence-batch.ts";

export interface EngineOptions extends OnnxSessionOptions {
  weightFile?: WeightFile; // the model's frozen weights on disk (weight-file.ts): the graph only references them
  externalDataThresholdBytes?: number; // without a weight file: weights at or above this size load through a temporary one
  kvCache?: KvCacheOptions; // defaults for the batches this engine creates
  adapters?: EngineAdapterOptions; // absent: base model only
}

/**
 * PiCa serving: the basis (null while it is being computed: base-model rows are served, adapters
 * wait for `setBasis`), and the rank every row's adapter is padded to (≤ the basis's rMax).
 */
export interface EngineAdapterOptions {
  basis: Basis | null;
  rank: number;
  targetModules?: LinearModule[]; // default: the basis's, or all seven without one
}

/** Which positions' logits a step returns. */
export type LogitsSelection = "last" | "all";

/** Logits of one row: `[positions, vocab]` flattened, one position for "last". */
export interface RowLogits {
  positions: number;
  data: Float32Array;
}

/** What a step returns for a row that received no tokens. */
export const NO_LOGITS: RowLogits = Object.freeze({ positions: 0, data: new Float32Array(0) }) as RowLogits;

export class LlamaEngine {
  private readonly window: number | null;

  private projectionFeeds: Record<string, HostTensor> = {};

  private constructor(
    readonly config: ModelConfig,
    private readonly session: OnnxSession,
    private readonly registry: AdapterRegistry | null,
    private readonly cacheOptions: KvCacheOptions,
  ) {
    this.window = slidingWindow(config);
    this.projectionFeeds = this.projections(null);
  }

  /**
   * Builds the graph and opens its session. With a weight file the graph only references it (the
   * way real models load: `weights` may then be lazily loaded, only shapes are read). Without
   * one, weights below `externalDataThresholdBytes` (default 1 GiB, under protobuf's 2 GiB cap)
   * are inlined, and larger ones go through a temporary weight file removed once loaded.
   */
  static async create(config: ModelConfig, weights: WeightMap, options: EngineOptions = {}): Promise<LlamaEngine> {
    const registry = options.adapters === undefined ? null : createRegistry(config, options.adapters);
    const spec = registry === null ? undefined : { rank: registry.rank, targetModules: registry.targetModules };
    if (options.weightFile !== undefined) {
      const graph = buildLlamaGraph(config, weights, { adapters: spec, source: weightFileSource(options.weightFile) });
      const path = await writeGraphBeside(options.weightFile, graph, "serving");
      try {
        return LlamaEngine.open(config, await OnnxSession.create(path, { inputs: graph.inputs, outputs: graph.outputs }, options), registry, options);
      } finally {
        await rm(path, { force: true });
      }
    }
    const graph = buildLlamaGraph(config, weights, { adapters: spec });
    const threshold = options.externalDataThresholdBytes ?? 2 ** 30;
    if (graph.initializerBytes() < threshold) {
      return LlamaEngine.open(config, await OnnxSession.create(graph.serialize(), { inputs: graph.inputs, outputs: graph.outputs }, options), registry, options);
    }
    const directory = await mkdtemp(join(tmpdir(), "pica-model-"));
    try {
      const weightFile = await writeWeightFile(directory, config, weights);
      return await LlamaEngine.create(config, weights, { ...options, weightFile });
    } finally {
      await rm(directory, { recursive: true, force: true });
    }
  }

  private static open(config: ModelConfig, session: OnnxSession, registry: AdapterRegistry | null, options: EngineOptions): LlamaEngine {
    const engine = new LlamaEngine(config, session, registry, options.kvCache ?? {});
    if (options.adapters?.basis) engine.setBasis(options.adapters.basis);
    return engine;
  }

  /** The basis adapters are served against (null while it is computed, or without adapter support). */
  get basis(): Basis | null {
    return this.registry?.basis ?? null;
  }

  /** Makes adapters servable once the basis is known: the projections become the graph's shrink inputs. */
  setBasis(basis: Basis): void {
    this.requireRegistry().setBasis(basis);
    this.projectionFeeds = this.projections(basis);
  }

  /** The projection inputs of every layer and group: P[:rank] side by side, or zeros without a basis. */
  private projections(basis: Basis | null): Record<string, HostTensor> {
    const feeds: Record<string, HostTensor> = {};
    if (this.registry === null) return feeds;
    const { rank, targetModules } = this.registry;
    for (const layout of groupLayouts(this.config, targetModules)) {
      if (layout.adapted.length === 0) continue;
      const inputs = linearShape(this.config, layout.group.modules[0])[1];
      for (let layer = 0; layer < this.config.numLayers; layer++) {
        const data = stackedProjection(this.config, basis, rank, layer, layout);
        feeds[projectionInputName(layer, layout.group.name)] = { dtype: "float32", shape: [inputs, rank * layout.adapted.length], data };
      }
    }
    return feeds;
  }

  /** A batch for up to `maxRows` concurrent sequences (cache options default to the engine's). */
  createBatch(maxRows: number, cacheOptions: KvCacheOptions = {}): SequenceBatch {
    return new SequenceBatch(this.config, maxRows, { ...this.cacheOptions, ...cacheOptions }, this.registry);
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
   * Runs one step: row r of the batch receives `newTokens[r]` (possibly none: the row waits this
   * step). Rows decoding one token run together in one run; rows taking several (a prompt or a
   * chunk of one) run apart from them, contiguous new rows together, so a long prompt is never
   * padded across the decoding rows. Returns each row's logits for its last new token or for all
   * of them (no positions for a row that received none).
   */
  async step(batch: SequenceBatch, newTokens: number[][], logits: LogitsSelection = "last"): Promise<RowLogits[]> {
    const { vocabSize } = this.config;
    const cache = batch.cache;
    const rows = newTokens.length;
    if (rows !== cache.rows) throw new Error(`step has ${rows} rows but the batch has ${cache.rows}`);
    const counts = newTokens.map((tokens, row) => {
      for (const id of tokens) {
        if (!Number.isInteger(id) || id < 0 || id >= vocabSize) throw new Error(`row ${row}: token id ${id} outside vocabulary of ${vocabSize}`);
      }
      return tokens.length;
    });
    const out: RowLogits[] = counts.map(() => NO_LOGITS);
    if (counts.every((n) => n === 0)) return out;
    // A row riding along in the decode run without a token of its own needs no slot, but one more
    // keeps every row's next write in range.
    cache.reserve(counts);

    let lastDecodeRow = -1;
    counts.forEach((n, row) => (lastDecodeRow = n === 1 ? row : lastDecodeRow));
    if (lastDecodeRow >= 0) {
      const span = lastDecodeRow + 1; // rows [0, span): a contiguous view of the cache
      const spanCounts = counts.slice(0, span).map((n) => (n === 1 ? 1 : 0));
      const results = await this.run(batch, 0, spanCounts, newTokens.slice(0, span), logits);
      spanCounts.forEach((n, i) => (out[i] = n === 1 ? results[i] : NO_LOGITS));
    }
    for (let row = 0; row < rows; ) {
      if (counts[row] < 2) {
        row++;
        continue;
      }
      let end = row + 1; // a run of adjacent rows that all take several tokens
      while (end < rows && counts[end] >= 2) end++;
      const results = await this.run(batch, row, counts.slice(row, end), newTokens.slice(row, end), logits);
      results.forEach((result, i) => (out[row + i] = result));
      row = end;
    }
    return out;
  }

  /**
   * One session run over rows [first, first + counts.length): each row's first `counts[i]` tokens
   * are real (0: the row rides along on one masked dummy token and keeps nothing of it); the
   * cache is fed as a view of those rows and the new keys/values are written into it.
   */
  private async run(batch: SequenceBatch, first: number, counts: number[], newTokens: number[][], logits: LogitsSelection): Promise<RowLogits[]> {
    const { vocabSize, numLayers, numKvHeads, headDim } = this.config;
    const cache = batch.cache;
    const rows = counts.length;
    const tokens = Math.max(1, ...counts);
    const lengths = counts.map((_, i) => cache.lengths[first + i]);
    // Rows with nothing cached attend only to themselves: feed no past slots at all.
    const past = lengths.some((n) => n > 0) ? cache.capacity : 0;
    const context = past + tokens;
    const window = this.window;

    const inputIds = new BigInt64Array(rows * tokens);
    const positionIds = new BigInt64Array(rows * tokens);
    const bias = new Float32Array(rows * tokens * context).fill(MASK_VALUE);
    const windowBias = window === null ? null : new Float32Array(rows * tokens * context).fill(MASK_VALUE);
    const logitsRows: bigint[] = [];
    for (let i = 0; i < rows; i++) {
      const start = lengths[i];
      const count = counts[i];
      const last = Math.max(count, 1) - 1; // a padded or dummy token repeats the row's last real one
      for (let t = 0; t < tokens; t++) {
        const flat = i * tokens + t;
        const own = Math.min(t, last); // the new token this query stands for
        inputIds[flat] = BigInt(count === 0 ? 0 : newTokens[i][own]);
        positionIds[flat] = BigInt(start + own);
        const at = flat * context;
        if (count > 0 && past > 0) bias.fill(0, at, at + start); // every cached token of this row
        bias.fill(0, at + past, at + past + own + 1); // causal among the new ones
        if (windowBias !== null) {
          // Keys j with 0 ≤ position − j < window, over cached and new slots alike.
          const position = start + own;
          const lowest = position - window! + 1;
          if (count > 0 && past > 0) windowBias.fill(0, at + Math.max(0, lowest), at + start);
          windowBias.fill(0, at + past + Math.max(0, lowest - start), at + past + own + 1);
        }
      }
      if (count === 0) continue;
      if (logits === "last") logitsRows.push(BigInt(i * tokens + count - 1));
      else for (let t = 0; t < count; t++) logitsRows.push(BigInt(i * tokens + t));
    }

    const feeds: Record<string, HostTensor> = {
      [LLAMA_IO.inputIds]: { dtype: "int64", shape: [rows, tokens], data: inputIds },
      [LLAMA_IO.positionIds]: { dtype: "int64", shape: [rows, tokens], data: positionIds },
      [LLAMA_IO.attentionBias]: { dtype: "float32", shape: [rows, tokens, context], data: bias },
      [LLAMA_IO.logitsRows]: { dtype: "int64", shape: [logitsRows.length], data: BigInt64Array.from(logitsRows) },
    };
    if (windowBias !== null) feeds[LLAMA_IO.windowBias] = { dtype: "float32", shape: [rows, tokens, context], data: windowBias };
    const empty = new Float32Array(0);
    for (let layer = 0; layer < numLayers; layer++) {
      feeds[LLAMA_IO.pastKeyT(layer)] = { dtype: "float32", shape: [rows, numKvHeads, headDim, past], data: past > 0 ? cache.pastKeys(layer, first, rows) : empty };
      feeds[LLAMA_IO.pastValue(layer)] = { dtype: "float32", shape: [rows, numKvHeads, past, headDim], data: past > 0 ? cache.pastValues(layer, first, rows) : empty };
    }
    Object.assign(feeds, this.projectionFeeds);
    const adapterRows = batch.adapterRows;
    if (adapterRows !== null) {
      adapterRows.modules.forEach((module, m) => {
        const shape = adapterRows.inputShape(m, rows);
        for (let layer = 0; layer < numLayers; layer++) {
          feeds[adapterInputName(layer, module)] = { dtype: "float32", shape, data: adapterRows.input(layer, m, first, rows) };
        }
      });
    }
    const results = await this.session.run(feeds);
    for (let layer = 0; layer < numLayers; layer++) {
      const keys = results[LLAMA_IO.newKeyT(layer)].data as Float32Array;
      const values = results[LLAMA_IO.newValue(layer)].data as Float32Array;
      cache.write(layer, first, keys, values, tokens, counts);
    }
    cache.advance(first, counts);

    const all = results[LLAMA_IO.logits].data as Float32Array;
    const out: RowLogits[] = [];
    let offset = 0;
    for (let i = 0; i < rows; i++) {
      if (counts[i] === 0) {
        out.push(NO_LOGITS);
        continue;
      }
      const positions = logits === "last" ? 1 : counts[i];
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
  if (!Number.isInteger(rank) || rank < 1) throw new Error(`serving rank must be a positive integer, got ${rank}`);
  const targetModules = options.targetModules ?? basis?.targetModules ?? [...DEFAULT_TARGET_MODULES];
  return new AdapterRegistry(config, rank, targetModules);
}
