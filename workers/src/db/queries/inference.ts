/**
 * What an inference request needs before it can be admitted and routed: the tenant's limits, the
 * adapter it names (only if the tenant owns it) and the runner rows, read in one D1 round trip
 * because they sit on the path to the first token.
 */
import { and, eq, ne } from "drizzle-orm";
import type { Database } from "../client.ts";
import { adapters, runners, tenants } from "../schema.ts";

export interface InferenceLookups {
  tenant: typeof tenants.$inferSelect | null;
  adapter: typeof adapters.$inferSelect | null; // null also when `adapterId` was null
  runnerRows: (typeof runners.$inferSelect)[];
}

/** Reads the tenant, its adapter `adapterId` (null: the base model) and every runner row at once. */
export async function inferenceLookups(db: Database, args: { tenantId: string; adapterId: string | null }): Promise<InferenceLookups> {
  const tenantQuery = db.select().from(tenants).where(eq(tenants.id, args.tenantId));
  const runnerQuery = db.select().from(runners);
  if (args.adapterId === null) {
    const [tenantRows, runnerRows] = await db.batch([tenantQuery, runnerQuery]);
    return { tenant: tenantRows[0] ?? null, adapter: null, runnerRows };
  }
  const adapterQuery = db
    .select()
    .from(adapters)
    .where(and(eq(adapters.id, args.adapterId), eq(adapters.tenantId, args.tenantId), ne(adapters.status, "deleted")));
  const [tenantRows, runnerRows, adapterRows] = await db.batch([tenantQuery, runnerQuery, adapterQuery]);
  return { tenant: tenantRows[0] ?? null, adapter: adapterRows[0] ?? null, runnerRows };
}
