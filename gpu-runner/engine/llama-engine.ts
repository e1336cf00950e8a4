/**
 * The inference engine: one ONNX session over the decoder graph, and the step that feeds it a
 * batch of rows (each with its own cached length and its own new tokens) and keeps their KV
 * cache, on the host (CPU provider: the cache is read where it lies) or on the device (WebGPU: it
 * never leaves the device). Prefill, decode and a mix of both are the same call.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { GraphBuilder } from "../graph/builder.ts";
import { groupLayouts, projectionInputName, stackedProjection } from "../model/adapter-layout.ts";
import { slidingWindow, type ModelConfig } from "../model/config.ts";
import { buildLlamaGraph, LLAMA_IO, type CachePlacement } from "../model/llama-graph.ts";
import { fileQuantization, frozenWeightBytes, openGraphBeside, weightFileSource, writeWeightFile, type WeightFile } from "../model/weight-file.ts";
import { linearShape, type LinearModule, type WeightMap } from "../model/weights.ts";
import { DEFAULT_TARGET_MODULES, type Basis, type PicaAdapter } from "../pica/types.ts";
import { DeviceTensor, OnnxSession, type Feed, type HostTensor, type OnnxSessionOptions } from "../runtime/onnx-session.ts";
import { AdapterRegistry, type ResidentAdapter } from "./adapter-registry.ts";
import { DeviceCacheOps, DeviceKvCache, releaseLayers } from "./device-kv-cache.ts";
import { DeviceUploader } from "./device-upload.ts";
import { KvCache, type KvCacheOptions } from "./kv-cache.ts";
import {
  adapterFeeds,
  deviceCacheFeeds,
  hostCacheFeeds,
  NO_LOGITS,
  presentLayers,
  rowLogits,
  tokenFeeds,
  writeHostCache,
  type LogitsSelection,
  type RowLogits,
  type RunRows,
} from "./run-inputs.ts";
import type { QuantizedProducts, Quantization } from "../quantize/block-format.ts";
import { SequenceBatch } from "./sequence-batch.ts";

export { NO_LOGITS, type LogitsSelection, type RowLogits } from "./run-inputs.ts";

export interface EngineOptions extends OnnxSessionOptions {
  weightFile?: WeightFile; // the model's frozen weights on disk (weight-file.ts): the graph only references them
  externalDataThresholdBytes?: number; // without a weight file: weights at or above this size load through a temporary one
  kvCache?: KvCacheOptions; // defaults for the batches this engine creates
  adapters?: EngineAdapterOptions; // absent: base model only
  cache?: CachePlacement; // where batches keep their KV cache; default: "device" on WebGPU, else "host"
  quantization?: Quantization | null; // without a weight file: hold the frozen weights quantized (a weight file says itself)
  quantizedProducts?: QuantizedProducts; // how products with quantized weights multiply (block-format.ts)
}

/**
 * PiCa serving: the basis (null while it is being computed: base-model rows are served, adapters
 * wait for `setBasis`). Any adapter rank up to the largest served runs: each run uses the rank
 * bucket of its own rows' largest adapter (adapter-layout.ts), zero-padding smaller ones.
 */
export interface EngineAdapterOptions {
  basis: Basis | null;
  rank?: number; // the largest adapter rank served (≤ the basis's rMax); default: the basis's rMax
  targetModules?: LinearModule[]; // default: the basis's, or all seven without one
}

export class LlamaEngine {
  private readonly window: number | null;
  // The projection inputs per run rank (adapter-layout.ts: rankBucket), made when a rank is first run.
  private projectionFeeds = new Map<number, Promise<Record<string, Feed>>>();
  private readonly deviceCaches = new Set<DeviceKvCache>(); // released with the engine, before the provider goes
  // On the device: each batch's adapter rows as last copied there, reused until a row joins or leaves.
  private readonly deviceAdapterRows = new Map<SequenceBatch, { version: number; feeds: Record<string, DeviceTensor>; tensors: DeviceTensor[] }>();

  private constructor(
    readonly config: ModelConfig,
    private readonly session: OnnxSession,
    private readonly registry: AdapterRegistry | null,
    private readonly cacheOptions: KvCacheOptions,
    /** Where batches keep their KV cache. */
    readonly placement: CachePlacement,
    private readonly device: { ops: DeviceCacheOps; uploader: DeviceUploader } | null,
  ) {
    this.window = slidingWindow(config);
  }

  /**
   * Builds the graph and opens its session. With a weight file the graph only references it (the
   * way real models load: `weights` may then be lazily loaded, only shapes are read). Without
   * one, weights below `externalDataThresholdBytes` (default 1 GiB, under protobuf's 2 GiB cap)
   * are inlined, and larger ones go through a temporary weight file removed once loaded.
   */
  static async create(config: ModelConfig, weights: WeightMap, options: EngineOptions = {}): Promise<LlamaEngine> {
    const registry = options.adapters === undefined ? null : createRegistry(config, options.adapters);
    const spec = registry === null ? undefined : { targetModules: registry.targetModules };
    const placement: CachePlacement = options.cache ?? (options.executionProvider === "webgpu" ? "device" : "host");
    if (placement === "device" && options.executionProvider !== "webgpu")
      throw new Error(`a KV cache on the device needs the webgpu provider, not ${options.executionProvider ?? "cpu"}`);
    const sessionOptions: OnnxSessionOptions =
      placement === "device"
        ? { ...options, deviceOutputs: Array.from({ length: config.numLayers }, (_, l) => [LLAMA_IO.presentKey(l), LLAMA_IO.presentValue(l)]).flat() }
        : options;
    const open = async (model: Uint8Array | string, graph: GraphBuilder) => {
      const session = await OnnxSession.create(model, { inputs: graph.inputs, outputs: graph.outputs }, sessionOptions);
      const device = placement === "device" ? { ops: await DeviceCacheOps.create(config, options), uploader: new DeviceUploader(options) } : null;
      const engine = new LlamaEngine(config, session, registry, options.kvCache ?? {}, placement, device);
      const basis = options.adapters?.basis ?? null;
      if (basis !== null) await engine.setBasis(basis);
      return engine;
    };
    const { weightFile } = options;
    if (weightFile !== undefined) {
      const quantization = fileQuantization(weightFile, options.quantization);
      const graph = buildLlamaGraph(config, weights, {
        adapters: spec,
        cache: placement,
        source: weightFileSource(weightFile),
        quantization,
        products: options.quantizedProducts,
      });
      return openGraphBeside(weightFile, graph, "serving", (path) => open(path, graph));
    }
    const quantization = options.quantization ?? null;
    if (frozenWeightBytes(config, weights, quantization) < (options.externalDataThresholdBytes ?? 2 ** 30)) {
      const graph = buildLlamaGraph(config, weights, { adapters: spec, cache: placement, quantization, products: options.quantizedProducts });
      return open(graph.serialize(), graph);
    }
    const directory = await mkdtemp(join(tmpdir(), "pica-model-"));
    try {
      const weightFile = await writeWeightFile(directory, config, weights, quantization);
      return await LlamaEngine.create(config, weights, { ...options, weightFile });
    } finally {
      await rm(directory, { recursive: true, force: true });
    }
  }

  /** The basis adapters are served against (null while it is computed, or without adapter support). */
  get basis(): Basis | null {
    return this.registry?.basis ?? null;
  }

  /** Makes adapters servable once the basis is known: its projections become the graph's shrink inputs. */
  async setBasis(basis: Basis): Promise<void> {
    const registry = this.requireRegistry();
    const changed = registry.basis?.id !== basis.id;
    registry.setBasis(basis);
    if (changed) await this.releaseProjections();
  }

  /** The largest adapter rank served (0 until the basis is known, or without adapter support). */
  get maxRank(): number {
    return this.registry?.maxRank ?? 0;
  }

  /**
   * The adapter rank of a run over rows [first, first + count): the bucket of their largest
   * adapter, 0 when none has one. On the device at least 1: onnxruntime's WebGPU provider crashed
   * on the empty products of rank 0 (1.30), and a rank-1 product with zeros costs next to nothing.
   */
  private runRank(batch: SequenceBatch, first: number, count: number): number {
    const rows = batch.adapterRows;
    if (rows === null) return 0;
    return Math.max(this.device === null ? 0 : 1, rows.rankOf(first, count));
  }

  /**
   * The projection inputs of a run at `rank`: P[:rank] of every layer and group side by side, made
   * once per rank; on the device they are uploaded once and stay there. Rank 0 (no adapter among
   * the run's rows, on the host) feeds empty projections.
   */
  private projectionsAt(rank: number): Promise<Record<string, Feed>> {
    let feeds = this.projectionFeeds.get(rank);
    if (feeds === undefined) {
      feeds = this.makeProjections(rank);
      this.projectionFeeds.set(rank, feeds);
      feeds.catch(() => this.projectionFeeds.delete(rank));
    }
    return feeds;
  }

  private async makeProjections(rank: number): Promise<Record<string, Feed>> {
    const host: Record<string, HostTensor> = {};
    if (this.registry === null) return host;
    const basis = this.registry.basis; // null: zeros (no row has an adapter before the basis is known)
    for (const layout of groupLayouts(this.config, this.registry.targetModules)) {
      if (layout.adapted.length === 0) continue;
      const inputs = linearShape(this.config, layout.group.modules[0])[1];
      for (let layer = 0; layer < this.config.numLayers; layer++) {
        const data = rank === 0 ? new Float32Array(0) : stackedProjection(this.config, basis, rank, layer, layout);
        host[projectionInputName(layer, layout.group.name)] = { dtype: "float32", shape: [inputs, rank * layout.adapted.length], data };
      }
    }
    if (this.device === null || rank === 0) return host;
    const names = Object.keys(host);
    const uploaded = await this.device.uploader.upload(names.map((name) => host[name]));
    return Object.fromEntries(names.map((name, i) => [name, uploaded[i]]));
  }

  /** Drops every rank's projections (and their device copies). */
  private async releaseProjections(): Promise<void> {
    const kept = [...this.projectionFeeds.values()];
    this.projectionFeeds.clear();
    for (const feeds of await Promise.allSettled(kept)) {
      if (feeds.status !== "fulfilled") continue;
      for (const feed of Object.values(feeds.value)) if (feed instanceof DeviceTensor) feed.dispose();
    }
  }

  /** A batch for up to `maxRows` concurrent sequences (cache options default to the engine's). */
  createBatch(maxRows: number, cacheOptions: KvCacheOptions = {}): SequenceBatch {
    const options = { ...this.cacheOptions, ...cacheOptions };
    let cache: KvCache | DeviceKvCache;
    if (this.device === null) cache = new KvCache(this.config, maxRows, options);
    else {
      cache = new DeviceKvCache(this.config, maxRows, options, this.device.ops);
      this.deviceCaches.add(cache);
    }
    return new SequenceBatch(this.config, cache, this.registry);
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
   * chunk of one) run apart from them, adjacent ones together, so a long prompt is never padded
   * across the decoding rows. Returns each row's logits for its last new token or for all of them
   * (no positions for a row that received none).
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
    // On the device a waiting row also writes one throw-away token at its length.
    cache.reserve(cache instanceof DeviceKvCache ? counts.map((n) => Math.max(n, 1)) : counts);

    let lastDecodeRow = -1;
    counts.forEach((n, row) => (lastDecodeRow = n === 1 ? row : lastDecodeRow));
    if (lastDecodeRow >= 0) {
      // Rows [0, span) ride in the decode run (a contiguous view of the host cache; on the device, every slot).
      const span = cache instanceof DeviceKvCache ? cache.maxRows : lastDecodeRow + 1;
      const decodeCounts = Array.from({ length: span }, (_, row) => (counts[row] === 1 ? 1 : 0));
      const results = await this.run(
        batch,
        0,
        decodeCounts,
        decodeCounts.map((n, row) => (n === 1 ? newTokens[row] : [])),
        logits,
      );
      for (let row = 0; row < rows; row++) if (decodeCounts[row] === 1) out[row] = results[row];
    }
    for (const [first, end] of promptGroups(counts, cache.lengths, cache instanceof DeviceKvCache)) {
      const results = await this.run(batch, first, counts.slice(first, end), newTokens.slice(first, end), logits);
      results.forEach((result, i) => (out[first + i] = result));
    }
    return out;
  }

  /** One session run over rows [first, first + counts.length) of the batch. */
  private async run(batch: SequenceBatch, first: number, counts: number[], newTokens: number[][], logits: LogitsSelection): Promise<RowLogits[]> {
    const cache = batch.cache;
    const lengths = counts.map((_, i) => cache.lengths[first + i] ?? 0); // device slots past the rows hold nothing
    const run: RunRows = { counts, lengths, newTokens, tokens: Math.max(1, ...counts) };
    const rank = this.runRank(batch, first, counts.length);
    const feeds: Record<string, Feed> = { ...tokenFeeds(run, logits), ...(await this.projectionsAt(rank)) };
    if (cache instanceof KvCache) {
      Object.assign(feeds, adapterFeeds(this.config, batch.adapterRows, first, counts.length, rank));
      Object.assign(feeds, hostCacheFeeds(this.config, cache, first, run, this.window));
      const results = await this.session.run(feeds);
      writeHostCache(this.config, cache, first, run, results);
      return rowLogits(this.config.vocabSize, counts, results[LLAMA_IO.logits].data as Float32Array, logits);
    }
    await cache.prepare();
    const whole = first === 0 && counts.length === cache.maxRows;
    const adapters = await this.deviceAdapterFeeds(batch, first, counts.length, rank, whole);
    Object.assign(feeds, adapters.feeds);
    const selected = whole ? null : await cache.selectRows(first, counts.length);
    Object.assign(
      feeds,
      deviceCacheFeeds(this.config, (layer) => (selected === null ? cache.layer(layer) : selected[layer]), run),
    );
    try {
      const { host, device } = await this.session.runMixed(feeds);
      const present = presentLayers(this.config, device);
      if (selected === null) cache.replace(present);
      else {
        await cache.writeRows(first, counts.length, present);
        releaseLayers(present);
      }
      cache.advance(first, counts.slice(0, Math.max(0, cache.rows - first)));
      return rowLogits(this.config.vocabSize, counts, host[LLAMA_IO.logits].data as Float32Array, logits);
    } finally {
      if (selected !== null) releaseLayers(selected);
      if (!whole) for (const tensor of adapters.tensors) tensor.dispose();
    }
  }

  /**
   * The adapter inputs on the device: every host buffer copied once (a shared adapter's M serves
   * every layer from one copy). A whole-batch run reuses the batch's copy until a row joins or
   * leaves; a run over some rows gets a copy of its own, released after the run.
   */
  private async deviceAdapterFeeds(
    batch: SequenceBatch,
    first: number,
    count: number,
    rank: number,
    whole: boolean,
  ): Promise<{ feeds: Record<string, DeviceTensor>; tensors: DeviceTensor[] }> {
    const rows = batch.adapterRows;
    if (rows === null) return { feeds: {}, tensors: [] };
    const kept = whole ? this.deviceAdapterRows.get(batch) : undefined;
    if (kept !== undefined && kept.version === rows.version) return kept;
    const host = adapterFeeds(this.config, rows, first, count, rank);
    const distinct = new Map<Float32Array | Float64Array | BigInt64Array | Int32Array | Uint8Array, string[]>();
    const buffers: HostTensor[] = [];
    for (const [name, tensor] of Object.entries(host)) {
      let names = [...distinct.entries()].find(
        ([data]) => data.buffer === tensor.data.buffer && data.byteOffset === tensor.data.byteOffset && data.length === tensor.data.length,
      )?.[1];
      if (names === undefined) {
        names = [];
        distinct.set(tensor.data, names);
        buffers.push(tensor);
      }
      names.push(name);
    }
    const tensors = await this.device!.uploader.upload(buffers);
    const feeds: Record<string, DeviceTensor> = {};
    [...distinct.values()].forEach((names, i) => names.forEach((name) => (feeds[name] = tensors[i])));
    if (whole) {
      if (kept !== undefined) for (const tensor of kept.tensors) tensor.dispose();
      this.deviceAdapterRows.set(batch, { version: rows.version, feeds, tensors });
    }
    return { feeds, tensors };
  }

  /** Ends onnxruntime profiling (when the session was created with a profile prefix). */
  endProfiling(): void {
    this.session.endProfiling();
  }

  /** Releases the session (and the device graphs and projections). */
  async dispose(): Promise<void> {
    if (this.device !== null) {
      for (const cache of this.deviceCaches) cache.dispose();
      this.deviceCaches.clear();
      for (const { tensors } of this.deviceAdapterRows.values()) for (const tensor of tensors) tensor.dispose();
      this.deviceAdapterRows.clear();
      await this.releaseProjections();
      await this.device.uploader.dispose();
      await this.device.ops.dispose();
    }
    await this.session.dispose();
  }
}

function createRegistry(config: ModelConfig, options: EngineAdapterOptions): AdapterRegistry {
  const { basis, rank } = options;
  if (rank !== undefined && (!Number.isInteger(rank) || rank < 1)) throw new Error(`the largest rank served must be a positive integer, got ${rank}`);
  const targetModules = options.targetModules ?? basis?.targetModules ?? [...DEFAULT_TARGET_MODULES];
  return new AdapterRegistry(config, rank ?? null, targetModules);
}

/**
 * Groups of adjacent rows taking several tokens, [first, end): on the host any such rows run
 * together (each has its own mask); on the device GroupQueryAttention reads every row's past as
 * "cached + new − width", so rows run together only if all start empty (a first prompt, right
 * padded) or all take the same number of tokens.
 */
function promptGroups(counts: readonly number[], lengths: readonly number[], device: boolean): [number, number][] {
  const groups: [number, number][] = [];
  for (let row = 0; row < counts.length; ) {
    if (counts[row] < 2) {
      row++;
      continue;
    }
    let end = row + 1;
    const fits = (next: number) =>
      counts[next] >= 2 && (!device || (lengths[row] === 0 && lengths[next] === 0) || (lengths[row] > 0 && lengths[next] > 0 && counts[next] === counts[row]));
    while (end < counts.length && fits(end)) end++;
    groups.push([row, end]);
    row = end;
  }
  return groups;
}
