/**
 * Safetensors files and Hugging Face checkpoint directories: reading, validating and writing.
 *
 * Layout: an 8-byte little-endian header length N, N bytes of UTF-8 JSON naming every tensor's
 * dtype, shape and byte range, then the data buffer those ranges point into. Hand-written because
 * the npm readers either pull in a framework or trust the header; a checkpoint is untrusted input,
 * so every field is checked and every error names the file and the tensor.
 */
import { open, readFile as readTextFile } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import { basename, join } from "node:path";
import { showValue as show } from "../../src/show-value.ts";
import { writeFileAtomic } from "./atomic-write.ts";
import { sizeOf, type FloatTensor } from "../tensor.ts";
import { bf16ArrayToF32, f16ArrayToF32, f32ArrayToBf16, f32ArrayToF16 } from "./half-precision.ts";

export type SafetensorsDtype = "F32" | "F16" | "BF16" | "I64" | "I32";

/** A tensor as stored: floats are converted to Float32Array, I32 -> Int32Array, I64 -> BigInt64Array. */
export type StoredTensor =
  | { dtype: "F32" | "F16" | "BF16"; shape: number[]; data: Float32Array }
  | { dtype: "I32"; shape: number[]; data: Int32Array }
  | { dtype: "I64"; shape: number[]; data: BigInt64Array };

/** What the writer accepts: a plain float tensor (written as F32 by default) or a stored one. */
export type WritableTensor = FloatTensor | StoredTensor;
export type WritableTensors = Record<string, WritableTensor> | ReadonlyMap<string, WritableTensor>;

export interface SafetensorsFile {
  metadata: Record<string, string>;
  tensors: Map<string, StoredTensor>;
}

export interface SerializeOptions {
  /** Dtype for every float tensor; without it a StoredTensor keeps its dtype and a FloatTensor is F32. */
  floatDtype?: "F32" | "F16" | "BF16";
  /** Names the output in error messages. */
  fileName?: string;
}

/** A malformed file or an unwritable tensor; the message names the file and, where relevant, the tensor. */
export class SafetensorsError extends Error {
  override readonly name = "SafetensorsError";
  constructor(
    readonly fileName: string,
    detail: string,
    readonly tensorName?: string,
  ) {
    super(tensorName === undefined ? `${fileName}: ${detail}` : `${fileName}: tensor "${tensorName}": ${detail}`);
  }
}

/** Bytes per element of each dtype this engine reads. */
export const DTYPE_BYTES: Readonly<Record<SafetensorsDtype, number>> = { F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4 };

/** Same bound as the reference implementation: a bigger header is corruption or an attack. */
export const MAX_HEADER_BYTES = 100_000_000;

export const CHECKPOINT_FILE = "model.safetensors";
export const CHECKPOINT_INDEX_FILE = "model.safetensors.index.json";

/** One validated header entry; begin/end are relative to the data buffer. */
export interface TensorEntry {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  begin: number;
  end: number;
}

const HOST_IS_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const METADATA_KEY = "__metadata__";

const isPlainObject = (value: unknown): value is Record<string, unknown> => typeof value === "object" && value !== null && !Array.isArray(value);
const isDtype = (value: unknown): value is SafetensorsDtype => typeof value === "string" && Object.hasOwn(DTYPE_BYTES, value);
const isCount = (value: unknown): value is number => Number.isSafeInteger(value) && (value as number) >= 0;

/** Parses a whole file's bytes; `fileName` is only used in error messages. */
export function parseSafetensors(bytes: Uint8Array, fileName: string): SafetensorsFile {
  const headerLength = checkHeaderLength(bytes, bytes.length, fileName);
  const dataStart = 8 + headerLength;
  const header = parseHeader(bytes.subarray(8, dataStart), bytes.length - dataStart, fileName);
  const tensors = new Map<string, StoredTensor>();
  for (const entry of header.entries) {
    tensors.set(entry.name, decodeTensor(entry, bytes.subarray(dataStart + entry.begin, dataStart + entry.end)));
  }
  return { metadata: header.metadata, tensors };
}

/** A validated header: where the data buffer starts and every tensor's byte range within it. */
export interface SafetensorsHeader {
  path: string;
  /** File size when the header was read; a later read checks the file still has it. */
  fileSize: number;
  /** Absolute offset of the data buffer (8 + header length). */
  dataStart: number;
  metadata: Record<string, string>;
  entries: TensorEntry[];
}

/** Reads and validates one safetensors file, tensor by tensor, so files over 2 GiB work too. */
export async function readSafetensorsFile(path: string): Promise<SafetensorsFile> {
  const handle = await open(path, "r");
  try {
    const header = await readHeaderFrom(handle, path);
    const tensors = new Map<string, StoredTensor>();
    for (const entry of header.entries) {
      const raw = await readExactly(handle, header.dataStart + entry.begin, entry.end - entry.begin, path);
      tensors.set(entry.name, decodeTensor(entry, raw));
    }
    return { metadata: header.metadata, tensors };
  } finally {
    await handle.close();
  }
}

/** Reads and validates only the header of a safetensors file: no tensor data is read. */
export async function readSafetensorsHeader(path: string): Promise<SafetensorsHeader> {
  const handle = await open(path, "r");
  try {
    return await readHeaderFrom(handle, path);
  } finally {
    await handle.close();
  }
}

/** Reads every tensor of a checkpoint directory: the sharded index if present, else `model.safetensors`. */
export async function readCheckpointTensors(dir: string): Promise<Map<string, StoredTensor>> {
  return collectCheckpointTensors(dir, async (path) => (await readSafetensorsFile(path)).tensors);
}

/**
 * Finds a checkpoint's files (the sharded index if present, else `model.safetensors`), reads each
 * with `readFile` and merges the results, checking the index against what every shard holds.
 */
export async function collectCheckpointTensors<T>(dir: string, readFile: (path: string) => Promise<Map<string, T>>): Promise<Map<string, T>> {
  const indexPath = join(dir, CHECKPOINT_INDEX_FILE);
  let indexText: string;
  try {
    indexText = await readTextFile(indexPath, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    const singlePath = join(dir, CHECKPOINT_FILE);
    try {
      return await readFile(singlePath);
    } catch (singleError) {
      if ((singleError as NodeJS.ErrnoException).code !== "ENOENT") throw singleError;
      throw new SafetensorsError(dir, `checkpoint has neither ${CHECKPOINT_INDEX_FILE} nor ${CHECKPOINT_FILE}`);
    }
  }
  const namesByShard = parseIndex(indexText, indexPath);
  const tensors = new Map<string, T>();
  const shardOf = new Map<string, string>();
  for (const [shard, names] of namesByShard) {
    const shardPath = join(dir, shard);
    const shardTensors = await readFile(shardPath).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== "ENOENT") throw error;
      throw new SafetensorsError(shardPath, `shard named by ${CHECKPOINT_INDEX_FILE} does not exist`);
    });
    for (const name of names) {
      if (!shardTensors.has(name)) {
        const detail = `${CHECKPOINT_INDEX_FILE} maps this tensor here but the shard lacks it`;
        throw new SafetensorsError(shardPath, detail, name);
      }
    }
    for (const [name, tensor] of shardTensors) {
      const other = shardOf.get(name);
      if (other !== undefined) throw new SafetensorsError(shardPath, `tensor is also stored in shard ${other}`, name);
      shardOf.set(name, shard);
      tensors.set(name, tensor);
    }
  }
  return tensors;
}

/** Encodes tensors (sorted by name, contiguous) and metadata as safetensors bytes. */
export function serializeSafetensors(tensors: WritableTensors, metadata?: Record<string, string>, options: SerializeOptions = {}): Uint8Array {
  const fileName = options.fileName ?? "<safetensors being written>";
  const floatDtype: unknown = options.floatDtype;
  if (floatDtype !== undefined && floatDtype !== "F32" && floatDtype !== "F16" && floatDtype !== "BF16") {
    throw new SafetensorsError(fileName, `floatDtype must be F32, F16 or BF16, got ${show(floatDtype)}`);
  }
  const named = tensors instanceof Map ? [...tensors] : Object.entries(tensors);
  // Code-unit order, not localeCompare: the layout must not depend on the machine's locale.
  named.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));

  const encoded = named.map(([name, tensor]) => ({
    name,
    shape: tensor.shape,
    ...encodeTensor(name, tensor, options.floatDtype, fileName),
  }));
  const prefix = encodeSafetensorsHeader(
    encoded.map(({ name, dtype, shape }) => ({ name, dtype, shape })),
    metadata,
    fileName,
  );
  const dataLength = encoded.reduce((total, { bytes }) => total + bytes.length, 0);
  const out = new Uint8Array(prefix.length + dataLength);
  out.set(prefix);
  let position = prefix.length;
  for (const { dtype, bytes } of encoded) {
    out.set(bytes, position);
    if (!HOST_IS_LITTLE_ENDIAN) swapEachElement(out.subarray(position, position + bytes.length), DTYPE_BYTES[dtype]);
    position += bytes.length;
  }
  return out;
}

/**
 * The 8-byte length and the header of a file whose tensors follow contiguously in the given order,
 * for writers that stream the data themselves.
 */
export function encodeSafetensorsHeader(
  entries: readonly { name: string; dtype: SafetensorsDtype; shape: readonly number[] }[],
  metadata?: Record<string, string>,
  fileName = "<safetensors being written>",
): Uint8Array {
  const headerParts: string[] = [];
  if (metadata !== undefined && Object.keys(metadata).length > 0) {
    checkMetadata(metadata, fileName);
    headerParts.push(`${JSON.stringify(METADATA_KEY)}:${JSON.stringify(metadata)}`);
  }
  let offset = 0;
  for (const { name, dtype, shape } of entries) {
    const byteLength = sizeOf(shape) * DTYPE_BYTES[dtype];
    const entry = { dtype, shape, data_offsets: [offset, offset + byteLength] };
    // Built by hand because a JS object would move integer-like names ("0", "12") to the front.
    headerParts.push(`${JSON.stringify(name)}:${JSON.stringify(entry)}`);
    offset += byteLength;
  }
  const json = new TextEncoder().encode(`{${headerParts.join(",")}}`);
  // Pad with spaces, as the reference writer does, so the data buffer starts 8-byte aligned.
  const padded = json.length + ((8 - (json.length % 8)) % 8);
  const out = new Uint8Array(8 + padded).fill(0x20, 8 + json.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.set(json, 8);
  return out;
}

/** Writes a safetensors file atomically (readers see the old file or the new one, never half). */
export async function writeSafetensorsFile(
  path: string,
  tensors: WritableTensors,
  metadata?: Record<string, string>,
  options: SerializeOptions = {},
): Promise<void> {
  await writeFileAtomic(path, serializeSafetensors(tensors, metadata, { fileName: path, ...options }));
}

async function readHeaderFrom(handle: FileHandle, path: string): Promise<SafetensorsHeader> {
  const { size } = await handle.stat();
  const headerLength = checkHeaderLength(await readExactly(handle, 0, Math.min(size, 8), path), size, path);
  const dataStart = 8 + headerLength;
  const { metadata, entries } = parseHeader(await readExactly(handle, 8, headerLength, path), size - dataStart, path);
  return { path, fileSize: size, dataStart, metadata, entries };
}

function checkHeaderLength(prefix: Uint8Array, fileSize: number, fileName: string): number {
  if (fileSize < 8) {
    throw new SafetensorsError(fileName, `file is ${fileSize} bytes, shorter than the 8-byte header length`);
  }
  const length = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (length === 0n) throw new SafetensorsError(fileName, "header length is 0");
  if (length > BigInt(MAX_HEADER_BYTES)) {
    throw new SafetensorsError(fileName, `header length ${length} exceeds the bound of ${MAX_HEADER_BYTES} bytes`);
  }
  if (length > BigInt(fileSize - 8)) {
    throw new SafetensorsError(fileName, `header length ${length} is larger than the file (${fileSize} bytes)`);
  }
  return Number(length);
}

function parseHeader(headerBytes: Uint8Array, dataLength: number, fileName: string): { metadata: Record<string, string>; entries: TensorEntry[] } {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(headerBytes);
  } catch {
    throw new SafetensorsError(fileName, "header is not valid UTF-8");
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new SafetensorsError(fileName, `header is not valid JSON (${(error as Error).message})`);
  }
  if (!isPlainObject(json)) throw new SafetensorsError(fileName, `header is not a JSON object but ${show(json)}`);

  let metadata: Record<string, string> = {};
  const entries: TensorEntry[] = [];
  for (const [name, value] of Object.entries(json)) {
    if (name === METADATA_KEY) metadata = checkMetadata(value, fileName);
    else entries.push(checkEntry(name, value, dataLength, fileName));
  }

  // Empty tensors occupy no bytes, so they cannot overlap anything.
  const occupied = entries.filter((e) => e.end > e.begin).sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < occupied.length; i++) {
    const [previous, current] = [occupied[i - 1], occupied[i]];
    if (current.begin < previous.end) {
      const range = (e: TensorEntry) => `"${e.name}" [${e.begin}, ${e.end})`;
      throw new SafetensorsError(fileName, `byte ranges overlap: ${range(previous)} and ${range(current)}`);
    }
  }
  return { metadata, entries };
}

function checkEntry(name: string, value: unknown, dataLength: number, fileName: string): TensorEntry {
  const fail = (detail: string) => new SafetensorsError(fileName, detail, name);
  if (!isPlainObject(value) || !("dtype" in value) || !("shape" in value) || !("data_offsets" in value)) {
    throw fail(`entry is not an object with dtype, shape and data_offsets: ${show(value)}`);
  }
  const { dtype, shape, data_offsets: offsets } = value;
  if (!isDtype(dtype)) {
    throw fail(`unsupported dtype ${show(dtype)} (supported: ${Object.keys(DTYPE_BYTES).join(", ")})`);
  }
  if (!Array.isArray(shape) || !shape.every(isCount)) {
    throw fail(`shape must be an array of non-negative safe integers, got ${show(shape)}`);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount) || offsets[0] > offsets[1]) {
    throw fail(`data_offsets must be two integers [begin, end] with begin <= end, got ${show(offsets)}`);
  }
  const [begin, end] = offsets as [number, number];
  const expectedBytes = sizeOf(shape) * DTYPE_BYTES[dtype];
  if (end - begin !== expectedBytes) {
    throw fail(`data_offsets span ${end - begin} bytes but ${dtype} shape [${shape.join(", ")}] needs ${expectedBytes}`);
  }
  if (end > dataLength) throw fail(`data_offsets end ${end} is beyond the data buffer (${dataLength} bytes)`);
  return { name, dtype, shape: [...shape], begin, end };
}

function checkMetadata(value: unknown, fileName: string): Record<string, string> {
  if (!isPlainObject(value)) {
    throw new SafetensorsError(fileName, `${METADATA_KEY} must be a map of string to string, got ${show(value)}`);
  }
  for (const [key, entry] of Object.entries(value)) {
    if (typeof entry !== "string") {
      throw new SafetensorsError(fileName, `${METADATA_KEY} must be a map of string to string, but "${key}" is ${show(entry)}`);
    }
  }
  return { ...(value as Record<string, string>) };
}

/** Maps shard file -> tensor names from an index's `weight_map`. */
function parseIndex(text: string, indexPath: string): Map<string, string[]> {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new SafetensorsError(indexPath, `index is not valid JSON (${(error as Error).message})`);
  }
  const weightMap = isPlainObject(json) ? json.weight_map : undefined;
  if (!isPlainObject(weightMap)) throw new SafetensorsError(indexPath, "index has no weight_map object");
  const namesByShard = new Map<string, string[]>();
  for (const [name, shard] of Object.entries(weightMap)) {
    // A shard must sit beside the index; anything else is a path escaping the checkpoint.
    if (typeof shard !== "string" || shard === "" || basename(shard) !== shard || shard === "..") {
      throw new SafetensorsError(indexPath, `weight_map entry is not a shard file name: ${show(shard)}`, name);
    }
    const names = namesByShard.get(shard) ?? [];
    names.push(name);
    namesByShard.set(shard, names);
  }
  return namesByShard;
}

function decodeTensor(entry: TensorEntry, raw: Uint8Array): StoredTensor {
  const shape = entry.shape;
  switch (entry.dtype) {
    case "F32":
      return { dtype: "F32", shape, data: new Float32Array(hostOrderCopy(raw, 4)) };
    case "F16":
      return { dtype: "F16", shape, data: f16ArrayToF32(new Uint16Array(hostOrderCopy(raw, 2))) };
    case "BF16":
      return { dtype: "BF16", shape, data: bf16ArrayToF32(new Uint16Array(hostOrderCopy(raw, 2))) };
    case "I32":
      return { dtype: "I32", shape, data: new Int32Array(hostOrderCopy(raw, 4)) };
    case "I64":
      return { dtype: "I64", shape, data: new BigInt64Array(hostOrderCopy(raw, 8)) };
  }
}

/** Checks a tensor and returns its payload in host byte order (a view, not a copy, where possible). */
function encodeTensor(
  name: string,
  tensor: WritableTensor,
  floatDtype: SerializeOptions["floatDtype"],
  fileName: string,
): { dtype: SafetensorsDtype; bytes: Uint8Array } {
  const fail = (detail: string) => new SafetensorsError(fileName, detail, name);
  if (name === "" || name === METADATA_KEY) throw fail("is not a usable tensor name");
  const storedDtype: unknown = "dtype" in tensor ? tensor.dtype : "F32";
  if (!isDtype(storedDtype)) throw fail(`unsupported dtype ${show(storedDtype)}`);
  if (!Array.isArray(tensor.shape) || !tensor.shape.every(isCount)) {
    throw fail(`shape must be an array of non-negative safe integers, got ${show(tensor.shape)}`);
  }
  const arrayType = storedDtype === "I32" ? Int32Array : storedDtype === "I64" ? BigInt64Array : Float32Array;
  const data: unknown = tensor.data;
  if (!(data instanceof arrayType)) throw fail(`${storedDtype} data must be a ${arrayType.name}`);
  if (data.length !== sizeOf(tensor.shape)) {
    throw fail(`data has ${data.length} elements but shape [${tensor.shape.join(", ")}] needs ${sizeOf(tensor.shape)}`);
  }
  const isInteger = storedDtype === "I32" || storedDtype === "I64";
  const dtype = isInteger ? storedDtype : (floatDtype ?? storedDtype);
  const converted = dtype === "F16" ? f32ArrayToF16(data as Float32Array) : dtype === "BF16" ? f32ArrayToBf16(data as Float32Array) : data;
  return { dtype, bytes: new Uint8Array(converted.buffer, converted.byteOffset, converted.byteLength) };
}

/** Copies little-endian elements into a fresh buffer in host order; fresh also means aligned. */
function hostOrderCopy(raw: Uint8Array, width: number): ArrayBuffer {
  // Not raw.slice(): on a Node Buffer that is a view into a shared pool, not a copy.
  const copy = new Uint8Array(raw.length);
  copy.set(raw);
  if (!HOST_IS_LITTLE_ENDIAN) swapEachElement(copy, width);
  return copy.buffer;
}

/** Turns little-endian elements of `width` bytes into host order, in place (a no-op on x86 and ARM). */
export function littleEndianToHostOrder(bytes: Uint8Array, width: number): void {
  if (!HOST_IS_LITTLE_ENDIAN) swapEachElement(bytes, width);
}

function swapEachElement(bytes: Uint8Array, width: number): void {
  for (let start = 0; start < bytes.length; start += width) {
    for (let low = start, high = start + width - 1; low < high; low++, high--) {
      const byte = bytes[low];
      bytes[low] = bytes[high];
      bytes[high] = byte;
    }
  }
}

/** Reads exactly `length` bytes at `position`, in chunks small enough for one read call. */
async function readExactly(handle: FileHandle, position: number, length: number, fileName: string): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  const chunk = 1 << 30;
  for (let done = 0; done < length; ) {
    const { bytesRead } = await handle.read(out, done, Math.min(chunk, length - done), position + done);
    if (bytesRead === 0) throw new SafetensorsError(fileName, `file ended at byte ${position + done} while reading`);
    done += bytesRead;
  }
  return out;
}
