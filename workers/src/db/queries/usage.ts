/**
 * Token usage per request, always read and written for one tenant: what a request used is
 * recorded after its response ends, and reports sum it by model and by UTC day.
 */
import { and, eq, gte, inArray, lt, sql } from "drizzle-orm";
import type { Database } from "../client.ts";
import { usage } from "../schema.ts";

export interface UsageRecord {
  tenantId: string;
  model: string;
  requestId: string;
  promptTokens: number;
  completionTokens: number;
  createdAt?: number; // Unix seconds; default now (a record retried later keeps its request's time)
}

/** Records the tokens one request used. */
export async function recordUsage(db: Database, record: UsageRecord) {
  await db.insert(usage).values(record);
}

export interface UsageWindow {
  startTime: number; // Unix seconds, inclusive
  endTime: number; // Unix seconds, exclusive
}

export interface UsageTotals {
  requests: number;
  promptTokens: number;
  completionTokens: number;
}

export interface UsageReport {
  totals: UsageTotals;
  byModel: (UsageTotals & { model: string })[];
  byDay: (UsageTotals & { day: number; model: string })[]; // day: Unix seconds of 00:00 UTC
}

/** Which days `byDay` covers: the first `limit + 1` days with usage from `fromDay` on. */
export interface DayPage {
  fromDay: number; // Unix seconds of 00:00 UTC
  limit: number;
}

const SECONDS_PER_DAY = 86_400;

/**
 * The tenant's usage in a window: totals and per model over all of it, and per UTC day and model
 * over the page's days (one more day than the page holds, so the caller knows whether more follow).
 */
export async function usageReport(db: Database, tenantId: string, window: UsageWindow, page: DayPage): Promise<UsageReport> {
  const where = and(eq(usage.tenantId, tenantId), gte(usage.createdAt, window.startTime), lt(usage.createdAt, window.endTime));
  const sums = {
    requests: sql<number>`count(*)`.mapWith(Number),
    promptTokens: sql<number>`coalesce(sum(${usage.promptTokens}), 0)`.mapWith(Number),
    completionTokens: sql<number>`coalesce(sum(${usage.completionTokens}), 0)`.mapWith(Number),
  };
  // Inlined, not bound: D1 binds JS numbers as REAL, which would turn this into float division.
  const daySeconds = sql.raw(String(SECONDS_PER_DAY));
  const day = sql<number>`(${usage.createdAt} / ${daySeconds}) * ${daySeconds}`.mapWith(Number);
  const pageWhere = and(where, gte(usage.createdAt, page.fromDay));
  const pageDays = db
    .selectDistinct({ day })
    .from(usage)
    .where(pageWhere)
    .orderBy(day)
    .limit(page.limit + 1);
  const [totals, byModel, byDay] = await db.batch([
    db.select(sums).from(usage).where(where),
    db
      .select({ model: usage.model, ...sums })
      .from(usage)
      .where(where)
      .groupBy(usage.model)
      .orderBy(usage.model),
    db
      .select({ day, model: usage.model, ...sums })
      .from(usage)
      .where(and(pageWhere, inArray(day, pageDays)))
      .groupBy(day, usage.model)
      .orderBy(day, usage.model),
  ]);
  return { totals: totals[0] ?? { requests: 0, promptTokens: 0, completionTokens: 0 }, byModel, byDay };
}
