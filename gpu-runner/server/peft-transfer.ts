/**
 * The runner's PEFT interop routes (see PEFT_PATHS in src/protocol/runner.ts): import projects a
 * PEFT LoRA adapter onto this runner's basis and answers the PiCa adapter with its projection
 * report; export turns a PiCa adapter back into PEFT files. Both are pure conversions: nothing is
 * registered or stored here (the control plane stores the result and registers it as usual).
 */
import { createHash } from "node:crypto";
import type { Context } from "hono";
import { badRequest, fromZodError } from "../../src/errors.ts";
import { CONTENT_SHA256_HEADER, PEFT_IMPORT_REPORT_HEADER, PEFT_PARTS, peftImportOptionsSchema, type PeftImportReport } from "../../src/protocol/runner.ts";
import { parseSafetensors, serializeSafetensors, SafetensorsError } from "../checkpoint/safetensors.ts";
import { rankCeiling, rankRefusal } from "../../src/protocol/adapter-rank.ts";
import type { ModelConfig } from "../model/config.ts";
import { linearShapes } from "../model/weights.ts";
import { AdapterFormatError, AdapterMismatchError, parseAdapter, serializeAdapter } from "../pica/adapter-format.ts";
import { exportPeft, importPeft, PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE, PeftImportError } from "../pica/peft.ts";
import type { Basis } from "../pica/types.ts";
import type { FloatTensor } from "../tensor.ts";

export interface PeftTransferOptions {
  basis: Basis;
  config: ModelConfig;
  /** Written into an export's adapter_config.json as base_model_name_or_path. */
  baseModelName: string;
  /** The PiCa rank of an import that names none (the runner's `--rank`), within the ceiling. */
  defaultRank: number;
}

/** `POST /internal/adapters/import-peft`: multipart PEFT files → PiCa adapter bytes + report header. */
export async function importPeftRoute(c: Context, options: PeftTransferOptions): Promise<Response> {
  const form = await formOf(c);
  const configText = await partText(form, PEFT_PARTS.config);
  const modelBytes = await partBytes(form, PEFT_PARTS.model);
  const parsedOptions = peftImportOptionsSchema.safeParse({ rank: form.get("rank") ?? undefined, sharing: form.get("sharing") ?? undefined });
  if (!parsedOptions.success) throw fromZodError(parsedOptions.error);
  // The import adapts every module of the basis: the same rule a fine-tuning job's rank meets.
  const limits = { linearShapes: linearShapes(options.config), basisRows: options.basis.rMax };
  const ceiling = rankCeiling(limits, options.basis.targetModules);
  const rank = parsedOptions.data.rank ?? Math.min(options.defaultRank, ceiling.rank);
  const refusal = rankRefusal(rank, ceiling, options.baseModelName);
  if (refusal !== null) throw badRequest(`Invalid value for 'rank': ${refusal}.`, "rank", "invalid_value");

  let adapterConfig: unknown;
  try {
    adapterConfig = JSON.parse(configText);
  } catch (error) {
    throw badRequest(`${PEFT_CONFIG_FILE} is not JSON (${(error as Error).message}).`, PEFT_PARTS.config);
  }
  const tensors = peftTensors(modelBytes);
  let imported: ReturnType<typeof importPeft>;
  try {
    imported = importPeft(adapterConfig, tensors, options.basis, options.config, { sharing: parsedOptions.data.sharing, rank });
  } catch (error) {
    if (error instanceof PeftImportError) throw badRequest(error.message, null, "peft_not_importable");
    throw error;
  }
  const bytes = serializeAdapter(imported.adapter);
  const provenance = imported.adapter.provenance;
  const report: PeftImportReport = {
    rank,
    sharing: imported.adapter.sharing,
    basis_id: options.basis.id,
    lora_r: typeof provenance.lora_r === "number" ? provenance.lora_r : null,
    lora_alpha: typeof provenance.lora_alpha === "number" ? provenance.lora_alpha : null,
    base_model_name_or_path: typeof provenance.base_model_name_or_path === "string" ? provenance.base_model_name_or_path : null,
    projection_error: imported.projectionError,
    max_projection_error: Math.max(0, ...Object.values(imported.projectionError)),
  };
  return c.body(new Uint8Array(bytes), 200, {
    "content-type": "application/octet-stream",
    [CONTENT_SHA256_HEADER]: createHash("sha256").update(bytes).digest("hex"),
    [PEFT_IMPORT_REPORT_HEADER]: JSON.stringify(report),
  });
}

/** `POST /internal/adapters/export-peft`: PiCa adapter bytes → multipart adapter_config + adapter_model. */
export async function exportPeftRoute(c: Context, options: PeftTransferOptions): Promise<Response> {
  const bytes = new Uint8Array(await c.req.arrayBuffer());
  if (bytes.length === 0) throw badRequest("The body must be a PiCa adapter's safetensors file.", "body");
  let peft: ReturnType<typeof exportPeft>;
  try {
    peft = exportPeft(parseAdapter(bytes, "body"), options.basis, options.config, { baseModelName: options.baseModelName });
  } catch (error) {
    if (error instanceof AdapterFormatError || error instanceof SafetensorsError) throw badRequest(error.message, "body", "adapter_invalid");
    if (error instanceof AdapterMismatchError) throw badRequest(error.message, "body", "adapter_basis_mismatch");
    throw error;
  }
  const form = new FormData();
  form.append(PEFT_PARTS.config, new Blob([`${JSON.stringify(peft.adapterConfig, null, 2)}\n`], { type: "application/json" }), PEFT_CONFIG_FILE);
  // PEFT and transformers write (and some loaders expect) format "pt" in the metadata.
  form.append(
    PEFT_PARTS.model,
    new Blob([new Uint8Array(serializeSafetensors(peft.tensors, { format: "pt" }))], { type: "application/octet-stream" }),
    PEFT_WEIGHTS_FILE,
  );
  return new Response(form, { status: 200 });
}

async function formOf(c: Context): Promise<FormData> {
  try {
    return await c.req.raw.formData();
  } catch {
    throw badRequest(`The body must be multipart/form-data with the parts ${PEFT_PARTS.config} and ${PEFT_PARTS.model}.`, null, "invalid_multipart");
  }
}

async function partText(form: FormData, name: string): Promise<string> {
  const part = form.get(name);
  if (part === null) throw badRequest(`Missing required part: '${name}'.`, name, "missing_required_parameter");
  return typeof part === "string" ? part : part.text();
}

async function partBytes(form: FormData, name: string): Promise<Uint8Array> {
  const part = form.get(name);
  if (part === null || typeof part === "string")
    throw badRequest(`Missing required file part: '${name}' (${PEFT_WEIGHTS_FILE}).`, name, "missing_required_parameter");
  return new Uint8Array(await part.arrayBuffer());
}

// PEFT's weights as float32 tensors; a file that is not safetensors, or holds integers, is a 400.
function peftTensors(bytes: Uint8Array): Map<string, FloatTensor> {
  let file: ReturnType<typeof parseSafetensors>;
  try {
    file = parseSafetensors(bytes, PEFT_WEIGHTS_FILE);
  } catch (error) {
    if (error instanceof SafetensorsError) throw badRequest(error.message, PEFT_PARTS.model, "invalid_safetensors");
    throw error;
  }
  const tensors = new Map<string, FloatTensor>();
  for (const [name, stored] of file.tensors) {
    if (!(stored.data instanceof Float32Array))
      throw badRequest(`${PEFT_WEIGHTS_FILE}: tensor ${name} has dtype ${stored.dtype}, not a float dtype.`, PEFT_PARTS.model);
    tensors.set(name, { shape: stored.shape, data: stored.data });
  }
  return tensors;
}
