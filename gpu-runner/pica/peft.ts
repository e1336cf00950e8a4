/**
 * PEFT LoRA interop. A PiCa adapter IS a LoRA adapter with lora_A = P_l[:r], lora_B = M (the
 * shared M repeated per layer) and lora_alpha = r, so export is exact. Import goes the other way
 * by least squares: M_l = ΔW_l P_lᵀ (per_layer) or the layer mean of it (shared), computed from
 * the LoRA factors without ever forming ΔW = s·B A, which is [out, in] per layer.
 */
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import { showValue } from "../../src/show-value.ts";
import { writeFileAtomic } from "../checkpoint/atomic-write.ts";
import { readSafetensorsFile, writeSafetensorsFile } from "../checkpoint/safetensors.ts";
import type { ModelConfig } from "../model/config.ts";
import { LINEAR_MODULES, linearName, linearShape, type LinearModule } from "../model/weights.ts";
import type { FloatTensor } from "../tensor.ts";
import { validateAdapterFor } from "./adapter-format.ts";
import { adapterKey, projectionKey, type Basis, type PicaAdapter, type SharingMode } from "./types.ts";

/** PEFT's config file name in an adapter directory. */
export const PEFT_CONFIG_FILE = "adapter_config.json";
/** PEFT's weights file name in an adapter directory. */
export const PEFT_WEIGHTS_FILE = "adapter_model.safetensors";

/** A LoRA adapter as PEFT stores it: the parsed config and its tensors. */
export interface PeftAdapter {
  adapterConfig: Record<string, unknown>;
  tensors: Map<string, FloatTensor>;
}

/** Raised for a PEFT adapter we cannot import exactly; names the file and the field or tensor. */
export class PeftImportError extends Error {
  override readonly name = "PeftImportError";
}

/** Key PEFT's `get_peft_model_state_dict` saves (adapter name removed), e.g. …q_proj.lora_A.weight. */
export function peftTensorName(layer: number, module: LinearModule, part: "lora_A" | "lora_B"): string {
  return `base_model.model.${linearModuleName(layer, module)}.${part}.weight`;
}

/** The LoRA form of a PiCa adapter: lora_A = P_l[:r] [r, in], lora_B = M [out, r], alpha = r. */
export function exportPeft(adapter: PicaAdapter, basis: Basis, config: ModelConfig, options: { baseModelName?: string } = {}): PeftAdapter {
  validateAdapterFor(adapter, { config, basis });
  const { rank } = adapter;
  const tensors = new Map<string, FloatTensor>();
  for (let layer = 0; layer < basis.numLayers; layer++) {
    for (const module of adapter.targetModules) {
      const inDim = linearShape(config, module)[1];
      const p = projectionOf(basis, config, layer, module);
      tensors.set(peftTensorName(layer, module, "lora_A"), { shape: [rank, inDim], data: p.slice(0, rank * inDim) });
      const m = adapter.m.get(adapterKey(adapter.sharing, module, layer))!;
      tensors.set(peftTensorName(layer, module, "lora_B"), { shape: [...m.shape], data: m.data.slice() });
    }
  }
  const adapterConfig: Record<string, unknown> = {
    peft_type: "LORA",
    task_type: "CAUSAL_LM",
    base_model_name_or_path: options.baseModelName ?? null,
    r: rank,
    lora_alpha: rank, // scaling alpha / r = 1, so B A = M P exactly
    lora_dropout: 0,
    target_modules: [...adapter.targetModules],
    bias: "none",
    fan_in_fan_out: false,
    use_rslora: false,
    use_dora: false,
    init_lora_weights: true,
    inference_mode: true,
    modules_to_save: null,
    layers_to_transform: null,
    layers_pattern: null,
    rank_pattern: {},
    alpha_pattern: {},
    revision: null,
  };
  return { adapterConfig, tensors };
}

/** Writes `adapter_config.json` and `adapter_model.safetensors` (each atomically) into `dir`. */
export async function writePeftDirectory(
  dir: string,
  adapter: PicaAdapter,
  basis: Basis,
  config: ModelConfig,
  options: { baseModelName?: string } = {},
): Promise<void> {
  const { adapterConfig, tensors } = exportPeft(adapter, basis, config, options);
  await mkdir(dir, { recursive: true });
  // PEFT and transformers write (and some loaders expect) format "pt" in the metadata.
  await writeSafetensorsFile(join(dir, PEFT_WEIGHTS_FILE), tensors, { format: "pt" });
  await writeFileAtomic(join(dir, PEFT_CONFIG_FILE), `${JSON.stringify(adapterConfig, null, 2)}\n`);
}

/** Reads a PEFT adapter directory: the raw config JSON and every tensor as float32. */
export async function readPeftDirectory(dir: string): Promise<{ adapterConfig: unknown; tensors: Map<string, FloatTensor> }> {
  const configPath = join(dir, PEFT_CONFIG_FILE);
  let adapterConfig: unknown;
  try {
    adapterConfig = JSON.parse(await readFile(configPath, "utf8"));
  } catch (error) {
    throw new PeftImportError(`${configPath}: cannot read it as JSON (${(error as Error).message})`);
  }
  const weightsPath = join(dir, PEFT_WEIGHTS_FILE);
  const file = await readSafetensorsFile(weightsPath).catch((error: NodeJS.ErrnoException) => {
    if (error.code !== "ENOENT") throw error;
    throw new PeftImportError(`${weightsPath}: missing (only safetensors PEFT adapters are read, not adapter_model.bin)`);
  });
  const tensors = new Map<string, FloatTensor>();
  for (const [name, stored] of file.tensors) {
    if (!(stored.data instanceof Float32Array)) {
      throw new PeftImportError(`${weightsPath}: tensor ${name}: dtype ${stored.dtype} is not a float dtype`);
    }
    tensors.set(name, { shape: stored.shape, data: stored.data });
  }
  return { adapterConfig, tensors };
}

const peftConfigSchema = z
  .object({
    r: z.number().int().positive(),
    lora_alpha: z.number(),
    target_modules: z.union([z.array(z.string()).min(1), z.string()]),
    bias: z.string().optional(),
    fan_in_fan_out: z.boolean().optional(),
    use_rslora: z.boolean().optional(),
    use_dora: z.boolean().optional(),
    lora_bias: z.boolean().optional(),
    modules_to_save: z.array(z.string()).nullable().optional(),
    layers_to_transform: z
      .union([z.number().int().nonnegative(), z.array(z.number().int().nonnegative())])
      .nullable()
      .optional(),
    rank_pattern: z.record(z.string(), z.number().int().positive()).nullable().optional(),
    alpha_pattern: z.record(z.string(), z.number()).nullable().optional(),
    base_model_name_or_path: z.string().nullable().optional(),
  })
  .passthrough();
type PeftConfig = z.infer<typeof peftConfigSchema>;

/** Projects a PEFT LoRA adapter onto the basis (least squares) and reports each module's relative error. */
export function importPeft(
  adapterConfig: unknown,
  tensors: Map<string, FloatTensor>,
  basis: Basis,
  config: ModelConfig,
  options: { sharing: SharingMode; rank: number; provenance?: Record<string, unknown> },
): { adapter: PicaAdapter; projectionError: Record<string, number> } {
  const peft = parsePeftConfig(adapterConfig);
  const { sharing, rank } = options;
  if (sharing !== "shared" && sharing !== "per_layer") throw new PeftImportError(`sharing must be "shared" or "per_layer", got ${sharing}`);
  if (!Number.isSafeInteger(rank) || rank < 1 || rank > basis.rMax) {
    throw new PeftImportError(`import rank ${rank} must be an integer in [1, ${basis.rMax}] (the basis rMax)`);
  }
  if (basis.numLayers !== config.numLayers) {
    throw new PeftImportError(`basis has ${basis.numLayers} layers but the model config has ${config.numLayers}`);
  }
  const pairs = collectLoraPairs(peft, tensors, basis, config);
  const numLayers = config.numLayers;
  const m = new Map<string, FloatTensor>();
  const projectionError: Record<string, number> = {};
  for (const module of basis.targetModules) {
    const [out, inDim] = linearShape(config, module);
    let deltaNormSq = 0; // Σ_l ‖ΔW_l‖²
    let residualSq = 0; // Σ_l ‖ΔW_l − M P_l‖²
    const sum = new Float64Array(out * rank); // shared: Σ_l G_l
    let sumOfNormsSq = 0; // shared: Σ_l ‖G_l‖²
    for (let layer = 0; layer < numLayers; layer++) {
      const pair = pairs.get(`${layer}.${module}`);
      const p = projectionOf(basis, config, layer, module).subarray(0, rank * inDim); // [rank, in]
      const projected = pair === undefined ? null : projectLora(pair.a, pair.b, pair.scale, p, rank);
      if (projected !== null) {
        deltaNormSq += projected.deltaNormSq;
        residualSq += projected.outOfSpanSq;
      }
      if (sharing === "per_layer") {
        const mLayer = projected === null ? new Float32Array(out * rank) : Float32Array.from(projected.g);
        if (projected !== null) residualSq += distanceSq(projected.g, mLayer);
        m.set(adapterKey(sharing, module, layer), { shape: [out, rank], data: mLayer });
      } else if (projected !== null) {
        for (let i = 0; i < sum.length; i++) sum[i] += projected.g[i];
        sumOfNormsSq += distanceSq(projected.g, null);
      }
    }
    if (sharing === "shared") {
      // The least-squares shared M is the layer mean of G_l = ΔW_l P_lᵀ (absent layers count as
      // 0), and Σ_l ‖G_l − M‖² = Σ_l ‖G_l‖² − L‖mean‖² + L‖mean − M‖² for the float32-rounded M.
      const mean = sum.map((v) => v / numLayers);
      const rounded = Float32Array.from(mean);
      residualSq += Math.max(0, sumOfNormsSq - numLayers * distanceSq(mean, null)) + numLayers * distanceSq(mean, rounded);
      m.set(adapterKey(sharing, module, 0), { shape: [out, rank], data: rounded });
    }
    projectionError[module] = deltaNormSq > 0 ? Math.sqrt(Math.max(0, residualSq) / deltaNormSq) : 0;
  }
  const adapter: PicaAdapter = {
    rank,
    sharing,
    targetModules: [...basis.targetModules],
    basisId: basis.id,
    baseFingerprint: basis.baseFingerprint,
    m,
    provenance: options.provenance ?? {
      kind: "peft_import",
      base_model_name_or_path: peft.base_model_name_or_path ?? null,
      lora_r: peft.r,
      lora_alpha: peft.lora_alpha,
      use_rslora: peft.use_rslora ?? false,
      projection_error: projectionError,
    },
  };
  validateAdapterFor(adapter, { config, basis });
  return { adapter, projectionError };
}

interface LoraPair {
  a: FloatTensor; // [r, in]
  b: FloatTensor; // [out, r]
  scale: number; // ΔW = scale · B A
}

/**
 * G = ΔW Pᵀ = s·B (A Pᵀ) [out, R], ‖ΔW‖² = s²·⟨BᵀB, A Aᵀ⟩ and the part of ΔW outside P's row
 * space, ‖ΔW − G P‖² = s²·⟨BᵀB, Q Qᵀ⟩ with Q = A − (A Pᵀ) P [r, in]. The last is a sum of
 * squares on purpose: ‖ΔW‖² − 2⟨G, M⟩ + ‖M‖² assumes P's float32 rows exactly orthonormal and
 * cancels, reporting ~1e-4 for an exported PiCa adapter whose true error is ~1e-7.
 */
function projectLora(
  a: FloatTensor,
  b: FloatTensor,
  scale: number,
  p: Float32Array,
  rank: number,
): { g: Float64Array; deltaNormSq: number; outOfSpanSq: number } {
  const [r, inDim] = a.shape;
  const out = b.shape[0];
  const c = new Float64Array(r * rank); // A Pᵀ [r, R]
  const q = new Float64Array(r * inDim); // A − (A Pᵀ) P [r, in]
  for (let i = 0; i < r; i++) {
    const aRow = a.data.subarray(i * inDim, (i + 1) * inDim);
    const qRow = q.subarray(i * inDim, (i + 1) * inDim);
    qRow.set(aRow);
    for (let j = 0; j < rank; j++) {
      let dot = 0;
      for (let k = 0; k < inDim; k++) dot += aRow[k] * p[j * inDim + k];
      c[i * rank + j] = dot;
      for (let k = 0; k < inDim; k++) qRow[k] -= dot * p[j * inDim + k];
    }
  }
  const btb = gram(b.data, r, out, 1, r); // BᵀB [r, r]
  const aat = gram(a.data, r, inDim, inDim, 1); // A Aᵀ [r, r]
  const qqt = gram(q, r, inDim, inDim, 1); // Q Qᵀ [r, r]
  let deltaNormSq = 0;
  let outOfSpanSq = 0;
  for (let i = 0; i < r * r; i++) {
    deltaNormSq += btb[i] * aat[i];
    outOfSpanSq += btb[i] * qqt[i];
  }
  const g = new Float64Array(out * rank); // s·B C [out, R]
  for (let o = 0; o < out; o++) {
    for (let i = 0; i < r; i++) {
      const bo = scale * b.data[o * r + i];
      if (bo === 0) continue;
      for (let j = 0; j < rank; j++) g[o * rank + j] += bo * c[i * rank + j];
    }
  }
  return { g, deltaNormSq: scale * scale * deltaNormSq, outOfSpanSq: scale * scale * outOfSpanSq };
}

/** The [n, n] float64 Gram matrix Σ_k x(i, k) x(j, k), element (i, k) at x[i·rowStride + k·colStride]. */
function gram(x: Float32Array | Float64Array, n: number, d: number, rowStride: number, colStride: number): Float64Array {
  const out = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = i; j < n; j++) {
      let dot = 0;
      for (let k = 0; k < d; k++) dot += x[i * rowStride + k * colStride] * x[j * rowStride + k * colStride];
      out[i * n + j] = out[j * n + i] = dot;
    }
  }
  return out;
}

/** ‖x − y‖² in float64 (‖x‖² when y is null). */
function distanceSq(x: Float64Array, y: Float32Array | Float64Array | null): number {
  let total = 0;
  for (let i = 0; i < x.length; i++) {
    const d = x[i] - (y === null ? 0 : y[i]);
    total += d * d;
  }
  return total;
}

/** Checks the config and refuses everything a PiCa M cannot represent. */
function parsePeftConfig(raw: unknown): PeftConfig {
  const fail = (field: string, detail: string) => new PeftImportError(`${PEFT_CONFIG_FILE}: ${field}: ${detail}`);
  const peftType = typeof raw === "object" && raw !== null ? (raw as Record<string, unknown>).peft_type : undefined;
  if (peftType !== "LORA") throw fail("peft_type", `is ${peftType === undefined ? "missing" : showValue(peftType)}, only "LORA" can be imported`);
  const parsed = peftConfigSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw fail(issue.path.join(".") || "(root)", issue.message);
  }
  const peft = parsed.data;
  if ((peft.bias ?? "none") !== "none") throw fail("bias", `is "${peft.bias}"; a bias is not representable as ΔW = M P`);
  // For nn.Linear PEFT itself ignores fan_in_fan_out; a file that sets it came from another
  // architecture (GPT-2's Conv1D), so refusing is safer than guessing the layout.
  if (peft.fan_in_fan_out === true) throw fail("fan_in_fan_out", "is true; only nn.Linear layouts ([out, in]) can be imported");
  if (peft.use_dora === true) throw fail("use_dora", "is true; DoRA's magnitude rescaling is not linear in ΔW");
  if (peft.lora_bias === true) throw fail("lora_bias", "is true; a bias is not representable as ΔW = M P");
  if (peft.modules_to_save != null && peft.modules_to_save.length > 0) {
    throw fail("modules_to_save", `fully trained modules [${peft.modules_to_save.join(", ")}] are not representable`);
  }
  for (const field of ["rank_pattern", "alpha_pattern"] as const) {
    for (const key of Object.keys(peft[field] ?? {})) compilePattern(key, `${field}.${key}`, fail);
  }
  if (typeof peft.target_modules === "string" && peft.target_modules !== "all-linear") {
    compilePattern(peft.target_modules, "target_modules", fail, true);
  }
  return peft;
}

/** PEFT's own matching: a pattern key applies to a module when `(.*\.)?(key)$` matches its name. */
function compilePattern(pattern: string, field: string, fail: (f: string, d: string) => Error, full = false): RegExp {
  try {
    return full ? new RegExp(`^(?:${pattern})$`) : new RegExp(`^(?:.*\\.)?(?:${pattern})$`);
  } catch (error) {
    throw fail(field, `is not a valid regular expression (${(error as Error).message})`);
  }
}

/** Validates every tensor against the config, model and basis; returns (layer.module) → factors. */
function collectLoraPairs(peft: PeftConfig, tensors: Map<string, FloatTensor>, basis: Basis, config: ModelConfig): Map<string, LoraPair> {
  const fail = (name: string, detail: string) => new PeftImportError(`${PEFT_WEIGHTS_FILE}: tensor ${name}: ${detail}`);
  const configFail = (field: string, detail: string) => new PeftImportError(`${PEFT_CONFIG_FILE}: ${field}: ${detail}`);
  if (tensors.size === 0) throw new PeftImportError(`${PEFT_WEIGHTS_FILE}: has no LoRA tensors`);
  const pattern = /^base_model\.model\.model\.layers\.(0|[1-9]\d*)\.(?:self_attn|mlp)\.([a-z_]+)\.(lora_A|lora_B)\.weight$/;
  const factors = new Map<string, { a?: FloatTensor; b?: FloatTensor; layer: number; module: LinearModule }>();
  for (const [name, tensor] of tensors) {
    const match = pattern.exec(name);
    const module = match?.[2] as LinearModule;
    const layer = Number(match?.[1]);
    if (match === null || !LINEAR_MODULES.includes(module) || peftTensorName(layer, module, match[3] as "lora_A") !== name) {
      throw fail(name, "is not a lora_A/lora_B weight of a decoder linear layer (embeddings, lm_head and DoRA vectors cannot be imported)");
    }
    if (layer >= config.numLayers) throw fail(name, `layer ${layer} is beyond the model's ${config.numLayers} layers`);
    if (!basis.targetModules.includes(module)) {
      throw fail(name, `module ${module} is not in the basis target modules [${basis.targetModules.join(", ")}]`);
    }
    if (tensor.shape.length !== 2 || !(tensor.data instanceof Float32Array) || tensor.data.length !== tensor.shape[0] * tensor.shape[1]) {
      throw fail(name, `must be a 2-D float32 tensor, got shape [${tensor.shape.join(", ")}]`);
    }
    const bad = tensor.data.findIndex((v) => !Number.isFinite(v));
    if (bad >= 0) throw fail(name, `value ${tensor.data[bad]} at index ${bad} is not finite`);
    const entry = factors.get(`${layer}.${module}`) ?? { layer, module };
    if (match[3] === "lora_A") entry.a = tensor;
    else entry.b = tensor;
    factors.set(`${layer}.${module}`, entry);
  }

  const targeted = targetedBy(peft, config, configFail);
  const pairs = new Map<string, LoraPair>();
  for (const [key, { a, b, layer, module }] of factors) {
    if (a === undefined) throw fail(peftTensorName(layer, module, "lora_A"), `is missing (its lora_B is present)`);
    if (b === undefined) throw fail(peftTensorName(layer, module, "lora_B"), `is missing (its lora_A is present)`);
    if (!targeted.has(key)) {
      throw fail(peftTensorName(layer, module, "lora_A"), "is not targeted by adapter_config.json target_modules/layers_to_transform");
    }
    const moduleName = linearModuleName(layer, module);
    const r = patternValue(peft.rank_pattern, moduleName) ?? peft.r;
    const alpha = patternValue(peft.alpha_pattern, moduleName) ?? peft.lora_alpha;
    const [out, inDim] = linearShape(config, module);
    if (a.shape[0] !== r || a.shape[1] !== inDim) {
      throw fail(peftTensorName(layer, module, "lora_A"), `has shape [${a.shape.join(", ")}], expected [${r}, ${inDim}] (r, in)`);
    }
    if (b.shape[0] !== out || b.shape[1] !== r) {
      throw fail(peftTensorName(layer, module, "lora_B"), `has shape [${b.shape.join(", ")}], expected [${out}, ${r}] (out, r)`);
    }
    pairs.set(key, { a, b, scale: peft.use_rslora === true ? alpha / Math.sqrt(r) : alpha / r });
  }
  for (const [key, { layer, module }] of targeted) {
    if (!factors.has(key)) throw fail(peftTensorName(layer, module, "lora_A"), "is missing (adapter_config.json targets this module)");
  }
  return pairs;
}

/** The (layer.module) pairs the config's target_modules and layers_to_transform select. */
function targetedBy(
  peft: PeftConfig,
  config: ModelConfig,
  fail: (field: string, detail: string) => Error,
): Map<string, { layer: number; module: LinearModule }> {
  const target = peft.target_modules;
  // PEFT: a string is a regex that must match the whole module name; a list entry matches the
  // name or a dotted suffix of it; "all-linear" is every linear layer but the output head.
  const regex = typeof target === "string" && target !== "all-linear" ? compilePattern(target, "target_modules", fail, true) : null;
  const matches = (name: string): boolean =>
    target === "all-linear" ? true : regex !== null ? regex.test(name) : (target as string[]).some((t) => name === t || name.endsWith(`.${t}`));
  if (Array.isArray(target)) {
    // An entry that names no decoder linear layer targets something (lm_head, embeddings)
    // whose update a PiCa M cannot carry.
    for (const t of target) {
      if (!LINEAR_MODULES.some((module) => linearModuleName(0, module).endsWith(`.${t}`))) {
        throw fail("target_modules", `"${t}" is not a decoder linear module (${LINEAR_MODULES.join(", ")})`);
      }
    }
  }
  const layers = peft.layers_to_transform;
  const layerSet = layers == null ? null : new Set(Array.isArray(layers) ? layers : [layers]);
  const targeted = new Map<string, { layer: number; module: LinearModule }>();
  for (let layer = 0; layer < config.numLayers; layer++) {
    if (layerSet !== null && !layerSet.has(layer)) continue;
    for (const module of LINEAR_MODULES) {
      if (matches(linearModuleName(layer, module))) targeted.set(`${layer}.${module}`, { layer, module });
    }
  }
  return targeted;
}

/** The value of the first rank_pattern/alpha_pattern key that matches the module, as PEFT picks it. */
function patternValue<T>(patterns: Record<string, T> | null | undefined, moduleName: string): T | undefined {
  for (const [key, value] of Object.entries(patterns ?? {})) {
    if (new RegExp(`^(?:.*\\.)?(?:${key})$`).test(moduleName)) return value;
  }
  return undefined;
}

/** `model.layers.{l}.self_attn.q_proj`: the module's name in the transformers model. */
function linearModuleName(layer: number, module: LinearModule): string {
  return linearName(layer, module).replace(/\.weight$/, "");
}

/** P of one layer and module, [rMax, in], after checking the basis holds it with that shape. */
function projectionOf(basis: Basis, config: ModelConfig, layer: number, module: LinearModule): Float32Array {
  const p = basis.projections.get(projectionKey(layer, module));
  const inDim = linearShape(config, module)[1];
  if (p === undefined || p.shape[0] !== basis.rMax || p.shape[1] !== inDim) {
    const found = p === undefined ? "missing" : `shape [${p.shape.join(", ")}]`;
    throw new Error(`basis ${basis.id}: projection ${projectionKey(layer, module)} is ${found}, expected [${basis.rMax}, ${inDim}]`);
  }
  return p.data;
}
