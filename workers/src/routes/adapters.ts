/**
 * `/v1/adapters`: the tenant's adapters (fine-tuned models, imports and the checkpoints a job
 * keeps): list in cursor pages and retrieve (inference key: they are models to use), delete
 * (fine-tuning key). Ids contain ':' (`ft:{base}:{tenant}:{suffix}:{job}`),
 * which a path segment carries as is; clients may also percent-encode them.
 */
import { Hono } from "hono";
import type { z } from "zod";
import { notFound } from "../../../src/errors.ts";
import type { ListPage } from "../../../src/protocol/list-page.ts";
import type { AdapterObject, adapterDeletedSchema } from "../../../src/protocol/platform-objects.ts";
import { requireKey } from "../auth/middleware.ts";
import { database } from "../db/client.ts";
import { deleteTenantAdapter, findListedAdapter, findTenantAdapter, listTenantAdapters, type AdapterRow } from "../db/queries/adapters.ts";
import type { AppEnv } from "../env.ts";
import { cursorRow, listPage, listQuerySchema } from "./list-page.ts";
import { parse } from "./parse.ts";

/** The query of `GET /v1/adapters`. */
export const adaptersQuerySchema = listQuerySchema("adapters");

export const adapterRoutes = new Hono<AppEnv>();

adapterRoutes.get("/", requireKey("inference"), async (c) => {
  const query = parse(adaptersQuerySchema, c.req.query());
  const db = database(c.env.DB);
  const tenantId = c.get("caller").tenantId;
  const after = await cursorRow(query.after, "adapter", (id) => findListedAdapter(db, tenantId, id, "adapters"));
  const rows = await listTenantAdapters(db, tenantId, { limit: query.limit + 1, after });
  return c.json(listPage(rows.map(publicAdapter), query.limit) satisfies ListPage<AdapterObject>);
});

adapterRoutes.get("/:id", requireKey("inference"), async (c) => {
  const row = await findTenantAdapter(database(c.env.DB), c.get("caller").tenantId, c.req.param("id"));
  if (row === null) throw adapterNotFound(c.req.param("id"));
  return c.json(publicAdapter(row));
});

adapterRoutes.delete("/:id", requireKey("fine_tuning"), async (c) => {
  const row = await deleteTenantAdapter(database(c.env.DB), c.get("caller").tenantId, c.req.param("id"));
  if (row === null) throw adapterNotFound(c.req.param("id"));
  // Row first: from then on no request can resolve the adapter, so a failed blob delete hides nothing.
  await c.env.BLOBS.delete(row.blobKey);
  return c.json({ id: row.id, object: "adapter", deleted: true } satisfies z.infer<typeof adapterDeletedSchema>);
});

function adapterNotFound(id: string) {
  return notFound(`The adapter ${JSON.stringify(id)} does not exist.`, "adapter_id", "adapter_not_found");
}

/** An adapter as the API shows it (never its blob key). */
export function publicAdapter(row: AdapterRow): AdapterObject {
  return {
    id: row.id,
    object: "adapter" as const,
    created_at: row.createdAt,
    base_model: row.baseModel,
    basis_id: row.basisId,
    rank: row.rank,
    weight_sharing: row.sharing === null ? null : row.sharing === "shared",
    status: row.status,
    bytes: row.bytes,
    sha256: row.sha256,
    source: row.source as AdapterObject["source"],
    fine_tuning_job_id: row.sourceJobId,
    import_report: row.importReport,
  };
}
