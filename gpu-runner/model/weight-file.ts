/**
 * A model's frozen weights in the layout its graphs read them (stacked, transposed linear groups;
 * embeddings, norms and lm_head under their Hugging Face names), written once into one
 * external-data file that every graph of the model references: the serving graph, and each
 * training graph. Graphs are protobuf files that only point into it, so no graph meets
 * protobuf's 2 GiB limit, and no JavaScript copy of the weights outlives the writing of the file.
 *
 *   <directory>/weights.data   the tensors, each at a 4 KiB-aligned offset (so they can be mapped):
 *                              float32, or for quantized weights their uint8 codes and float32
 *                              scales (quantize/block-format.ts)
 *   <directory>/weights.json   what is where: name → offset, length, shape, type; the layout
 *                              version; the quantization; the model's fingerprint (sha256 of
 *                              config and the original float weights)
 *
 * The directory is a cache: a model's files are written once and reused by every later start.
 * Runners that start together on one host may find it empty at once and each write it: every
 * writer fills files of its own and renames them into place, so a reader only ever sees complete
 * files, and the last rename leaves the same bytes as the first.
 */
import { closeSync, openSync, writeSync } from "node:fs";
import { createHash, randomUUID } from "node:crypto";
import { mkdir, readdir, readFile, rename, rm, stat, unlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { temporaryPathBeside, writeFileAtomic } from "../checkpoint/atomic-write.ts";
import type { GraphBuilder, Value } from "../graph/builder.ts";
import { modelFingerprintYielding } from "../pica/fingerprint.ts";
import { sameQuantization, type Quantization } from "../quantize/block-format.ts";
import type { ModelConfig } from "./config.ts";
import { buildLlamaGraph } from "./llama-graph.ts";
import type { WeightSource } from "./linear-graph.ts";
import type { WeightMap } from "./weights.ts";

/** Bump when the layout of the tensors changes: older files are then rewritten. */
const WEIGHT_FILE_LAYOUT = 2;
const DATA_FILE = "weights.data";
const MANIFEST_FILE = "weights.json";
const ALIGNMENT = 4096;

interface TensorEntry {
  offset: number;
  length: number; // bytes
  shape: number[];
  dtype: "float32" | "uint8";
}

/** An opened weight file: where it is, what it holds, and whose weights they are. */
export interface WeightFile {
  directory: string; // graphs that reference the file are written here (external data paths are relative)
  tensors: ReadonlyMap<string, TensorEntry>;
  bytes: number; // size of the data file
  fingerprint: string; // modelFingerprint(config, weights) of the original float weights, whatever their precision here
  quantization: Quantization | null; // how the file holds the weights (block-format.ts): null for float32
}

interface Manifest {
  layout: number;
  fingerprint: string;
  quantization: Quantization | null;
  bytes: number;
  tensors: Record<string, TensorEntry>;
}

/**
 * Writes every frozen tensor of the model's graphs into `directory`, reading each weight once
 * (lazily loaded weights are read tensor by tensor) and holding one group's tensors at a time;
 * with a quantization, each group is quantized as it is written. Returns the opened file. An
 * existing file in the directory is replaced.
 */
export async function writeWeightFile(
  directory: string,
  config: ModelConfig,
  weights: WeightMap,
  quantization: Quantization | null = null,
): Promise<WeightFile> {
  await mkdir(directory, { recursive: true });
  const fingerprint = await modelFingerprintYielding(config, weights);
  const { tensors, pending, bytes } = layOut(config, weights, quantization);
  const dataPath = join(directory, DATA_FILE);
  const partial = temporaryPathBeside(dataPath);
  try {
    const fd = openSync(partial, "w");
    try {
      for (const { entry, data } of pending) {
        const values = data();
        if (values.byteLength !== entry.length) throw new Error(`weight file: a tensor of ${values.byteLength} bytes where ${entry.length} were laid out`);
        writeSync(fd, new Uint8Array(values.buffer, values.byteOffset, values.byteLength), 0, values.byteLength, entry.offset);
        // Yield between tensors: lazily read weights are then collectable, so memory holds about
        // one group's tensors at a time rather than the whole model.
        await new Promise((resolve) => setImmediate(resolve));
      }
    } finally {
      closeSync(fd);
    }
    await rename(partial, dataPath);
  } catch (error) {
    await unlink(partial).catch(() => undefined);
    throw error;
  }
  const manifest: Manifest = { layout: WEIGHT_FILE_LAYOUT, fingerprint, quantization, bytes, tensors: Object.fromEntries(tensors) };
  await writeFileAtomic(join(directory, MANIFEST_FILE), JSON.stringify(manifest));
  return { directory, tensors, bytes, fingerprint, quantization };
}

/** Bytes of the frozen tensors a weight file of the model holds: what its graphs would otherwise carry inline. */
export function frozenWeightBytes(config: ModelConfig, weights: WeightMap, quantization: Quantization | null = null): number {
  return layOut(config, weights, quantization).pending.reduce((sum, { entry }) => sum + entry.length, 0);
}

/** Opens the weight file in `directory`, or returns null when there is none (or an outdated or incomplete one). */
export async function openWeightFile(directory: string): Promise<WeightFile | null> {
  let manifest: Manifest;
  try {
    manifest = JSON.parse(await readFile(join(directory, MANIFEST_FILE), "utf8")) as Manifest;
  } catch {
    return null;
  }
  if (manifest.layout !== WEIGHT_FILE_LAYOUT) return null;
  const size = await stat(join(directory, DATA_FILE)).then(
    (s) => s.size,
    () => -1,
  );
  if (size !== manifest.bytes) return null;
  return {
    directory,
    tensors: new Map(Object.entries(manifest.tensors)),
    bytes: manifest.bytes,
    fingerprint: manifest.fingerprint,
    quantization: manifest.quantization,
  };
}

/**
 * The complete weight file in `directory`, or a freshly written one. The directory must belong to
 * this checkpoint (see `weightCacheDirectory`): an existing file is trusted without re-reading the
 * weights, which for a real model would cost as much as writing it.
 */
export async function openOrWriteWeightFile(
  directory: string,
  config: ModelConfig,
  weights: WeightMap,
  quantization: Quantization | null = null,
): Promise<{ file: WeightFile; written: boolean }> {
  const existing = await openWeightFile(directory);
  if (existing !== null && sameQuantization(existing.quantization, quantization)) return { file: existing, written: false };
  return { file: await writeWeightFile(directory, config, weights, quantization), written: true };
}

/**
 * The quantization a graph on `file` is built with: the file's own. One asked for besides
 * (`undefined`: none) must be the same, or the graph would name tensors the file does not hold.
 */
export function fileQuantization(file: WeightFile, requested: Quantization | null | undefined): Quantization | null {
  if (requested !== undefined && !sameQuantization(requested, file.quantization)) {
    throw new Error(
      `weights ${requested?.precision ?? "f32"} were asked for, but the weight file in ${file.directory} holds ${file.quantization?.precision ?? "f32"} weights`,
    );
  }
  return file.quantization;
}

/**
 * The cache directory of a checkpoint's weight file under `root`: keyed by the parsed config, the
 * quantization and the name, size and modification time of every file of the checkpoint
 * directory, so replacing the weights (or changing their precision) gives a new directory while a
 * restart finds the old one at no cost: quantizing is done once per checkpoint and precision.
 */
export async function weightCacheDirectory(
  root: string,
  checkpointDirectory: string,
  config: ModelConfig,
  quantization: Quantization | null = null,
): Promise<string> {
  const hash = createHash("sha256");
  hash.update(`layout ${WEIGHT_FILE_LAYOUT}\n${JSON.stringify(config)}\n`);
  if (quantization !== null) hash.update(`quantization ${JSON.stringify(quantization)}\n`);
  for (const name of (await readdir(checkpointDirectory)).sort()) {
    if (!name.endsWith(".safetensors") && !name.endsWith(".json")) continue;
    const info = await stat(join(checkpointDirectory, name));
    hash.update(`${name} ${info.size} ${info.mtimeMs}\n`);
  }
  return join(root, hash.digest("hex").slice(0, 24));
}

/** A weight source whose tensors are references into the file (a tensor it lacks is an error naming it). */
export function weightFileSource(file: WeightFile): WeightSource {
  return {
    tensor(g, name, shape, _data, dtype = "float32") {
      const entry = file.tensors.get(name);
      if (entry === undefined) throw new Error(`the weight file in ${file.directory} has no tensor ${name}`);
      if (entry.shape.join() !== shape.join() || entry.dtype !== dtype) {
        throw new Error(`the weight file's ${name} is ${entry.dtype} [${entry.shape.join(", ")}], the graph needs ${dtype} [${shape.join(", ")}]`);
      }
      return reference(g, name, shape, entry);
    },
  };
}

/**
 * Opens a session on a graph whose frozen tensors reference the file: the graph is written into
 * the file's directory (external data paths are relative to it) under a name no other writer
 * uses, handed to `open` as a path, and removed once `open` is done with it.
 */
export async function openGraphBeside<T>(file: WeightFile, graph: GraphBuilder, prefix: string, open: (path: string) => Promise<T>): Promise<T> {
  const path = join(file.directory, `${prefix}-${randomUUID()}.onnx`);
  await writeFile(path, graph.serialize());
  try {
    return await open(path);
  } finally {
    await rm(path, { force: true });
  }
}

/**
 * Where each frozen tensor goes in the file, and how to read it. The serving graph reads every
 * frozen tensor any graph of this model reads, in the same layout, so building it with a
 * recording source lists the whole file (names, shapes, offsets) without reading a weight.
 */
function layOut(config: ModelConfig, weights: WeightMap, quantization: Quantization | null) {
  const tensors = new Map<string, TensorEntry>();
  const pending: { entry: TensorEntry; data: () => Float32Array | Uint8Array }[] = [];
  let bytes = 0;
  const recording: WeightSource = {
    tensor(g, name, shape, data, dtype = "float32") {
      if (!tensors.has(name)) {
        const length = shape.reduce((p, d) => p * d, 1) * (dtype === "uint8" ? 1 : 4);
        const entry = { offset: Math.ceil(bytes / ALIGNMENT) * ALIGNMENT, length, shape: [...shape], dtype };
        tensors.set(name, entry);
        pending.push({ entry, data });
        bytes = entry.offset + length;
      }
      return reference(g, name, shape, tensors.get(name)!);
    },
  };
  buildLlamaGraph(config, weights, { source: recording, quantization });
  return { tensors, pending, bytes };
}

function reference(g: GraphBuilder, name: string, shape: number[], entry: TensorEntry): Value {
  return g.values.get(name) ?? g.externalInitializer(name, entry.dtype, shape, { location: DATA_FILE, offset: entry.offset, length: entry.length });
}
