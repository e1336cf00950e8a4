import { env } from "cloudflare:test";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { FAKE_USAGE } from "./fake-openai-runner.ts";
import { call, errorOf, tenantWithKey } from "./helpers.ts";
import { eventually, fakeRunners, seedAdapter, forgetRunners } from "./inference-helpers.ts";

let restore: () => void;
beforeEach(async () => {
  await forgetRunners();
  ({ restore } = fakeRunners());
});
afterEach(() => restore());

const DAY = 86_400;

interface Result {
  model?: string;
  num_model_requests: number;
  input_tokens: number;
  output_tokens: number;
  total_tokens: number;
}
interface Report {
  object: string;
  start_time: number;
  end_time: number;
  totals: Result;
  models: Result[];
  data: { object: string; start_time: number; end_time: number; results: Result[] }[];
}

async function report(key: string, query = ""): Promise<Report> {
  const response = await call("GET", `/v1/usage${query}`, { key });
  expect(response.status).toBe(200);
  return (await response.json()) as Report;
}

describe("GET /v1/usage", () => {
  it("reports what the tenant's requests used: totals, per model and per day", async () => {
    const { tenantId, key } = await tenantWithKey();
    const other = await tenantWithKey();
    const adapter = `ft:${env.BASE_MODEL}:${tenantId}:u:job1`;
    await seedAdapter(tenantId, adapter);
    const chat = (model: string, stream: boolean) => ({ model, messages: [{ role: "user", content: "hi" }], stream });
    // Usage is known once a response has been read to its end.
    for (const [model, stream] of [
      [env.BASE_MODEL, true],
      [env.BASE_MODEL, false],
      [adapter, true],
    ] as const) {
      const response = await call("POST", "/v1/chat/completions", { key, json: chat(model, stream) });
      expect(response.status).toBe(200);
      await response.text();
    }
    // Three days ago, written directly: it must land in its own day bucket.
    const now = Math.floor(Date.now() / 1000);
    const old = now - 3 * DAY;
    await env.DB.prepare("INSERT INTO usage (tenant_id, model, request_id, prompt_tokens, completion_tokens, created_at) VALUES (?, ?, ?, ?, ?, ?)")
      .bind(tenantId, adapter, "req_old", 100, 50, old)
      .run();
    await eventually(async () => (await report(key)).totals.num_model_requests === 4);

    const all = await report(key);
    const p = FAKE_USAGE.prompt_tokens;
    const q = FAKE_USAGE.completion_tokens;
    expect(all.object).toBe("usage");
    expect(all.totals).toEqual({ num_model_requests: 4, input_tokens: 3 * p + 100, output_tokens: 3 * q + 50, total_tokens: 3 * (p + q) + 150 });
    expect(all.models).toEqual(
      [
        { model: env.BASE_MODEL, num_model_requests: 2, input_tokens: 2 * p, output_tokens: 2 * q, total_tokens: 2 * (p + q) },
        { model: adapter, num_model_requests: 2, input_tokens: p + 100, output_tokens: q + 50, total_tokens: p + q + 150 },
      ].sort((a, b) => (a.model < b.model ? -1 : 1)),
    );
    const today = Math.floor(now / DAY) * DAY;
    expect(all.data.map((bucket) => [bucket.start_time, bucket.end_time, bucket.results.length])).toEqual([
      [Math.floor(old / DAY) * DAY, Math.floor(old / DAY) * DAY + DAY, 1],
      [today, today + DAY, 2],
    ]);
    expect(all.data[0].results[0]).toEqual({ model: adapter, num_model_requests: 1, input_tokens: 100, output_tokens: 50, total_tokens: 150 });

    // A window that leaves out the old record.
    const recent = await report(key, `?start_time=${now - DAY}`);
    expect(recent.totals.num_model_requests).toBe(3);
    expect(recent.data).toHaveLength(1);
    const onlyOld = await report(key, `?start_time=${old - 10}&end_time=${old + 10}`);
    expect(onlyOld.totals).toEqual({ num_model_requests: 1, input_tokens: 100, output_tokens: 50, total_tokens: 150 });

    // Nobody else's usage shows.
    const theirs = await report(other.key);
    expect(theirs.totals.num_model_requests).toBe(0);
    expect(theirs.models).toEqual([]);
    expect(theirs.data).toEqual([]);
  });

  it("refuses a bad window with a 400 naming the field", async () => {
    const { key } = await tenantWithKey();
    const cases: [string, string][] = [
      ["?start_time=yesterday", "start_time"],
      ["?end_time=-5", "end_time"],
      ["?start_time=200&end_time=100", "start_time"],
    ];
    for (const [query, param] of cases) {
      const response = await call("GET", `/v1/usage${query}`, { key });
      expect(response.status, query).toBe(400);
      expect((await errorOf(response)).param, query).toBe(param);
    }
    expect((await call("GET", "/v1/usage")).status).toBe(401);
  });
});
