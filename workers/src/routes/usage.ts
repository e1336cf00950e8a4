/**
 * `GET /v1/usage`: the tenant's token usage over a window (`start_time`, `end_time`, Unix
 * seconds; default the last 30 days): totals, per model, and per UTC day buckets with a result
 * per model, shaped after OpenAI's usage API, paged as it pages buckets: `limit` days with usage
 * per response, `has_more`, and `next_page` to send back as `page`. Totals and per-model sums
 * always cover the whole window.
 */
import { Hono } from "hono";
import { z } from "zod";
import { badRequest } from "../../../src/errors.ts";
import { requireKey } from "../auth/middleware.ts";
import { database } from "../db/client.ts";
import type { UsageReport } from "../../../src/protocol/platform-objects.ts";
import { usageReport, type UsageTotals } from "../db/queries/usage.ts";
import type { AppEnv } from "../env.ts";
import { parse } from "./parse.ts";

const DEFAULT_WINDOW_SECONDS = 30 * 86_400;
const SECONDS_PER_DAY = 86_400;

const unixSeconds = z.coerce
  .number()
  .int()
  .min(0)
  .max(2 ** 40);
/** Day buckets per response when `limit` is not given (the default window's days), and the most. */
export const USAGE_BUCKETS = { fallback: 31, max: 366 };

export const usageQuerySchema = z.object({
  start_time: unixSeconds.optional(),
  end_time: unixSeconds.optional(),
  limit: z.coerce.number().int().min(1).max(USAGE_BUCKETS.max).default(USAGE_BUCKETS.fallback),
  page: z.string().max(20).optional().describe("`next_page` of the previous response"),
});

export const usageRoutes = new Hono<AppEnv>();
usageRoutes.use(requireKey("inference"));

usageRoutes.get("/", async (c) => {
  const query = parse(usageQuerySchema, c.req.query());
  const endTime = query.end_time ?? Math.floor(Date.now() / 1000) + 1;
  const startTime = query.start_time ?? Math.max(0, endTime - DEFAULT_WINDOW_SECONDS);
  if (startTime >= endTime) throw badRequest(`Invalid value for 'start_time': must be before end_time (${endTime}), got ${startTime}.`, "start_time");
  const firstDay = Math.floor(startTime / SECONDS_PER_DAY) * SECONDS_PER_DAY;
  const fromDay = query.page === undefined ? firstDay : pageDay(query.page, firstDay, endTime);
  const report = await usageReport(database(c.env.DB), c.get("caller").tenantId, { startTime, endTime }, { fromDay, limit: query.limit });

  const buckets = new Map<number, UsageReport["data"][number]>();
  for (const row of report.byDay) {
    const bucket = buckets.get(row.day) ?? { object: "bucket" as const, start_time: row.day, end_time: row.day + SECONDS_PER_DAY, results: [] };
    bucket.results.push(result(row, row.model));
    buckets.set(row.day, bucket);
  }
  const days = [...buckets.values()];
  const next = days[query.limit]; // the report reads one day past the page
  return c.json({
    object: "usage",
    start_time: startTime,
    end_time: endTime,
    totals: result(report.totals),
    models: report.byModel.map((row) => result(row, row.model)),
    data: days.slice(0, query.limit),
    has_more: next !== undefined,
    next_page: next === undefined ? null : String(next.start_time),
  } satisfies UsageReport);
});

// A page cursor is the first day (00:00 UTC, Unix seconds) of the page, inside the window.
function pageDay(page: string, firstDay: number, endTime: number): number {
  const day = /^\d{1,15}$/.test(page) ? Number(page) : Number.NaN;
  if (!(day % SECONDS_PER_DAY === 0 && day >= firstDay && day < endTime)) {
    throw badRequest(
      `Invalid value for 'page': ${JSON.stringify(page)} is not a page of this window; send the next_page of the previous response.`,
      "page",
      "invalid_cursor",
    );
  }
  return day;
}

function result(totals: UsageTotals): UsageReport["totals"];
function result(totals: UsageTotals, model: string): UsageReport["models"][number];
function result(totals: UsageTotals, model?: string) {
  return {
    ...(model === undefined ? {} : { model }),
    num_model_requests: totals.requests,
    input_tokens: totals.promptTokens,
    output_tokens: totals.completionTokens,
    total_tokens: totals.promptTokens + totals.completionTokens,
  };
}
