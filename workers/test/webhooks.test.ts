import { env } from "cloudflare:test";
import { Webhook } from "standardwebhooks";
import { afterEach, describe, expect, it } from "vitest";
import { database } from "../src/db/client.ts";
import type { TaskMessage } from "../src/queue/messages.ts";
import { MAX_DELIVERY_ATTEMPTS } from "../src/webhooks/deliver.ts";
import { enqueueWebhookEvent, type WebhookEventType } from "../src/webhooks/events.ts";
import { installFakeRunners, withoutRunnerSecret, type RunnerHandler } from "./fake-runners.ts";
import { createdJob, putFinishedAdapter, RUNNER_AUTH } from "./fine-tuning-helpers.ts";
import { call, consumeOnce, consumeTask, errorOf, tenantWithKey } from "./helpers.ts";
import { eventually, forgetRunners } from "./inference-helpers.ts";

let restore: (() => void) | null = null;
afterEach(() => {
  restore?.();
  restore = null;
});

async function register(key: string, url: string, events?: WebhookEventType[]) {
  const response = await call("POST", "/v1/webhooks", { key, json: { url, ...(events ? { events } : {}) } });
  expect(response.status).toBe(201);
  return (await response.json()) as { id: string; secret: string; url: string; events: string[] };
}

/** Records events as the worker would, with a queue that only collects what it is sent. */
async function emit(tenantId: string, type: WebhookEventType, jobId: string): Promise<TaskMessage[]> {
  const sent: TaskMessage[] = [];
  const tasks = { sendBatch: async (messages: { body: TaskMessage }[]) => void sent.push(...messages.map((m) => m.body)) } as unknown as Queue;
  await enqueueWebhookEvent({ TASKS: tasks }, database(env.DB), tenantId, type, { id: jobId });
  return sent;
}

const delivery = (id: string) =>
  env.DB.prepare("SELECT * FROM webhook_deliveries WHERE id = ?")
    .bind(id)
    .first<{ status: string; attempts: number; last_status: number | null; last_error: string | null }>();

describe("webhook endpoints", () => {
  it("registers an endpoint with a secret shown once; lists, retrieves and deletes it", async () => {
    const { key } = await tenantWithKey(["admin"]);
    const created = await register(key, "https://example.com/hooks");
    expect(created.secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    expect(created.events).toEqual(["fine_tuning.job.succeeded", "fine_tuning.job.failed", "fine_tuning.job.cancelled"]);
    const listed = await (await call("GET", "/v1/webhooks", { key })).text();
    expect(listed).toContain(created.id);
    expect(listed).not.toContain(created.secret);
    const retrieved = await call("GET", `/v1/webhooks/${created.id}`, { key });
    expect(await retrieved.json()).toMatchObject({ id: created.id, object: "webhook_endpoint", url: "https://example.com/hooks" });
    expect(await (await call("DELETE", `/v1/webhooks/${created.id}`, { key })).json()).toEqual({
      id: created.id,
      object: "webhook_endpoint.deleted",
      deleted: true,
    });
    expect((await call("GET", `/v1/webhooks/${created.id}`, { key })).status).toBe(404);
    expect((await call("DELETE", `/v1/webhooks/${created.id}`, { key })).status).toBe(404);
  });

  it("keeps tenants apart: another tenant gets 404 for every read and delete", async () => {
    const a = await tenantWithKey(["admin"]);
    const b = await tenantWithKey(["admin"]);
    const created = await register(a.key, "https://a.example.com/hooks");
    for (const [method, path] of [
      ["GET", `/v1/webhooks/${created.id}`],
      ["GET", `/v1/webhooks/${created.id}/deliveries`],
      ["DELETE", `/v1/webhooks/${created.id}`],
    ]) {
      const response = await call(method, path, { key: b.key });
      expect(response.status, `${method} ${path}`).toBe(404);
      expect((await errorOf(response)).code).toBe("webhook_not_found");
    }
    expect(await (await call("GET", "/v1/webhooks", { key: b.key })).json()).toEqual({
      object: "list",
      data: [],
      first_id: null,
      last_id: null,
      has_more: false,
    });
    expect(await emit(b.tenantId, "fine_tuning.job.succeeded", "ftjob-b")).toEqual([]); // a's endpoint hears nothing of b
    expect((await call("GET", `/v1/webhooks/${created.id}`, { key: a.key })).status).toBe(200);
  });

  it("refuses bad registrations with 400s naming the field, and keys without the admin scope", async () => {
    const { key } = await tenantWithKey(["admin"]);
    const cases: [unknown, string][] = [
      [{}, "url"],
      [{ url: "not a url" }, "url"],
      [{ url: "http://example.com/hooks" }, "url"], // plain http only for local hosts
      [{ url: "ftp://example.com/hooks" }, "url"],
      [{ url: "https://example.com", events: [] }, "events"],
      [{ url: "https://example.com", events: ["fine_tuning.job.created"] }, "events[0]"],
    ];
    for (const [json, param] of cases) {
      const response = await call("POST", "/v1/webhooks", { key, json });
      expect(response.status, JSON.stringify(json)).toBe(400);
      expect((await errorOf(response)).param).toBe(param);
    }
    const chosenSecret = await call("POST", "/v1/webhooks", { key, json: { url: "https://example.com", secret: "whsec_mine" } });
    expect(chosenSecret.status).toBe(400); // secrets are ours to generate
    expect((await errorOf(chosenSecret)).message).toContain("secret");
    expect((await call("POST", "/v1/webhooks", { key, body: "{nope" })).status).toBe(400);
    expect((await call("POST", "/v1/webhooks", { key, json: { url: "http://localhost:9000/hooks" } })).status).toBe(201);
    const inference = await tenantWithKey(["inference", "fine_tuning"]);
    expect((await call("GET", "/v1/webhooks", { key: inference.key })).status).toBe(403);
  });
});

describe("webhook deliveries", () => {
  it("a job finished by its runner's callbacks sends a signed event that the standardwebhooks package verifies, only to subscribed endpoints", async () => {
    await forgetRunners();
    const { tenantId, key } = await tenantWithKey(["admin", "fine_tuning"]);
    const subscribed = await register(key, "http://hooks.test/succeeded", ["fine_tuning.job.succeeded"]);
    await register(key, "http://hooks.test/failed", ["fine_tuning.job.failed"]);
    const received: { path: string; body: string; headers: Record<string, string> }[] = [];
    const accepting: RunnerHandler = (request) => withoutRunnerSecret(request) ?? Response.json({ status: "queued" }, { status: 202 });
    restore = installFakeRunners({
      "http://runner-a.test": accepting,
      "http://runner-b.test": accepting,
      "http://hooks.test": async (request) => {
        received.push({ path: new URL(request.url).pathname, body: await request.text(), headers: Object.fromEntries(request.headers) });
        return new Response(null, { status: 204 });
      },
    });

    // The job runs as it does in production: dispatched to a runner, whose callbacks report it
    // started, deliver the adapter and report it succeeded (the order a runner sends them in).
    const created = await createdJob(key, { suffix: "hooked" });
    expect(await consumeOnce({ kind: "dispatch_job", jobId: created.id })).toEqual({ acked: true, retried: false });
    const status = (value: string) => ({
      id: `${created.id}:status:${value}`,
      job_id: created.id,
      created_at: Math.floor(Date.now() / 1000),
      level: "info",
      type: "status",
      message: `Job ${value}`,
      data: { status: value },
    });
    const report = (value: string) => call("POST", `/internal/jobs/${created.id}/events`, { headers: RUNNER_AUTH, json: { events: [status(value)] } });
    expect((await report("running")).status).toBe(200);
    expect((await putFinishedAdapter(created.id)).status).toBe(200);
    expect((await report("succeeded")).status).toBe(200);
    const job = (await (await call("GET", `/v1/fine_tuning/jobs/${created.id}`, { key })).json()) as Record<string, unknown>;
    expect(job).toMatchObject({ id: created.id, status: "succeeded", fine_tuned_model: `ft:pica-base-4m:${tenantId}:hooked:${created.id}` });

    // The completion recorded one delivery, for the endpoint subscribed to successes, however many
    // callbacks said the job succeeded; the real queue carries it to that endpoint.
    const rows = await env.DB.prepare("SELECT id, webhook_id, event_type FROM webhook_deliveries WHERE tenant_id = ?").bind(tenantId).all();
    expect(rows.results).toEqual([{ id: expect.stringMatching(/^msg_/), webhook_id: subscribed.id, event_type: "fine_tuning.job.succeeded" }]);
    const deliveryId = rows.results[0].id as string;
    await eventually(async () => (await delivery(deliveryId))?.status === "delivered");
    expect(await delivery(deliveryId)).toMatchObject({ status: "delivered", attempts: 1, last_status: 204 });

    expect(received).toHaveLength(1);
    const [message] = received;
    expect(message.path).toBe("/succeeded");
    expect(message.headers["content-type"]).toBe("application/json");
    expect(message.headers["webhook-id"]).toBe(deliveryId);
    const event = new Webhook(subscribed.secret).verify(message.body, message.headers) as Record<string, unknown>;
    expect(event).toMatchObject({
      object: "event",
      type: "fine_tuning.job.succeeded",
      data: { id: created.id, object: "fine_tuning.job", status: "succeeded", fine_tuned_model: job.fine_tuned_model },
    });
    expect(event.id).toMatch(/^evt_/);
    expect(Math.abs((event.created_at as number) - Date.now() / 1000)).toBeLessThan(60);
    expect(() => new Webhook(subscribed.secret).verify(message.body.replace(created.id, `${created.id}x`), message.headers)).toThrow();
    const other = await register(key, "https://example.com/other");
    expect(() => new Webhook(other.secret).verify(message.body, message.headers)).toThrow();

    const listed = (await (await call("GET", `/v1/webhooks/${subscribed.id}/deliveries`, { key })).json()) as { data: { id: string; status: string }[] };
    expect(listed.data).toEqual([expect.objectContaining({ id: deliveryId, status: "delivered", event_type: "fine_tuning.job.succeeded" })]);

    await consumeTask({ kind: "deliver_webhook", deliveryId }, 2); // the queue delivers at least once: a repeat sends nothing
    expect(received).toHaveLength(1);
  });

  it("retries a failed delivery (non-2xx or network error) with the same id, records each attempt, and gives up after the limit", async () => {
    const { tenantId, key } = await tenantWithKey(["admin"]);
    const endpoint = await register(key, "http://flaky.test/hooks");
    const answers: (number | "network")[] = [500, "network", 200];
    const received: Record<string, string>[] = [];
    restore = installFakeRunners({
      "http://flaky.test": (request) => {
        received.push(Object.fromEntries(request.headers));
        const answer = answers.shift() ?? 500;
        if (answer === "network") throw new TypeError("connection reset");
        return new Response("nope", { status: answer });
      },
    });
    const [task] = await emit(tenantId, "fine_tuning.job.failed", "ftjob-7");
    const deliveryId = (task as { deliveryId: string }).deliveryId;

    const first = await consumeTask(task, 1);
    expect(first.retryMessages).toHaveLength(1);
    expect(await delivery(deliveryId)).toMatchObject({ status: "pending", attempts: 1, last_status: 500 });
    const second = await consumeTask(task, 2);
    expect(second.retryMessages).toHaveLength(1);
    expect(await delivery(deliveryId)).toMatchObject({
      status: "pending",
      attempts: 2,
      last_status: null,
      last_error: expect.stringContaining("connection reset"),
    });
    const third = await consumeTask(task, 3);
    expect(third.explicitAcks).toHaveLength(1);
    expect(await delivery(deliveryId)).toMatchObject({ status: "delivered", attempts: 3, last_status: 200 });
    expect(new Set(received.map((h) => h["webhook-id"]))).toEqual(new Set([deliveryId]));
    for (const headers of received) expect(() => new Webhook(endpoint.secret).verify(JSON.stringify({}), headers)).toThrow(); // signed over the real body only

    const [doomed] = await emit(tenantId, "fine_tuning.job.cancelled", "ftjob-8");
    const doomedId = (doomed as { deliveryId: string }).deliveryId;
    await env.DB.prepare("UPDATE webhook_deliveries SET attempts = ? WHERE id = ?")
      .bind(MAX_DELIVERY_ATTEMPTS - 1, doomedId)
      .run();
    const last = await consumeTask(doomed, MAX_DELIVERY_ATTEMPTS);
    expect(last.explicitAcks).toHaveLength(1); // given up: no more retries
    expect(last.retryMessages).toHaveLength(0);
    expect(await delivery(doomedId)).toMatchObject({ status: "failed", attempts: MAX_DELIVERY_ATTEMPTS, last_status: 500 });
  });

  it("drops deliveries to an endpoint deleted after the event", async () => {
    const { tenantId, key } = await tenantWithKey(["admin"]);
    const endpoint = await register(key, "http://gone.test/hooks");
    const [task] = await emit(tenantId, "fine_tuning.job.succeeded", "ftjob-9");
    await call("DELETE", `/v1/webhooks/${endpoint.id}`, { key });
    restore = installFakeRunners({});
    const result = await consumeTask(task);
    expect(result.explicitAcks).toHaveLength(1);
    expect(await delivery((task as { deliveryId: string }).deliveryId)).toMatchObject({ status: "failed", attempts: 0, last_error: "endpoint deleted" });
  });
});
