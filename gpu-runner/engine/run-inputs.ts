/**
 * The inputs and outputs of one session run over some rows of a batch, for the two places a KV
 * cache can live: on the host (fed as it lies, masks built here, new keys/values written back
 * here) or on the device (lengths fed, the updated cache taken back). Which rows run together is
 * the engine's business (llama-engine.ts); this module only turns a run into feeds and results.
 */
import { adapterInputName } from "../model/adapter-layout.ts";
import type { ModelConfig } from "../model/config.ts";
import { LLAMA_IO } from "../model/llama-graph.ts";
import { MASK_VALUE } from "../model/training-graph.ts";
import type { DeviceTensor, Feed, HostTensor } from "../runtime/onnx-session.ts";
import type { AdapterRows } from "./adapter-rows.ts";
import type { DeviceLayerCache } from "./device-kv-cache.ts";
import type { KvCache } from "./kv-cache.ts";

/** Which positions' logits a step returns. */
export type LogitsSelection = "last" | "all";

/** Logits of one row: `[positions, vocab]` flattened, one position for "last". */
export interface RowLogits {
  positions: number;
  data: Float32Array;
}

/** What a step returns for a row that received no tokens. */
export const NO_LOGITS: RowLogits = Object.freeze({ positions: 0, data: new Float32Array(0) }) as RowLogits;

/**
 * A run over `counts.length` rows: row i brings `counts[i]` real tokens (0: it rides along on one
 * dummy token and keeps nothing of it), padded to `tokens`, after `lengths[i]` cached ones.
 */
export interface RunRows {
  counts: number[];
  lengths: number[];
  newTokens: number[][];
  tokens: number;
}

/** Ids, positions and the rows whose logits are wanted: what every run feeds. */
export function tokenFeeds(run: RunRows, logits: LogitsSelection): Record<string, HostTensor> {
  const { counts, lengths, newTokens, tokens } = run;
  const rows = counts.length;
  const inputIds = new BigInt64Array(rows * tokens);
  const positionIds = new BigInt64Array(rows * tokens);
  const logitsRows: bigint[] = [];
  for (let i = 0; i < rows; i++) {
    const last = Math.max(counts[i], 1) - 1; // a padded or dummy token repeats the row's last real one
    for (let t = 0; t < tokens; t++) {
      const own = Math.min(t, last);
      inputIds[i * tokens + t] = BigInt(counts[i] === 0 ? 0 : newTokens[i][own]);
      positionIds[i * tokens + t] = BigInt(lengths[i] + own);
    }
    if (counts[i] === 0) continue;
    if (logits === "last") logitsRows.push(BigInt(i * tokens + counts[i] - 1));
    else for (let t = 0; t < counts[i]; t++) logitsRows.push(BigInt(i * tokens + t));
  }
  return {
    [LLAMA_IO.inputIds]: { dtype: "int64", shape: [rows, tokens], data: inputIds },
    [LLAMA_IO.positionIds]: { dtype: "int64", shape: [rows, tokens], data: positionIds },
    [LLAMA_IO.logitsRows]: { dtype: "int64", shape: [logitsRows.length], data: BigInt64Array.from(logitsRows) },
  };
}

/** Each row's adapter inputs for rows [first, first + count) at `rank` (adapter-rows.ts: rankOf). */
export function adapterFeeds(config: ModelConfig, adapterRows: AdapterRows | null, first: number, count: number, rank: number): Record<string, HostTensor> {
  const feeds: Record<string, HostTensor> = {};
  if (adapterRows === null) return feeds;
  adapterRows.modules.forEach((module, m) => {
    const shape = adapterRows.inputShape(m, count, rank);
    // A compact copy (a rank below the rows' layout) is made once and shared by every layer's
    // feed while no per-layer adapter is among the rows.
    let shared: Float32Array | null = null;
    for (let layer = 0; layer < config.numLayers; layer++) {
      const data: Float32Array = adapterRows.sharedAcrossLayers && shared !== null ? shared : adapterRows.input(layer, m, first, count, rank);
      shared = data;
      feeds[adapterInputName(layer, module)] = { dtype: "float32", shape, data };
    }
  });
  return feeds;
}

/**
 * The host cache's feeds for rows [first, first + rows): the masks and every layer's cache as a
 * view (no copy). Rows with nothing cached attend only to themselves: no past slots are fed.
 */
export function hostCacheFeeds(config: ModelConfig, cache: KvCache, first: number, run: RunRows, window: number | null): Record<string, HostTensor> {
  const { numLayers, numKvHeads, headDim } = config;
  const { counts, lengths, tokens } = run;
  const rows = counts.length;
  const past = lengths.some((n) => n > 0) ? cache.capacity : 0;
  const context = past + tokens;
  const bias = new Float32Array(rows * tokens * context).fill(MASK_VALUE);
  const windowBias = window === null ? null : new Float32Array(rows * tokens * context).fill(MASK_VALUE);
  for (let i = 0; i < rows; i++) {
    const start = lengths[i];
    const last = Math.max(counts[i], 1) - 1;
    for (let t = 0; t < tokens; t++) {
      const own = Math.min(t, last);
      const at = (i * tokens + t) * context;
      if (counts[i] > 0 && past > 0) bias.fill(0, at, at + start); // every cached token of this row
      bias.fill(0, at + past, at + past + own + 1); // causal among the new ones
      if (windowBias !== null) {
        // Keys j with 0 ≤ position − j < window, over cached and new slots alike.
        const lowest = start + own - window! + 1;
        if (counts[i] > 0 && past > 0) windowBias.fill(0, at + Math.max(0, lowest), at + start);
        windowBias.fill(0, at + past + Math.max(0, lowest - start), at + past + own + 1);
      }
    }
  }
  const feeds: Record<string, HostTensor> = { [LLAMA_IO.attentionBias]: { dtype: "float32", shape: [rows, tokens, context], data: bias } };
  if (windowBias !== null) feeds[LLAMA_IO.windowBias] = { dtype: "float32", shape: [rows, tokens, context], data: windowBias };
  const empty = new Float32Array(0);
  for (let layer = 0; layer < numLayers; layer++) {
    feeds[LLAMA_IO.pastKeyT(layer)] = {
      dtype: "float32",
      shape: [rows, numKvHeads, headDim, past],
      data: past > 0 ? cache.pastKeys(layer, first, rows) : empty,
    };
    feeds[LLAMA_IO.pastValueT(layer)] = {
      dtype: "float32",
      shape: [rows, numKvHeads, headDim, past],
      data: past > 0 ? cache.pastValues(layer, first, rows) : empty,
    };
  }
  return feeds;
}

/** Writes a host run's new keys/values into the cache and advances the rows' lengths. */
export function writeHostCache(config: ModelConfig, cache: KvCache, first: number, run: RunRows, results: Record<string, HostTensor>): void {
  for (let layer = 0; layer < config.numLayers; layer++) {
    const keys = results[LLAMA_IO.newKeyT(layer)].data as Float32Array;
    const values = results[LLAMA_IO.newValueT(layer)].data as Float32Array;
    cache.write(layer, first, keys, values, run.tokens, run.counts);
  }
  cache.advance(first, run.counts);
}

/**
 * The device cache's feeds: each row's cached plus new tokens minus one, the longest of them (or
 * the run's width for rows that all start empty, which GroupQueryAttention reads as a first
 * prompt), and every layer's buffers.
 */
export function deviceCacheFeeds(config: ModelConfig, layers: (layer: number) => DeviceLayerCache, run: RunRows): Record<string, Feed> {
  const { counts, lengths, tokens } = run;
  const firstPrompt = tokens > 1 && lengths.every((n) => n === 0);
  // A dummy row writes one throw-away token at its length, which its next real token overwrites.
  const seqlens = Int32Array.from(counts, (n, i) => lengths[i] + Math.max(n, 1) - 1);
  const total = firstPrompt ? tokens : Math.max(...Array.from(seqlens, (n) => n + 1));
  const feeds: Record<string, Feed> = {
    [LLAMA_IO.seqlensK]: { dtype: "int32", shape: [counts.length], data: seqlens },
    [LLAMA_IO.totalSequenceLength]: { dtype: "int32", shape: [], data: Int32Array.of(total) },
  };
  for (let layer = 0; layer < config.numLayers; layer++) {
    feeds[LLAMA_IO.deviceKey(layer)] = layers(layer).key;
    feeds[LLAMA_IO.deviceValue(layer)] = layers(layer).value;
  }
  return feeds;
}

/** The updated cache a device run returns, by layer. */
export function presentLayers(config: ModelConfig, device: Record<string, DeviceTensor>): DeviceLayerCache[] {
  return Array.from({ length: config.numLayers }, (_, layer) => ({ key: device[LLAMA_IO.presentKey(layer)], value: device[LLAMA_IO.presentValue(layer)] }));
}

/** Splits a run's logits output into each row's logits. */
export function rowLogits(vocabSize: number, counts: readonly number[], all: Float32Array, logits: LogitsSelection): RowLogits[] {
  const out: RowLogits[] = [];
  let offset = 0;
  for (const count of counts) {
    if (count === 0) {
      out.push(NO_LOGITS);
      continue;
    }
    const positions = logits === "last" ? 1 : count;
    out.push({ positions, data: all.slice(offset * vocabSize, (offset + positions) * vocabSize) });
    offset += positions;
  }
  return out;
}
