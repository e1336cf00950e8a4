/**
 * Per-isolate copies of what every inference request reads but what rarely changes: a tenant's
 * limits and the runner rows. Each is a D1 round trip on the way to the first token (far from
 * the database, tens of milliseconds), so an isolate keeps them for a few seconds. Heartbeats and
 * recorded failures seen by this isolate drop the runner rows at once; elsewhere they age out.
 * Adapter ownership is never cached: a deleted adapter must stop answering at once.
 */
import type { runners } from "../db/schema.ts";
import type { TenantLimits } from "../limits/tenant-limiter.ts";

/** How long a tenant's limits are reused (an operator's change takes at most this long). */
export const TENANT_LIMITS_TTL_MS = 10_000;
/** How long runner rows are reused; well under the heartbeat interval. */
export const RUNNER_ROWS_TTL_MS = 2_000;
const MAX_TENANTS = 10_000;

type RunnerRow = typeof runners.$inferSelect;

const tenantLimits = new Map<string, { limits: TenantLimits; expires: number }>();
let runnerRows: { rows: RunnerRow[]; expires: number } | null = null;

/** The tenant's cached limits, or null when absent or expired. */
export function cachedTenantLimits(tenantId: string): TenantLimits | null {
  const entry = tenantLimits.get(tenantId);
  if (entry === undefined || entry.expires <= Date.now()) return null;
  return entry.limits;
}

/** Keeps a tenant's limits for TENANT_LIMITS_TTL_MS. */
export function cacheTenantLimits(tenantId: string, limits: TenantLimits): void {
  if (tenantLimits.size >= MAX_TENANTS) tenantLimits.clear(); // crude bound; a refill is one query each
  tenantLimits.set(tenantId, { limits, expires: Date.now() + TENANT_LIMITS_TTL_MS });
}

/** The cached runner rows, or null when absent or expired. */
export function cachedRunnerRows(): RunnerRow[] | null {
  return runnerRows !== null && runnerRows.expires > Date.now() ? runnerRows.rows : null;
}

/** Keeps the runner rows for RUNNER_ROWS_TTL_MS. */
export function cacheRunnerRows(rows: RunnerRow[]): void {
  runnerRows = { rows, expires: Date.now() + RUNNER_ROWS_TTL_MS };
}

/** Drops the runner rows, after a heartbeat or a recorded failure changed them. */
export function forgetRunnerRows(): void {
  runnerRows = null;
}

/** Drops a tenant's limits, after an operator changed them. */
export function forgetTenantLimits(tenantId: string): void {
  tenantLimits.delete(tenantId);
}
