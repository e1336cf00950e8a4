/**
 * `GET /v1/usage`: the tenant's token usage over a window (`start_time`, `end_time`, Unix
 * seconds; default the last 30 days): totals, per model, and per UTC day buckets with a result
 * per model, shaped after OpenAI's usage API.
 */
import { Hono } from "hono";
import { z } from "zod";
import { badRequest } from "../../../src/errors.ts";
import { requireKey } from "../auth/middleware.ts";
import { database } from "../db/client.ts";
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
const querySchema = z.object({ start_time: unixSeconds.optional(), end_time: unixSeconds.optional() });

export const usageRoutes = new Hono<AppEnv>();
usageRoutes.use(requireKey("inference"));

usageRoutes.get("/", async (c) => {
  const query = parse(querySchema, c.req.query());
  const endTime = query.end_time ?? Math.floor(Date.now() / 1000) + 1;
  const startTime = query.start_time ?? Math.max(0, endTime - DEFAULT_WINDOW_SECONDS);
  if (startTime >= endTime) throw badRequest(`Invalid value for 'start_time': must be before end_time (${endTime}), got ${startTime}.`, "start_time");
  const report = await usageReport(database(c.env.DB), c.get("caller").tenantId, { startTime, endTime });

  const buckets = new Map<number, { object: "bucket"; start_time: number; end_time: number; results: ReturnType<typeof result>[] }>();
  for (const row of report.byDay) {
    const bucket = buckets.get(row.day) ?? { object: "bucket" as const, start_time: row.day, end_time: row.day + SECONDS_PER_DAY, results: [] };
    bucket.results.push(result(row, row.model));
    buckets.set(row.day, bucket);
  }
  return c.json({
    object: "usage",
    start_time: startTime,
    end_time: endTime,
    totals: result(report.totals, null),
    models: report.byModel.map((row) => result(row, row.model)),
    data: [...buckets.values()],
  });
});

function result(totals: UsageTotals, model: string | null) {
  return {
    ...(model === null ? {} : { model }),
    num_model_requests: totals.requests,
    input_tokens: totals.promptTokens,
    output_tokens: totals.completionTokens,
    total_tokens: totals.promptTokens + totals.completionTokens,
  };
}
