/**
 * What an inference request needs before it can be admitted and routed: the tenant's limits, the
 * adapter it names (only if the tenant owns it) and the runner rows. Whatever of these is asked
 * for is read in one D1 round trip, because it sits on the path to the first token.
 */
import { and, eq, ne } from "drizzle-orm";
import type { Database } from "../client.ts";
import { adapters, runners, tenants } from "../schema.ts";

export interface InferenceLookupRequest {
  tenantId: string;
  adapterId: string | null; // null: the base model, nothing to look up
  tenant: boolean; // read the tenant row
  runners: boolean; // read the runner rows
}

export interface InferenceLookups {
  tenant: typeof tenants.$inferSelect | null; // null when not found or not asked for
  adapter: typeof adapters.$inferSelect | null; // the tenant's own, live adapter; null otherwise
  runnerRows: (typeof runners.$inferSelect)[] | null; // null when not asked for
}

/** Reads what `request` asks for in a single batch (nothing at all when nothing is asked). */
export async function inferenceLookups(db: Database, request: InferenceLookupRequest): Promise<InferenceLookups> {
  const queries = {
    tenant: request.tenant ? db.select().from(tenants).where(eq(tenants.id, request.tenantId)) : null,
    runners: request.runners ? db.select().from(runners) : null,
    adapter:
      request.adapterId === null
        ? null
        : db
            .select()
            .from(adapters)
            .where(and(eq(adapters.id, request.adapterId), eq(adapters.tenantId, request.tenantId), ne(adapters.status, "deleted"))),
  };
  const asked = Object.entries(queries).filter(([, query]) => query !== null) as [keyof typeof queries, NonNullable<(typeof queries)[keyof typeof queries]>][];
  const found: Record<string, unknown[]> = {};
  if (asked.length > 0) {
    const results = (await db.batch(asked.map(([, query]) => query) as [(typeof asked)[number][1]])) as unknown[][];
    asked.forEach(([name], i) => (found[name] = results[i]));
  }
  return {
    tenant: (found.tenant?.[0] as InferenceLookups["tenant"] | undefined) ?? null,
    adapter: (found.adapter?.[0] as InferenceLookups["adapter"] | undefined) ?? null,
    runnerRows: (found.runners as InferenceLookups["runnerRows"] | undefined) ?? null,
  };
}
