/**
 * Adapters: a tenant's trained (or checkpointed, or imported) PiCa adapters. Rows are only ever
 * read through the owning tenant; the runner's blob route reads by id alone (runner secret).
 */
import { and, desc, eq, lt, ne, or } from "drizzle-orm";
import type { Database } from "../client.ts";
import { adapters } from "../schema.ts";

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

/** The tenant's live adapters, newest first. */
export async function listTenantAdapters(db: Database, tenantId: string, page: { limit: number; after: AdapterRow | null }): Promise<AdapterRow[]> {
  const conditions = [eq(adapters.tenantId, tenantId), ne(adapters.status, "deleted")];
  if (page.after !== null) {
    const { createdAt, id } = page.after;
    conditions.push(or(lt(adapters.createdAt, createdAt), and(eq(adapters.createdAt, createdAt), lt(adapters.id, id)))!);
  }
  return db
    .select()
    .from(adapters)
    .where(and(...conditions))
    .orderBy(desc(adapters.createdAt), desc(adapters.id))
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

/** Deletes the tenant's adapter row; returns it (for its blob key), or null when there is none. */
export async function deleteTenantAdapter(db: Database, tenantId: string, id: string): Promise<AdapterRow | null> {
  const [row] = await db
    .delete(adapters)
    .where(and(eq(adapters.id, id), eq(adapters.tenantId, tenantId)))
    .returning();
  return row ?? null;
}
