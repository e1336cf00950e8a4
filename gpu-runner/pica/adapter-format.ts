/**
 * The PiCa adapter file: one safetensors file holding every M (F32) and, in its metadata, what the
 * adapter was trained against (basis id, base fingerprint) plus a sha256 over the tensors.
 *
 *   shared     pica.{module}.M             [out, rank]
 *   per_layer  pica.layers.{l}.{module}.M  [out, rank]
 *
 * An adapter file is tenant input, so parsing checks every field and names what is wrong; a
 * runner then checks the adapter against its own basis with `validateAdapterFor`.
 */
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { showValue as show } from "../../src/show-value.ts";
import { parseSafetensors, serializeSafetensors, writeSafetensorsFile } from "../checkpoint/safetensors.ts";
import type { ModelConfig } from "../model/config.ts";
import { LINEAR_MODULES, linearShape, type LinearModule } from "../model/weights.ts";
import type { FloatTensor } from "../tensor.ts";
import { adapterKey, basisServes, type Basis, type PicaAdapter, type SharingMode } from "./types.ts";

/** The `format` metadata value of an adapter file. */
export const ADAPTER_FORMAT = "pica-adapter";
/** The `format_version` this code reads and writes. */
export const ADAPTER_FORMAT_VERSION = "1";

/** A malformed adapter: names the file (or "<adapter>" in memory) and the field or tensor. */
export class AdapterFormatError extends Error {
  override readonly name = "AdapterFormatError";
  constructor(
    readonly fileName: string,
    readonly field: string,
    detail: string,
  ) {
    super(`${fileName}: ${field}: ${detail}`);
  }
}

const IN_MEMORY = "<adapter>";
const METADATA_FIELDS = [
  "format",
  "format_version",
  "base_fingerprint",
  "basis_id",
  "rank",
  "target_modules",
  "sharing",
  "provenance",
  "tensors_sha256",
] as const;
const TENSOR_NAME = /^pica\.(?:layers\.(0|[1-9]\d*)\.)?([A-Za-z_]+)\.M$/;
const HOST_IS_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

const isPlainObject = (value: unknown): value is Record<string, unknown> => typeof value === "object" && value !== null && !Array.isArray(value);
const isLinearModule = (value: unknown): value is LinearModule => typeof value === "string" && (LINEAR_MODULES as readonly string[]).includes(value);

/** Safetensors name of the M for a module (and layer, when per_layer). */
export function adapterTensorName(sharing: SharingMode, module: LinearModule, layer: number): string {
  return sharing === "shared" ? `pica.${module}.M` : `pica.layers.${layer}.${module}.M`;
}

/** Layers of a per_layer adapter (one more than the highest layer in its keys); null when shared. */
export function adapterLayerCount(adapter: PicaAdapter): number | null {
  if (adapter.sharing === "shared") return null;
  let count = 0;
  for (const key of adapter.m.keys()) {
    const layer = /^(\d+)\./.exec(key)?.[1];
    if (layer !== undefined) count = Math.max(count, Number(layer) + 1);
  }
  return count;
}

/** The keys of `m` an adapter with this sharing, these modules and this many layers must have. */
export function* expectedAdapterKeys(
  sharing: SharingMode,
  modules: readonly LinearModule[],
  numLayers: number,
): Generator<{ key: string; module: LinearModule; layer: number }> {
  // A generator, so a hostile layer index (pica.layers.99999999.…) costs nothing before the
  // first missing tensor is reported.
  const layers = sharing === "shared" ? 1 : numLayers;
  for (let layer = 0; layer < layers; layer++) {
    for (const module of modules) yield { key: adapterKey(sharing, module, layer), module, layer };
  }
}

/**
 * sha256 (hex) of an adapter's tensors: for each tensor in code-unit order of its file name,
 * the UTF-8 of `${name}|${shape joined by ","}\n`, then its float32 values as little-endian bytes.
 */
export function tensorsSha256(adapter: PicaAdapter): string {
  const named: [string, FloatTensor][] = [];
  for (const [key, tensor] of adapter.m) {
    const { module, layer } = splitKey(adapter.sharing, key);
    named.push([adapterTensorName(adapter.sharing, module, layer), tensor]);
  }
  named.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const hash = createHash("sha256");
  for (const [name, tensor] of named) {
    hash.update(`${name}|${tensor.shape.join(",")}\n`);
    hash.update(littleEndianBytes(tensor.data));
  }
  return hash.digest("hex");
}

/** Checks an adapter's fields, key set, shapes and values; throws an AdapterFormatError naming the first fault. */
export function assertWellFormedAdapter(adapter: PicaAdapter, fileName = IN_MEMORY): void {
  const fail = (field: string, detail: string) => new AdapterFormatError(fileName, field, detail);
  if (!Number.isSafeInteger(adapter.rank) || adapter.rank < 1) throw fail("rank", `must be a positive integer, got ${show(adapter.rank)}`);
  if (adapter.sharing !== "shared" && adapter.sharing !== "per_layer") {
    throw fail("sharing", `must be "shared" or "per_layer", got ${show(adapter.sharing)}`);
  }
  checkTargetModules(adapter.targetModules, fail);
  if (typeof adapter.basisId !== "string" || adapter.basisId === "") throw fail("basis_id", "must be a non-empty string");
  if (typeof adapter.baseFingerprint !== "string" || adapter.baseFingerprint === "") {
    throw fail("base_fingerprint", "must be a non-empty string");
  }
  if (!isPlainObject(adapter.provenance)) throw fail("provenance", `must be a JSON object, got ${show(adapter.provenance)}`);

  const numLayers = adapterLayerCount(adapter) ?? 1;
  if (adapter.sharing === "per_layer" && numLayers === 0) throw fail("tensors", "a per_layer adapter has no tensors");
  for (const key of adapter.m.keys()) {
    const layer = adapter.sharing === "shared" ? 0 : Number(/^(\d+)\./.exec(key)?.[1] ?? NaN);
    const module = key.slice(key.indexOf(".") + 1);
    const known = isLinearModule(module) && adapter.targetModules.includes(module) && adapterKey(adapter.sharing, module, layer) === key;
    if (!known) {
      const name = describeKey(adapter.sharing, key);
      throw fail(`tensor ${name}`, `is not expected for ${adapter.sharing} modules [${adapter.targetModules.join(", ")}]`);
    }
  }
  const outOf = new Map<LinearModule, { out: number; name: string }>();
  for (const { key, module, layer } of expectedAdapterKeys(adapter.sharing, adapter.targetModules, numLayers)) {
    const name = adapterTensorName(adapter.sharing, module, layer);
    const tensor = adapter.m.get(key);
    if (tensor === undefined) throw fail(`tensor ${name}`, `is missing (a ${adapter.sharing} adapter needs it)`);
    const [out, rank] = tensor.shape;
    if (tensor.shape.length !== 2 || !Number.isSafeInteger(out) || out < 1 || rank !== adapter.rank) {
      throw fail(`tensor ${name}`, `has shape [${tensor.shape.join(", ")}], expected [out, ${adapter.rank}]`);
    }
    const seen = outOf.get(module);
    if (seen !== undefined && seen.out !== out) {
      throw fail(`tensor ${name}`, `has ${out} output rows but ${seen.name} has ${seen.out}`);
    }
    outOf.set(module, { out, name });
    if (!(tensor.data instanceof Float32Array) || tensor.data.length !== out * rank) {
      throw fail(`tensor ${name}`, `data must be a Float32Array of ${out * rank} values`);
    }
    const bad = tensor.data.findIndex((v) => !Number.isFinite(v));
    if (bad >= 0) throw fail(`tensor ${name}`, `value ${tensor.data[bad]} at index ${bad} is not finite`);
  }
}

/** Encodes an adapter as safetensors bytes, after checking it is well formed. */
export function serializeAdapter(adapter: PicaAdapter): Uint8Array {
  assertWellFormedAdapter(adapter);
  return serializeSafetensors(fileTensors(adapter), adapterMetadata(adapter));
}

/** Parses and fully checks an adapter file's bytes; `fileName` names it in errors. */
export function parseAdapter(bytes: Uint8Array, fileName: string): PicaAdapter {
  const file = parseSafetensors(bytes, fileName);
  const fail = (field: string, detail: string) => new AdapterFormatError(fileName, field, detail);
  const metadata = file.metadata;
  for (const field of METADATA_FIELDS) {
    if (!Object.hasOwn(metadata, field)) throw fail(`metadata.${field}`, "is missing");
  }
  if (metadata.format !== ADAPTER_FORMAT) {
    throw fail("metadata.format", `is ${show(metadata.format)}, expected ${show(ADAPTER_FORMAT)}`);
  }
  if (metadata.format_version !== ADAPTER_FORMAT_VERSION) {
    throw fail("metadata.format_version", `${show(metadata.format_version)} is not supported (this reader knows ${show(ADAPTER_FORMAT_VERSION)})`);
  }
  if (!/^[1-9]\d*$/.test(metadata.rank) || !Number.isSafeInteger(Number(metadata.rank))) {
    throw fail("metadata.rank", `must be a positive integer, got ${show(metadata.rank)}`);
  }
  const targetModules = parseJson(metadata.target_modules, "metadata.target_modules", fail);
  checkTargetModules(targetModules, (field, detail) => fail(`metadata.${field}`, detail));
  const sharing = metadata.sharing;
  if (sharing !== "shared" && sharing !== "per_layer") {
    throw fail("metadata.sharing", `must be "shared" or "per_layer", got ${show(sharing)}`);
  }
  const provenance = parseJson(metadata.provenance, "metadata.provenance", fail);
  if (!isPlainObject(provenance)) throw fail("metadata.provenance", `must be a JSON object, got ${show(provenance)}`);
  if (metadata.basis_id === "") throw fail("metadata.basis_id", "is empty");
  if (metadata.base_fingerprint === "") throw fail("metadata.base_fingerprint", "is empty");
  if (!/^[0-9a-f]{64}$/.test(metadata.tensors_sha256)) {
    throw fail("metadata.tensors_sha256", `must be 64 lowercase hex digits, got ${show(metadata.tensors_sha256)}`);
  }

  const m = new Map<string, FloatTensor>();
  for (const [name, stored] of file.tensors) {
    const match = TENSOR_NAME.exec(name);
    if (match === null || !isLinearModule(match[2])) {
      throw fail(`tensor ${name}`, "is not an adapter tensor (pica.{module}.M or pica.layers.{l}.{module}.M)");
    }
    const hasLayer = match[1] !== undefined;
    if (hasLayer !== (sharing === "per_layer")) {
      throw fail(`tensor ${name}`, `is ${hasLayer ? "per-layer" : "shared"} but the adapter's sharing is ${sharing}`);
    }
    if (stored.dtype !== "F32") throw fail(`tensor ${name}`, `has dtype ${stored.dtype}, expected F32`);
    m.set(adapterKey(sharing, match[2], hasLayer ? Number(match[1]) : 0), { shape: stored.shape, data: stored.data });
  }
  const adapter: PicaAdapter = {
    rank: Number(metadata.rank),
    sharing,
    targetModules: targetModules as LinearModule[],
    basisId: metadata.basis_id,
    baseFingerprint: metadata.base_fingerprint,
    m,
    provenance,
  };
  assertWellFormedAdapter(adapter, fileName);
  const actual = tensorsSha256(adapter);
  if (actual !== metadata.tensors_sha256) {
    throw fail("metadata.tensors_sha256", `is ${metadata.tensors_sha256} but the tensors hash to ${actual} (file corrupted)`);
  }
  return adapter;
}

/** A well-formed adapter made for another base model, basis or rank than the runner's. */
export class AdapterMismatchError extends Error {
  override readonly name = "AdapterMismatchError";
  constructor(detail: string) {
    super(`adapter does not fit this runner: ${detail}`);
  }
}

/** Checks that an adapter fits a runner's base model and basis; names both values on a mismatch. */
export function validateAdapterFor(
  adapter: PicaAdapter,
  context: { config: ModelConfig; basis: Pick<Basis, "id" | "baseFingerprint" | "rMax" | "targetModules" | "numLayers" | "prefixes"> },
): void {
  const { config, basis } = context;
  const fail = (detail: string) => new AdapterMismatchError(detail);
  assertWellFormedAdapter(adapter);
  if (!basisServes(basis, adapter.basisId, adapter.rank)) {
    const prefix = basis.prefixes?.find((p) => p.id === adapter.basisId);
    if (prefix !== undefined) throw fail(`adapter rank ${adapter.rank} exceeds the ${prefix.rMax} rows of its basis ${adapter.basisId}`);
    const extended = basis.prefixes?.length ? ` (nor the id of a basis it extends: ${basis.prefixes.map((p) => p.id).join(", ")})` : "";
    throw fail(`adapter basis id ${adapter.basisId} differs from the runner's basis id ${basis.id}${extended}`);
  }
  if (adapter.baseFingerprint !== basis.baseFingerprint) {
    throw fail(`adapter base fingerprint ${adapter.baseFingerprint} differs from the runner's ${basis.baseFingerprint}`);
  }
  if (adapter.rank > basis.rMax) throw fail(`adapter rank ${adapter.rank} exceeds the basis rMax ${basis.rMax}`);
  for (const module of adapter.targetModules) {
    if (!basis.targetModules.includes(module)) {
      throw fail(`module ${module} is not in the basis target modules [${basis.targetModules.join(", ")}]`);
    }
  }
  const layers = adapterLayerCount(adapter);
  if (layers !== null && layers !== basis.numLayers) {
    throw fail(`per_layer adapter has ${layers} layers, the basis has ${basis.numLayers}`);
  }
  for (const { key, module, layer } of expectedAdapterKeys(adapter.sharing, adapter.targetModules, basis.numLayers)) {
    const name = adapterTensorName(adapter.sharing, module, layer);
    const tensor = adapter.m.get(key);
    if (tensor === undefined) throw fail(`tensor ${name} is missing`);
    const out = linearShape(config, module)[0];
    if (tensor.shape[0] !== out || tensor.shape[1] !== adapter.rank) {
      throw fail(`tensor ${name} has shape [${tensor.shape.join(", ")}], expected [${out}, ${adapter.rank}]`);
    }
  }
}

/** Writes an adapter file atomically. */
export async function writeAdapterFile(path: string, adapter: PicaAdapter): Promise<void> {
  assertWellFormedAdapter(adapter, path);
  await writeSafetensorsFile(path, fileTensors(adapter), adapterMetadata(adapter));
}

/** Reads and fully checks an adapter file. */
export async function readAdapterFile(path: string): Promise<PicaAdapter> {
  return parseAdapter(await readFile(path), path);
}

function fileTensors(adapter: PicaAdapter): Map<string, FloatTensor> {
  const tensors = new Map<string, FloatTensor>();
  for (const [key, tensor] of adapter.m) {
    const { module, layer } = splitKey(adapter.sharing, key);
    tensors.set(adapterTensorName(adapter.sharing, module, layer), tensor);
  }
  return tensors;
}

function adapterMetadata(adapter: PicaAdapter): Record<string, string> {
  return {
    format: ADAPTER_FORMAT,
    format_version: ADAPTER_FORMAT_VERSION,
    base_fingerprint: adapter.baseFingerprint,
    basis_id: adapter.basisId,
    rank: String(adapter.rank),
    target_modules: JSON.stringify(adapter.targetModules),
    sharing: adapter.sharing,
    provenance: JSON.stringify(adapter.provenance),
    tensors_sha256: tensorsSha256(adapter),
  };
}

function checkTargetModules(value: unknown, fail: (field: string, detail: string) => Error): asserts value is LinearModule[] {
  if (!Array.isArray(value) || value.length === 0) throw fail("target_modules", `must be a non-empty array, got ${show(value)}`);
  const seen = new Set<string>();
  for (const module of value) {
    if (!isLinearModule(module)) {
      throw fail("target_modules", `${show(module)} is not a linear module (known: ${LINEAR_MODULES.join(", ")})`);
    }
    if (seen.has(module)) throw fail("target_modules", `${module} appears twice`);
    seen.add(module);
  }
}

function parseJson(text: string, field: string, fail: (field: string, detail: string) => Error): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw fail(field, `is not valid JSON (${(error as Error).message})`);
  }
}

/** Splits an `m` key back into module and layer; a malformed key is reported as an unexpected tensor. */
function splitKey(sharing: SharingMode, key: string): { module: LinearModule; layer: number } {
  const match = sharing === "shared" ? /^()([A-Za-z_]+)$/.exec(key) : /^(0|[1-9]\d*)\.([A-Za-z_]+)$/.exec(key);
  if (match === null || !isLinearModule(match[2])) {
    throw new AdapterFormatError(IN_MEMORY, `m key ${show(key)}`, `is not a valid ${sharing} adapter key`);
  }
  return { module: match[2], layer: match[1] === "" ? 0 : Number(match[1]) };
}

function describeKey(sharing: SharingMode, key: string): string {
  try {
    const { module, layer } = splitKey(sharing, key);
    return adapterTensorName(sharing, module, layer);
  } catch {
    return `(m key ${show(key)})`;
  }
}

function littleEndianBytes(data: Float32Array): Uint8Array {
  const view = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (HOST_IS_LITTLE_ENDIAN) return view;
  const copy = new Uint8Array(view);
  for (let i = 0; i < copy.length; i += 4) copy.subarray(i, i + 4).reverse();
  return copy;
}
