/**
 * The PiCa basis: for every layer and targeted module, P = the top-rMax right singular vectors
 * of the weight W [out, in] (as rows, P is [rMax, in]), with signs canonicalised and the whole
 * identified by a sha256 that every adapter records. Computed once per base model and stored:
 *
 *   pica-basis-r{rMax}.safetensors
 *     pica.basis.layers.{l}.{module}   F32 [rMax, in]
 *     metadata: format "pica-basis", format_version "1", basis_id, base_fingerprint, r_max,
 *               num_layers, target_modules (JSON), and for an extended basis `extends`
 *               (JSON [{r_max, basis_id}]: the bases whose rows it begins with)
 *
 * Why stored and hashed rather than recomputed: singular vectors are defined up to sign and
 * rotate freely inside a repeated singular value; a P recomputed by another backend or in
 * another precision can differ, and M is learned in P's coordinates (DESIGN.md §2).
 *
 * A runner asked for more rows than its stored basis holds extends that basis rather than
 * computing a new one: the stored rows are kept bit for bit and the next singular vectors are
 * computed orthogonal to them, so every adapter trained against the smaller basis is served by
 * the larger one (its id is recorded in `extends`, and checked against the rows it names).
 */
import { createHash } from "node:crypto";
import { mkdir, readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { parseSafetensors, serializeSafetensors, writeSafetensorsFile } from "../checkpoint/safetensors.ts";
import type { ModelConfig } from "../model/config.ts";
import { LINEAR_MODULES, linearName, linearShape, type LinearModule, type WeightMap } from "../model/weights.ts";
import type { FloatTensor } from "../tensor.ts";
import { modelFingerprint } from "./fingerprint.ts";
import { createOnnxWeightProducts, largestMagnitudeIndex, nextRightSingularVectors, topRightSingularVectors } from "./singular-vectors.ts";
import { DEFAULT_TARGET_MODULES, projectionKey, type Basis, type BasisPrefix } from "./types.ts";

export { canonicalizeSigns, createOnnxMatrixProduct, topRightSingularVectors, type RightSingularVectors } from "./singular-vectors.ts";

/** The `format` metadata value of a basis file. */
export const BASIS_FORMAT = "pica-basis";
/** The `format_version` this code reads and writes. */
export const BASIS_FORMAT_VERSION = "1";

/** What to compute: rows per P, which modules (default: all seven), and the base model's fingerprint. */
export interface BasisOptions {
  rMax: number;
  targetModules?: LinearModule[];
  baseFingerprint?: string; // default: modelFingerprint(config, weights)
}

/** A malformed or mismatched basis file; names the file and what is wrong. */
export class BasisFormatError extends Error {
  override readonly name = "BasisFormatError";
  constructor(
    readonly fileName: string,
    detail: string,
  ) {
    super(`${fileName}: ${detail}`);
  }
}

const HOST_IS_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const TENSOR_NAME = /^pica\.basis\.layers\.(0|[1-9]\d*)\.([a-z_]+)$/;
const FILE_NAME = /^pica-basis-r([1-9]\d*)\.safetensors$/;
const ROW_NORM_TOLERANCE = 1e-4;

/** The file a basis of rank `rMax` is stored in, inside the model's basis directory. */
export function basisFileName(rMax: number): string {
  return `pica-basis-r${rMax}.safetensors`;
}

/** Safetensors name of the P of a layer and module. */
export function basisTensorName(layer: number, module: LinearModule): string {
  return `pica.basis.layers.${layer}.${module}`;
}

/** Checks target modules and returns them deduplicated in the canonical (LINEAR_MODULES) order. */
export function canonicalTargetModules(modules: readonly string[]): LinearModule[] {
  if (modules.length === 0) throw new Error("targetModules is empty: PiCa needs at least one module");
  const seen = new Set<string>();
  for (const module of modules) {
    if (!(LINEAR_MODULES as readonly string[]).includes(module)) {
      throw new Error(`unknown target module ${JSON.stringify(module)} (known: ${LINEAR_MODULES.join(", ")})`);
    }
    if (seen.has(module)) throw new Error(`target module ${module} is listed twice`);
    seen.add(module);
  }
  return LINEAR_MODULES.filter((module) => seen.has(module));
}

/**
 * Computes the basis of a model: for every layer and targeted module, P [rMax, in] = the top-rMax
 * right singular vectors of the weight, float64 throughout, rows orthonormal and sign-canonical.
 */
export async function computeBasis(
  config: ModelConfig,
  weights: WeightMap,
  options: BasisOptions,
  onProgress?: (done: number, total: number) => void,
): Promise<Basis> {
  const { rMax } = options;
  const targetModules = canonicalTargetModules(options.targetModules ?? DEFAULT_TARGET_MODULES);
  checkRank(config, rMax, targetModules);
  for (let layer = 0; layer < config.numLayers; layer++) {
    for (const module of targetModules) {
      const name = linearName(layer, module);
      const tensor = weights.get(name);
      const expected = linearShape(config, module);
      if (tensor === undefined) throw new Error(`computeBasis: the weights have no ${name} (expected [${expected.join(", ")}])`);
      if (tensor.shape.length !== 2 || tensor.shape[0] !== expected[0] || tensor.shape[1] !== expected[1]) {
        throw new Error(`computeBasis: ${name} has shape [${tensor.shape.join(", ")}], expected [${expected.join(", ")}]`);
      }
    }
  }
  const baseFingerprint = options.baseFingerprint ?? modelFingerprint(config, weights);

  const total = config.numLayers * targetModules.length;
  const projections = new Map<string, FloatTensor>();
  const products = await createOnnxWeightProducts();
  try {
    for (let layer = 0; layer < config.numLayers; layer++) {
      for (const module of targetModules) {
        const name = linearName(layer, module);
        const weight = weights.get(name)!;
        let rows: Float32Array;
        try {
          ({ rows } = await topRightSingularVectors(weight, rMax, products, { label: name }));
        } catch (error) {
          // Most failures name the weight already; a failed read or onnxruntime run may not.
          const message = error instanceof Error ? error.message : String(error);
          throw message.includes(name) ? error : new Error(`${name}: ${message}`, { cause: error });
        }
        projections.set(projectionKey(layer, module), { shape: [rMax, weight.shape[1]], data: rows });
        onProgress?.(projections.size, total);
      }
    }
  } finally {
    await products.dispose();
  }
  const basis = { baseFingerprint, rMax, numLayers: config.numLayers, targetModules, projections };
  return { id: basisId(basis), ...basis };
}

function checkRank(config: ModelConfig, rMax: number, targetModules: readonly LinearModule[]): void {
  if (!Number.isInteger(rMax) || rMax < 1) throw new Error(`rMax must be a positive integer, got ${rMax}`);
  for (const module of targetModules) {
    const [out, inputs] = linearShape(config, module);
    if (rMax > Math.min(out, inputs)) {
      throw new Error(
        `rMax ${rMax} exceeds the rank limit of ${module}: its weight is [${out}, ${inputs}], so at most min(out, in) = ${Math.min(out, inputs)}`,
      );
    }
  }
}

/**
 * sha256 (hex) over a canonical encoding: a version tag, rMax, numLayers, targetModules and
 * baseFingerprint as JSON, then every P's shape and little-endian float32 bytes in (layer,
 * module) order. Throws when a projection is missing, extra or of the wrong shape.
 */
export function basisId(basis: Omit<Basis, "id">): string {
  const { rMax, numLayers, baseFingerprint } = basis;
  const targetModules = [...basis.targetModules];
  const hash = createHash("sha256");
  hash.update(`pica-basis/v${BASIS_FORMAT_VERSION}\n`);
  hash.update(`${JSON.stringify({ rMax, numLayers, targetModules, baseFingerprint })}\n`);
  for (let layer = 0; layer < numLayers; layer++) {
    for (const module of targetModules) {
      const key = projectionKey(layer, module);
      const p = basis.projections.get(key);
      if (p === undefined) throw new Error(`basis has no projection for layer ${layer} ${module}`);
      if (p.shape.length !== 2 || p.shape[0] !== rMax || p.data.length !== p.shape[0] * p.shape[1]) {
        throw new Error(`basis projection ${key} has shape [${p.shape.join(", ")}] with ${p.data.length} values, expected [${rMax}, in]`);
      }
      hash.update(`${key}:${p.shape.join("x")}\n`);
      hash.update(littleEndianBytes(p.data));
    }
  }
  if (basis.projections.size !== numLayers * targetModules.length) {
    const expected = new Set<string>();
    for (let layer = 0; layer < numLayers; layer++) for (const module of targetModules) expected.add(projectionKey(layer, module));
    const extra = [...basis.projections.keys()].filter((key) => !expected.has(key));
    throw new Error(`basis has projections outside its ${numLayers} layers × [${targetModules.join(", ")}]: ${extra.slice(0, 5).join(", ")}`);
  }
  return hash.digest("hex");
}

function littleEndianBytes(data: Float32Array): Uint8Array {
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (HOST_IS_LITTLE_ENDIAN) return bytes;
  const swapped = new Uint8Array(bytes.length);
  for (let i = 0; i < bytes.length; i += 4) {
    swapped[i] = bytes[i + 3];
    swapped[i + 1] = bytes[i + 2];
    swapped[i + 2] = bytes[i + 1];
    swapped[i + 3] = bytes[i];
  }
  return swapped;
}

/** The safetensors tensors and metadata of a basis, after checking its id against its contents. */
function basisFileContents(basis: Basis): { tensors: Map<string, FloatTensor>; metadata: Record<string, string> } {
  const computed = basisId(basis);
  if (computed !== basis.id) throw new Error(`basis id ${basis.id} does not match its contents (sha256 ${computed}); refusing to store it`);
  const tensors = new Map<string, FloatTensor>();
  for (let layer = 0; layer < basis.numLayers; layer++) {
    for (const module of basis.targetModules) tensors.set(basisTensorName(layer, module), basis.projections.get(projectionKey(layer, module))!);
  }
  const metadata = {
    format: BASIS_FORMAT,
    format_version: BASIS_FORMAT_VERSION,
    basis_id: basis.id,
    base_fingerprint: basis.baseFingerprint,
    r_max: String(basis.rMax),
    num_layers: String(basis.numLayers),
    target_modules: JSON.stringify(basis.targetModules),
    ...(basis.prefixes?.length ? { extends: JSON.stringify(basis.prefixes.map((prefix) => ({ r_max: prefix.rMax, basis_id: prefix.id }))) } : {}),
  };
  return { tensors, metadata };
}

/** A basis as safetensors bytes (every P as F32 [rMax, in], the fields as metadata). */
export function serializeBasis(basis: Basis): Uint8Array {
  const { tensors, metadata } = basisFileContents(basis);
  return serializeSafetensors(tensors, metadata, { fileName: "<basis>" });
}

/**
 * Parses and validates a basis file: format and version, every field, the exact set of tensors,
 * their dtype, shapes and values (finite, unit rows, canonical signs), and finally that the
 * contents hash to the recorded basis_id.
 */
export function parseBasis(bytes: Uint8Array, fileName: string): Basis {
  const file = parseSafetensors(bytes, fileName);
  const fail = (detail: string): never => {
    throw new BasisFormatError(fileName, detail);
  };
  const field = (key: string): string => file.metadata[key] ?? fail(`metadata has no "${key}"`);
  if (field("format") !== BASIS_FORMAT) fail(`format is ${JSON.stringify(field("format"))}, expected "${BASIS_FORMAT}"`);
  if (field("format_version") !== BASIS_FORMAT_VERSION) {
    fail(`format_version is ${JSON.stringify(field("format_version"))}; this code reads version ${BASIS_FORMAT_VERSION}`);
  }
  const id = field("basis_id");
  if (!/^[0-9a-f]{64}$/.test(id)) fail(`basis_id ${JSON.stringify(id)} is not a sha256 hex digest`);
  const baseFingerprint = field("base_fingerprint");
  if (baseFingerprint.length === 0) fail("base_fingerprint is empty");
  const rMax = positiveInteger(field("r_max"), "r_max", fail);
  const numLayers = positiveInteger(field("num_layers"), "num_layers", fail);
  let modulesJson: unknown;
  try {
    modulesJson = JSON.parse(field("target_modules"));
  } catch {
    fail(`target_modules ${JSON.stringify(field("target_modules"))} is not JSON`);
  }
  if (!Array.isArray(modulesJson) || !modulesJson.every((m) => typeof m === "string"))
    fail(`target_modules must be a JSON array of module names, got ${field("target_modules")}`);
  let targetModules: LinearModule[] = [];
  try {
    targetModules = canonicalTargetModules(modulesJson as string[]);
  } catch (error) {
    fail(`target_modules: ${(error as Error).message}`);
  }
  if (targetModules.join() !== (modulesJson as string[]).join())
    fail(`target_modules ${field("target_modules")} is not in canonical order (${JSON.stringify(targetModules)})`);

  for (const name of file.tensors.keys()) {
    const match = TENSOR_NAME.exec(name);
    if (match === null || Number(match[1]) >= numLayers || !(targetModules as string[]).includes(match[2])) {
      fail(`unexpected tensor "${name}" (the file declares ${numLayers} layers × ${JSON.stringify(targetModules)})`);
    }
  }
  const projections = new Map<string, FloatTensor>();
  const widths = new Map<LinearModule, number>();
  for (let layer = 0; layer < numLayers; layer++) {
    for (const module of targetModules) {
      const name = basisTensorName(layer, module);
      const tensor = file.tensors.get(name) ?? fail(`tensor "${name}" is missing`);
      if (tensor.dtype !== "F32") fail(`tensor "${name}" is ${tensor.dtype}, expected F32`);
      const [rows, columns] = tensor.shape;
      if (tensor.shape.length !== 2 || rows !== rMax || columns < rMax)
        fail(`tensor "${name}" has shape [${tensor.shape.join(", ")}], expected [${rMax}, in ≥ ${rMax}]`);
      const width = widths.get(module) ?? columns;
      if (columns !== width) fail(`tensor "${name}" has ${columns} columns but layer 0's ${module} has ${width}`);
      widths.set(module, width);
      const data = tensor.data as Float32Array;
      checkProjectionValues(data, rows, columns, (detail) => fail(`tensor "${name}": ${detail}`));
      projections.set(projectionKey(layer, module), { shape: [rows, columns], data });
    }
  }
  const basis = { baseFingerprint, rMax, numLayers, targetModules, projections };
  const computed = basisId(basis);
  if (computed !== id) fail(`basis_id ${id} does not match the contents, which hash to ${computed}: the file is corrupted or was edited`);
  const prefixes = file.metadata.extends === undefined ? [] : parsePrefixes(file.metadata.extends, { id, ...basis }, fail);
  return prefixes.length === 0 ? { id, ...basis } : { id, ...basis, prefixes };
}

/** The `extends` metadata: each entry's rows must be this basis's first rows, hashing to its id. */
function parsePrefixes(text: string, basis: Basis, fail: (detail: string) => never): BasisPrefix[] {
  let entries: unknown;
  try {
    entries = JSON.parse(text);
  } catch {
    fail(`extends ${JSON.stringify(text)} is not JSON`);
  }
  if (!Array.isArray(entries)) fail(`extends must be a JSON array of {r_max, basis_id}, got ${text}`);
  const prefixes: BasisPrefix[] = [];
  for (const entry of entries as unknown[]) {
    const { r_max: rows, basis_id: id } = (entry ?? {}) as { r_max?: unknown; basis_id?: unknown };
    const previous = prefixes.at(-1)?.rMax ?? 0;
    if (typeof rows !== "number" || !Number.isInteger(rows) || rows <= previous || rows >= basis.rMax)
      fail(`extends: r_max ${JSON.stringify(rows)} must be an integer above ${previous} and below r_max ${basis.rMax}`);
    if (typeof id !== "string" || !/^[0-9a-f]{64}$/.test(id)) fail(`extends: basis_id ${JSON.stringify(id)} is not a sha256 hex digest`);
    const actual = truncateBasis(basis, rows as number).id;
    if (actual !== id) fail(`extends: the first ${rows} rows hash to ${actual}, not to the recorded basis_id ${id}`);
    prefixes.push({ rMax: rows as number, id: id as string });
  }
  return prefixes;
}

/** The first `rMax` rows of a basis, as a basis of its own (with its own id). */
export function truncateBasis(basis: Basis, rMax: number): Basis {
  if (!Number.isInteger(rMax) || rMax < 1 || rMax > basis.rMax) throw new Error(`truncateBasis: rMax ${rMax} must be an integer in [1, ${basis.rMax}]`);
  if (rMax === basis.rMax) return basis;
  const projections = new Map<string, FloatTensor>();
  for (const [key, p] of basis.projections) projections.set(key, { shape: [rMax, p.shape[1]], data: p.data.subarray(0, rMax * p.shape[1]) });
  const truncated = { baseFingerprint: basis.baseFingerprint, rMax, numLayers: basis.numLayers, targetModules: basis.targetModules, projections };
  const prefixes = (basis.prefixes ?? []).filter((prefix) => prefix.rMax < rMax);
  return { id: basisId(truncated), ...truncated, ...(prefixes.length > 0 ? { prefixes } : {}) };
}

/**
 * `stored` grown to `rMax` rows: its rows unchanged, then for every layer and module the next
 * right singular vectors of the weight, orthogonal to them (nextRightSingularVectors). The result
 * records `stored` (and what `stored` extends) as its prefixes.
 */
export async function extendBasis(
  config: ModelConfig,
  weights: WeightMap,
  stored: Basis,
  rMax: number,
  onProgress?: (done: number, total: number) => void,
): Promise<Basis> {
  if (!Number.isInteger(rMax) || rMax <= stored.rMax) throw new Error(`extendBasis: rMax ${rMax} must be an integer above the stored ${stored.rMax}`);
  checkRank(config, rMax, stored.targetModules);
  const total = config.numLayers * stored.targetModules.length;
  const projections = new Map<string, FloatTensor>();
  const products = await createOnnxWeightProducts();
  try {
    for (let layer = 0; layer < config.numLayers; layer++) {
      for (const module of stored.targetModules) {
        const name = linearName(layer, module);
        const weight = weights.get(name);
        if (weight === undefined) throw new Error(`extendBasis: the weights have no ${name}`);
        const kept = stored.projections.get(projectionKey(layer, module))!;
        const { rows } = await nextRightSingularVectors(weight, kept.data, stored.rMax, rMax - stored.rMax, products, { label: name });
        const data = new Float32Array(rMax * kept.shape[1]);
        data.set(kept.data);
        data.set(rows, kept.data.length);
        projections.set(projectionKey(layer, module), { shape: [rMax, kept.shape[1]], data });
        onProgress?.(projections.size, total);
      }
    }
  } finally {
    await products.dispose();
  }
  const basis = { baseFingerprint: stored.baseFingerprint, rMax, numLayers: stored.numLayers, targetModules: stored.targetModules, projections };
  return { id: basisId(basis), ...basis, prefixes: [...(stored.prefixes ?? []), { rMax: stored.rMax, id: stored.id }] };
}

function positiveInteger(text: string, key: string, fail: (detail: string) => never): number {
  if (!/^[1-9]\d*$/.test(text) || !Number.isSafeInteger(Number(text))) fail(`${key} ${JSON.stringify(text)} is not a positive integer`);
  return Number(text);
}

/** Finite values, unit-norm rows and canonical signs: what every P this module writes has. */
function checkProjectionValues(data: Float32Array, rows: number, columns: number, fail: (detail: string) => never): void {
  for (let i = 0; i < rows; i++) {
    const row = data.subarray(i * columns, (i + 1) * columns);
    let norm = 0;
    for (let t = 0; t < columns; t++) {
      if (!Number.isFinite(row[t])) fail(`row ${i} column ${t} is ${row[t]}`);
      norm += row[t] * row[t];
    }
    if (Math.abs(Math.sqrt(norm) - 1) > ROW_NORM_TOLERANCE) fail(`row ${i} has norm ${Math.sqrt(norm)}, expected 1`);
    if (row[largestMagnitudeIndex(row)] < 0) fail(`row ${i} is not sign-canonical (its largest-magnitude entry is negative)`);
  }
}

/** A basis request with its defaults filled in: modules in canonical order, the base model's fingerprint. */
export interface BasisRequest {
  rMax: number;
  targetModules: LinearModule[];
  baseFingerprint: string;
}

/**
 * Checks `options` against the model (known modules, rMax within every targeted weight's rank)
 * and fills in the defaults; `fingerprint` is called only when no baseFingerprint is given.
 */
export function resolveBasisRequest(config: ModelConfig, options: BasisOptions, fingerprint: () => string): BasisRequest {
  const targetModules = canonicalTargetModules(options.targetModules ?? DEFAULT_TARGET_MODULES);
  checkRank(config, options.rMax, targetModules);
  return { rMax: options.rMax, targetModules, baseFingerprint: options.baseFingerprint ?? fingerprint() };
}

/**
 * The basis stored at `directory/pica-basis-r{rMax}.safetensors`, or null when there is none.
 * A file that is corrupt, or belongs to another base model, rMax or set of target modules, is an
 * error rather than null: adapters may have been trained against it, so it is never overwritten.
 */
export async function readStoredBasis(directory: string, config: ModelConfig, request: BasisRequest): Promise<Basis | null> {
  const path = join(directory, basisFileName(request.rMax));
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw error;
  }
  const basis = parseBasis(bytes, path);
  checkBasisMatches(basis, path, config, request);
  return basis;
}

/**
 * The largest basis stored in `directory` with fewer rows than asked for that belongs to this
 * model and these target modules (one that belongs elsewhere is not extended), or null.
 */
export async function readSmallerStoredBasis(directory: string, config: ModelConfig, request: BasisRequest): Promise<Basis | null> {
  let names: string[];
  try {
    names = await readdir(directory);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw error;
  }
  const smaller = names
    .map((name) => Number(FILE_NAME.exec(name)?.[1] ?? Number.NaN))
    .filter((rows) => rows < request.rMax)
    .sort((a, b) => b - a);
  for (const rows of smaller) {
    try {
      const stored = await readStoredBasis(directory, config, { ...request, rMax: rows });
      if (stored !== null) return stored;
    } catch (error) {
      if (!(error instanceof BasisFormatError)) throw error;
    }
  }
  return null;
}

/**
 * Computes the basis and writes it atomically to `directory/pica-basis-r{rMax}.safetensors`: a
 * smaller basis of this model stored there is extended (its rows kept, so adapters trained
 * against it stay servable); otherwise the basis is computed from scratch.
 */
export async function computeAndStoreBasis(
  directory: string,
  config: ModelConfig,
  weights: WeightMap,
  request: BasisRequest,
  onProgress?: (done: number, total: number) => void,
): Promise<Basis> {
  const smaller = await readSmallerStoredBasis(directory, config, request);
  const basis =
    smaller === null ? await computeBasis(config, weights, request, onProgress) : await extendBasis(config, weights, smaller, request.rMax, onProgress);
  const { tensors, metadata } = basisFileContents(basis);
  await mkdir(directory, { recursive: true });
  await writeSafetensorsFile(join(directory, basisFileName(request.rMax)), tensors, metadata);
  return basis;
}

/**
 * The basis for this model and rMax: read from `directory/pica-basis-r{rMax}.safetensors` when
 * that file exists (it must belong to this base model and these target modules, or this throws
 * rather than overwrite a basis adapters may have been trained against), else computed and
 * written there atomically.
 */
export async function loadOrComputeBasis(
  directory: string,
  config: ModelConfig,
  weights: WeightMap,
  options: BasisOptions,
  onProgress?: (done: number, total: number) => void,
): Promise<{ basis: Basis; computed: boolean; seconds: number }> {
  const started = performance.now();
  const request = resolveBasisRequest(config, options, () => modelFingerprint(config, weights));
  const seconds = () => (performance.now() - started) / 1000;
  const stored = await readStoredBasis(directory, config, request);
  if (stored !== null) {
    const total = stored.numLayers * stored.targetModules.length;
    onProgress?.(total, total);
    return { basis: stored, computed: false, seconds: seconds() };
  }
  const basis = await computeAndStoreBasis(directory, config, weights, request, onProgress);
  return { basis, computed: true, seconds: seconds() };
}

function checkBasisMatches(basis: Basis, path: string, config: ModelConfig, expected: BasisRequest): void {
  if (basis.baseFingerprint !== expected.baseFingerprint) {
    throw new BasisFormatError(
      path,
      `this basis belongs to another base model: its base_fingerprint is ${basis.baseFingerprint}, this model's is ${expected.baseFingerprint}; ` +
        `move the file away or point the basis directory elsewhere`,
    );
  }
  if (basis.rMax !== expected.rMax)
    throw new BasisFormatError(path, `r_max is ${basis.rMax}, expected ${expected.rMax} (the file name says r${expected.rMax})`);
  if (basis.targetModules.join() !== expected.targetModules.join()) {
    throw new BasisFormatError(
      path,
      `this basis covers target modules ${JSON.stringify(basis.targetModules)}, but ${JSON.stringify(expected.targetModules)} were asked for; ` +
        `adapters trained against it need it, so it is not overwritten: ask for those modules or use another directory`,
    );
  }
  if (basis.numLayers !== config.numLayers) throw new BasisFormatError(path, `num_layers is ${basis.numLayers}, the model has ${config.numLayers}`);
  for (const module of basis.targetModules) {
    const inputs = linearShape(config, module)[1];
    const width = basis.projections.get(projectionKey(0, module))!.shape[1];
    if (width !== inputs) throw new BasisFormatError(path, `${module} projections have ${width} columns, the model's ${module} takes ${inputs} inputs`);
  }
}
