/**
 * Moving adapters in and out in PEFT's LoRA format, beside the adapter routes in adapters.ts
 * (mounted at the same /v1/adapters, on paths of their own):
 *
 *   POST /v1/adapters/import       multipart: adapter_config, adapter_model, name, [rank], [sharing]
 *                                  → 201 the new adapter, with the projection report
 *   GET  /v1/adapters/{id}/export  → multipart/form-data: adapter_config (adapter_config.json) and
 *                                  adapter_model (adapter_model.safetensors), the parts the import
 *                                  takes, so an export re-imports as is
 *
 * A runner does the conversion (runners/peft-conversion.ts); the imported adapter is stored like
 * a trained one (R2 blob with its sha256, an adapters row) and is usable at once.
 */
import { Hono } from "hono";
import { z } from "zod";
import { badRequest, notFound, serverError } from "../../../src/errors.ts";
import { peftImportOptionsSchema, peftImportReportSchema } from "../../../src/protocol/runner.ts";
import { randomId } from "../auth/keys.ts";
import { requireKey } from "../auth/middleware.ts";
import { database } from "../db/client.ts";
import { insertImportedAdapter } from "../db/queries/adapter-imports.ts";
import { findTenantAdapter } from "../db/queries/adapters.ts";
import type { AppEnv } from "../env.ts";
import { exportPeftOnRunner, importPeftOnRunner } from "../runners/peft-conversion.ts";
import { importedAdapterBlobKey } from "../storage/blob-keys.ts";
import { blobThenRows } from "../storage/storage-errors.ts";
import { parse } from "./parse.ts";

/** The import's multipart form; the two files are PEFT's adapter_config.json and adapter_model.safetensors. */
export const adapterImportRequestSchema = z
  .object({
    adapter_config: z.union([z.file(), z.string()]).describe("PEFT's adapter_config.json"),
    adapter_model: z.file().describe("PEFT's adapter_model.safetensors"),
    name: z
      .string()
      .regex(/^[A-Za-z0-9_-]{1,40}$/, "must be 1-40 characters of A-Z a-z 0-9 _ -")
      .describe("becomes part of the adapter id"),
  })
  .extend(peftImportOptionsSchema.shape)
  .strict();

/** An imported adapter as the import answers it. */
export const importedAdapterSchema = z.object({
  id: z.string().describe("peft:{base}:{tenant}:{name}:{import id}; use it as `model`"),
  object: z.literal("adapter"),
  base_model: z.string(),
  basis_id: z.string(),
  rank: z.int(),
  sharing: z.enum(["shared", "per_layer"]),
  status: z.literal("ready"),
  source: z.literal("peft_import"),
  bytes: z.int(),
  sha256: z.string(),
  created_at: z.int(),
  import_report: peftImportReportSchema,
});

export const adapterTransferRoutes = new Hono<AppEnv>();

adapterTransferRoutes.post("/import", requireKey("fine_tuning"), async (c) => {
  let form: FormData;
  try {
    form = await c.req.raw.formData();
  } catch {
    throw badRequest("The body must be multipart/form-data with the parts adapter_config, adapter_model and name.", null, "invalid_multipart");
  }
  const body = parse(adapterImportRequestSchema, Object.fromEntries(form.entries()));
  const tenantId = c.get("caller").tenantId;
  const db = database(c.env.DB);
  // zod types z.file() with its own File declaration; at run time these are the request's Blobs.
  const config =
    typeof body.adapter_config === "string" ? new Blob([body.adapter_config], { type: "application/json" }) : (body.adapter_config as unknown as Blob);
  const model = body.adapter_model as unknown as Blob;
  const converted = await importPeftOnRunner(c.env, db, { adapterConfig: config, adapterModel: model, rank: body.rank, sharing: body.sharing });

  const importId = randomId("imp");
  // Keyed by our own id under the tenant (blob keys never carry a tenant-chosen name).
  const blobKey = importedAdapterBlobKey(tenantId, importId);
  const row = await blobThenRows(
    c.env,
    c.executionCtx,
    { key: blobKey, bytes: converted.bytes, options: { sha256: converted.sha256, httpMetadata: { contentType: "application/octet-stream" } } },
    () =>
      insertImportedAdapter(db, {
        id: `peft:${c.env.BASE_MODEL}:${tenantId}:${body.name}:${importId}`,
        tenantId,
        baseModel: c.env.BASE_MODEL,
        basisId: converted.report.basis_id,
        rank: converted.report.rank,
        sharing: converted.report.sharing,
        blobKey,
        sha256: converted.sha256,
        bytes: converted.bytes.length,
        importReport: converted.report,
      }),
  );
  const answer: z.input<typeof importedAdapterSchema> = {
    id: row.id,
    object: "adapter",
    base_model: row.baseModel,
    basis_id: converted.report.basis_id,
    rank: converted.report.rank,
    sharing: converted.report.sharing,
    status: "ready",
    source: "peft_import",
    bytes: row.bytes,
    sha256: row.sha256,
    created_at: row.createdAt,
    import_report: converted.report,
  };
  return c.json(answer, 201);
});

adapterTransferRoutes.get("/:adapter/export", requireKey("fine_tuning"), async (c) => {
  const id = c.req.param("adapter");
  const db = database(c.env.DB);
  const adapter = await findTenantAdapter(db, c.get("caller").tenantId, id);
  if (adapter === null) throw notFound(`The adapter ${JSON.stringify(id)} does not exist or you do not have access to it.`, "adapter_id", "adapter_not_found");
  const blob = await c.env.BLOBS.get(adapter.blobKey);
  if (blob === null) {
    console.error(`adapter ${adapter.id}: blob ${adapter.blobKey} is missing from R2`);
    throw serverError("The adapter's file is not available.", "adapter_blob_missing");
  }
  const files = await exportPeftOnRunner(c.env, db, { bytes: new Uint8Array(await blob.arrayBuffer()), basisId: adapter.basisId });
  return new Response(files.body, {
    status: 200,
    headers: { "content-type": files.headers.get("content-type") ?? "multipart/form-data" },
  });
});
