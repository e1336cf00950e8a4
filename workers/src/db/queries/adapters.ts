/**
 * Adapters: a tenant's trained (or checkpointed, or imported) PiCa adapters. Rows are only ever
 * read through the owning tenant; the runner's blob route reads by id alone (runner secret).
 * A row with status `deleted` is retired: nothing reads it but the sweep that removes its blob.
 */
import { and, eq, ne, type SQL } from "drizzle-orm";
import type { Database } from "../client.ts";
import { adapters, checkpoints } from "../schema.ts";
import { keysetPage } from "./keyset-page.ts";

export type AdapterRow = typeof adapters.$inferSelect;

/** The tenant's adapter with this id (not deleted), or null: the ownership check for inference. */
export async function findTenantAdapter(db: Database, tenantId: string, id: string): Promise<AdapterRow | null> {
  const row = await db
    .select()
    .from(adapters)
    .where(and(eq(adapters.id, id), eq(adapters.tenantId, tenantId), ne(adapters.status, "deleted")))
    .get();
  return row ?? null;
}

/**
 * What a list holds: every live adapter, or only the models (`GET /v1/models`: ready adapters
 * that are not checkpoints; those are listed under their job).
 */
export type AdapterList = "adapters" | "models";

function listConditions(tenantId: string, list: AdapterList): SQL[] {
  const conditions = [eq(adapters.tenantId, tenantId), ne(adapters.status, "deleted")];
  if (list === "models") conditions.push(eq(adapters.status, "ready"), ne(adapters.source, "checkpoint"));
  return conditions;
}

/** The tenant's adapter with this id if the list `list` holds it, or null: a list's cursor. */
export async function findListedAdapter(db: Database, tenantId: string, id: string, list: AdapterList): Promise<AdapterRow | null> {
  const row = await db
    .select()
    .from(adapters)
    .where(and(eq(adapters.id, id), ...listConditions(tenantId, list)))
    .get();
  return row ?? null;
}

/** One page of the tenant's adapters (all, or only models), newest first, after the row `after`. */
export async function listTenantAdapters(
  db: Database,
  tenantId: string,
  page: { limit: number; after: AdapterRow | null },
  list: AdapterList = "adapters",
): Promise<AdapterRow[]> {
  const keyset = keysetPage(adapters, "newest first", page.after);
  return db
    .select()
    .from(adapters)
    .where(and(...listConditions(tenantId, list), keyset.condition))
    .orderBy(...keyset.orderBy)
    .limit(page.limit)
    .all();
}

/** An adapter by id alone: only for the runner's blob download (runner secret). */
export async function findAdapterForRunner(db: Database, id: string): Promise<AdapterRow | null> {
  return (
    (await db
      .select()
      .from(adapters)
      .where(and(eq(adapters.id, id), ne(adapters.status, "deleted")))
      .get()) ?? null
  );
}

/**
 * Deletes the tenant's adapter row, and the checkpoint row that lists it when it is a checkpoint,
 * in one batch; returns the adapter (for its blob key), or null when there is none.
 */
export async function deleteTenantAdapter(db: Database, tenantId: string, id: string): Promise<AdapterRow | null> {
  const [[row]] = await db.batch([
    db
      .delete(adapters)
      .where(and(eq(adapters.id, id), eq(adapters.tenantId, tenantId), ne(adapters.status, "deleted")))
      .returning(),
    db.delete(checkpoints).where(and(eq(checkpoints.adapterId, id), eq(checkpoints.tenantId, tenantId))),
  ]);
  return row ?? null;
}
