/**
 * Every list of the public API pages the same way (OpenAI's cursors): walking it with any page
 * size yields each item exactly once, in the order of one big page; every page matches the
 * protocol's schema; a bad `limit` or `after` is a 400 naming it. Usage pages its day buckets.
 */
import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import type { z } from "zod";
import { listPageSchema, PAGE_LIMITS, type ListName } from "../../src/protocol/list-page.ts";
import {
  adapterPageSchema,
  apiKeyPageSchema,
  filePageSchema,
  fineTuningCheckpointPageSchema,
  fineTuningJobEventPageSchema,
  fineTuningJobPageSchema,
  modelPageSchema,
  usageReportSchema,
} from "../../src/protocol/platform-objects.ts";
import { webhookDeliverySchema, webhookObjectSchema } from "../src/routes/webhooks.ts";
import { call, errorOf, tenantWithKey } from "./helpers.ts";
import { createdJob, putCheckpoint, RUNNER_AUTH, uploadedFile } from "./fine-tuning-helpers.ts";

type PageSchema = z.ZodType<{ data: { id: string }[]; first_id: string | null; last_id: string | null; has_more: boolean }>;

interface ListCase {
  list: ListName;
  path: string;
  schema: PageSchema;
  count: number; // items the seeded tenant has in this list (at least, for events)
}

/** One tenant with a few of everything, some created in the same second (cursor ties). */
async function seededTenant(): Promise<{ key: string; cases: ListCase[] }> {
  const { key, tenantId } = await tenantWithKey(["admin"]);
  const jobs = [await createdJob(key, { suffix: "a" }), await createdJob(key, { suffix: "b" }), await createdJob(key, { suffix: "c" })];
  for (let i = 0; i < 2; i++) await uploadedFile(key);
  const job = jobs[0];
  // Cancelled, so that no dispatch adds events while a test walks them.
  expect((await call("POST", `/v1/fine_tuning/jobs/${job.id}/cancel`, { key })).status).toBe(200);
  const events = Array.from({ length: 6 }, (_, i) => ({
    id: `${job.id}:message:${i}`,
    job_id: job.id,
    created_at: 1_800_000_000,
    level: "info",
    type: "message",
    message: `m${i}`,
    data: null,
  }));
  expect((await call("POST", `/internal/jobs/${job.id}/events`, { headers: RUNNER_AUTH, json: { events } })).status).toBe(200);
  for (const step of [10, 20, 30]) expect((await putCheckpoint(job.id, step)).status).toBe(200);
  const sameSecond = Math.floor(Date.now() / 1000) - 100;
  for (let i = 0; i < 4; i++) {
    await env.DB.prepare(
      "INSERT INTO adapters (id, tenant_id, base_model, status, blob_key, sha256, bytes, source, created_at) VALUES (?, ?, 'pica-base-4m', 'ready', ?, ?, 1, ?, ?)",
    )
      .bind(`peft:pica-base-4m:${tenantId}:n${i}:imp${i}`, tenantId, `k/${i}`, "0".repeat(64), i % 2 === 0 ? "peft_import" : "fine_tune", sameSecond)
      .run();
  }
  for (let i = 0; i < 3; i++) expect((await call("POST", "/v1/api_keys", { key, json: { name: `k${i}`, scopes: ["inference"] } })).status).toBe(201);
  const webhooks: string[] = [];
  for (let i = 0; i < 3; i++) {
    const created = await call("POST", "/v1/webhooks", { key, json: { url: `https://example.com/hooks/${i}` } });
    webhooks.push(((await created.json()) as { id: string }).id);
  }
  for (let i = 0; i < 5; i++) {
    await env.DB.prepare(
      "INSERT INTO webhook_deliveries (id, tenant_id, webhook_id, event_type, payload, created_at) VALUES (?, ?, ?, 'fine_tuning.job.succeeded', '{}', ?)",
    )
      .bind(`msg_${crypto.randomUUID()}`, tenantId, webhooks[0], sameSecond)
      .run();
  }
  return {
    key,
    cases: [
      { list: "models", path: "/v1/models", schema: modelPageSchema, count: 1 + 4 },
      { list: "adapters", path: "/v1/adapters", schema: adapterPageSchema, count: 4 + 3 },
      { list: "files", path: "/v1/files", schema: filePageSchema, count: 3 + 2 },
      { list: "jobs", path: "/v1/fine_tuning/jobs", schema: fineTuningJobPageSchema, count: 3 },
      // created, perhaps queued, cancelled, and the runner's six
      { list: "events", path: `/v1/fine_tuning/jobs/${job.id}/events`, schema: fineTuningJobEventPageSchema, count: 2 + 6 },
      { list: "checkpoints", path: `/v1/fine_tuning/jobs/${job.id}/checkpoints`, schema: fineTuningCheckpointPageSchema, count: 3 },
      { list: "keys", path: "/v1/api_keys", schema: apiKeyPageSchema, count: 1 + 3 },
      { list: "webhooks", path: "/v1/webhooks", schema: listPageSchema(webhookObjectSchema), count: 3 },
      { list: "deliveries", path: `/v1/webhooks/${webhooks[0]}/deliveries`, schema: listPageSchema(webhookDeliverySchema), count: 5 },
    ],
  };
}

async function page(key: string, list: ListCase, query: string) {
  const response = await call("GET", `${list.path}?${query}`, { key });
  expect(response.status, `${list.path}?${query}`).toBe(200);
  const body = list.schema.parse(await response.json());
  expect(body.first_id).toBe(body.data[0]?.id ?? null);
  expect(body.last_id).toBe(body.data.at(-1)?.id ?? null);
  return body;
}

/** Every id of a list, following `last_id` while `has_more`. */
async function walk(key: string, list: ListCase, limit: number): Promise<string[]> {
  const ids: string[] = [];
  let after: string | null = null;
  for (let request = 0; request <= list.count + 1; request++) {
    const body = await page(key, list, `limit=${limit}${after === null ? "" : `&after=${encodeURIComponent(after)}`}`);
    ids.push(...body.data.map((item) => item.id));
    if (!body.has_more) return ids;
    expect(body.data).toHaveLength(limit);
    after = body.last_id;
  }
  throw new Error(`${list.path} still had more after ${list.count + 1} pages`);
}

describe("pagination of every list", () => {
  it("walks each list with every page size, yielding each item exactly once in order", async () => {
    const { key, cases } = await seededTenant();
    for (const list of cases) {
      const whole = (await page(key, list, `limit=${PAGE_LIMITS[list.list].max}`)).data.map((item) => item.id);
      if (list.list === "events") expect(whole.length).toBeGreaterThanOrEqual(list.count);
      else expect(whole, list.path).toHaveLength(list.count);
      expect(new Set(whole).size, list.path).toBe(whole.length);
      for (const limit of [1, 2, 3]) expect(await walk(key, list, limit), `${list.path} limit ${limit}`).toEqual(whole);
      const unasked = await page(key, list, "");
      expect(unasked.data.map((item) => item.id)).toEqual(whole.slice(0, PAGE_LIMITS[list.list].fallback));
    }
  }, 60_000);

  it("answers a bad limit or after with a 400 naming it", async () => {
    const { key, cases } = await seededTenant();
    for (const list of cases) {
      const max = PAGE_LIMITS[list.list].max;
      for (const [query, param] of [
        ["limit=0", "limit"],
        ["limit=abc", "limit"],
        ["limit=2.5", "limit"],
        [`limit=${max + 1}`, "limit"],
        ["after=", "after"],
        ["after=nothing-by-this-id", "after"],
        [`after=${"x".repeat(400)}`, "after"],
      ]) {
        const response = await call("GET", `${list.path}?${query}`, { key });
        expect(response.status, `${list.path}?${query}`).toBe(400);
        expect(await errorOf(response), `${list.path}?${query}`).toMatchObject({ type: "invalid_request_error", param });
      }
    }
  }, 60_000);
});

describe("pagination of usage", () => {
  const DAY = 86_400;

  it("pages day buckets with limit and next_page, each day once, with the window's totals on every page", async () => {
    const { key, tenantId } = await tenantWithKey();
    const today = Math.floor(Date.now() / 1000 / DAY) * DAY;
    const days = [1, 3, 4, 8, 20].map((ago) => today - ago * DAY);
    for (const [i, day] of days.entries()) {
      await env.DB.prepare("INSERT INTO usage (tenant_id, model, request_id, prompt_tokens, completion_tokens, created_at) VALUES (?, ?, ?, ?, ?, ?)")
        .bind(tenantId, "pica-base-4m", `req_${i}`, 10 * (i + 1), 1, day + 3600)
        .run();
    }
    const seen: number[] = [];
    let next: string | null = null;
    for (let request = 0; request < 10; request++) {
      const response = await call("GET", `/v1/usage?limit=2${next === null ? "" : `&page=${next}`}`, { key });
      expect(response.status).toBe(200);
      const report = usageReportSchema.parse(await response.json());
      expect(report.totals).toEqual({ num_model_requests: 5, input_tokens: 150, output_tokens: 5, total_tokens: 155 });
      seen.push(...report.data.map((bucket) => bucket.start_time));
      expect(report.next_page === null).toBe(!report.has_more);
      if (!report.has_more) break;
      expect(report.data).toHaveLength(2);
      next = report.next_page;
    }
    expect(seen).toEqual([...days].sort((a, b) => a - b));

    for (const [query, param] of [
      ["limit=0", "limit"],
      ["limit=367", "limit"],
      ["page=tomorrow", "page"],
      [`page=${today + 12}`, "page"], // not the start of a day
      [`page=${today - 400 * DAY}`, "page"], // before the window
    ]) {
      const response = await call("GET", `/v1/usage?${query}`, { key });
      expect(response.status, query).toBe(400);
      expect((await errorOf(response)).param, query).toBe(param);
    }
  });
});
