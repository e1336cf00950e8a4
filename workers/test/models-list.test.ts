/**
 * `GET /v1/models` lists what a tenant would pick as a model: the base model, the final adapter
 * of each succeeded job and imported adapters; checkpoints are under their job, not here.
 */
import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { modelPageSchema } from "../../src/protocol/platform-objects.ts";
import { call, errorOf, tenantWithKey } from "./helpers.ts";
import { createdJob, putCheckpoint, putFinishedAdapter } from "./fine-tuning-helpers.ts";
import { seedAdapter } from "./inference-helpers.ts";

async function models(key: string, query = ""): Promise<ReturnType<typeof modelPageSchema.parse>> {
  const response = await call("GET", `/v1/models${query}`, { key });
  expect(response.status, query).toBe(200);
  return modelPageSchema.parse(await response.json());
}

describe("GET /v1/models", () => {
  it("lists the base model, fine-tuned and imported models, and no checkpoints, in pages", async () => {
    const { key, tenantId } = await tenantWithKey();
    const other = await tenantWithKey();
    const finished = await createdJob(key, { suffix: "done" });
    for (const step of [10, 20]) expect((await putCheckpoint(finished.id, step)).status).toBe(200);
    expect((await putFinishedAdapter(finished.id)).status).toBe(200);
    const running = await createdJob(key, { suffix: "busy" });
    expect((await putCheckpoint(running.id, 10)).status).toBe(200);
    const imported = `peft:pica-base-4m:${tenantId}:mine:imp1`;
    await env.DB.prepare(
      "INSERT INTO adapters (id, tenant_id, base_model, status, blob_key, sha256, bytes, source, created_at) VALUES (?, ?, 'pica-base-4m', 'ready', 'k', ?, 1, 'peft_import', unixepoch() + 60)",
    )
      .bind(imported, tenantId, "0".repeat(64))
      .run();
    await seedAdapter(tenantId, "still-importing", { status: "importing" });
    await seedAdapter(other.tenantId, "someone-elses");

    const fineTuned = `ft:pica-base-4m:${tenantId}:done:${finished.id}`;
    const all = await models(key);
    expect(all.data.map((model) => model.id)).toEqual([env.BASE_MODEL, imported, fineTuned]); // newest adapter first
    expect(all).toMatchObject({ first_id: env.BASE_MODEL, last_id: fineTuned, has_more: false });
    expect(all.data.slice(1).every((model) => model.owned_by === tenantId)).toBe(true);

    const first = await models(key, "?limit=1");
    expect(first).toMatchObject({ data: [{ id: env.BASE_MODEL }], has_more: true, last_id: env.BASE_MODEL });
    const second = await models(key, `?limit=1&after=${env.BASE_MODEL}`);
    expect(second).toMatchObject({ data: [{ id: imported }], has_more: true });
    const third = await models(key, `?limit=5&after=${encodeURIComponent(imported)}`);
    expect(third).toMatchObject({ data: [{ id: fineTuned }], has_more: false, first_id: fineTuned, last_id: fineTuned });

    // A checkpoint is no model list's cursor, but it stays a model to retrieve.
    const checkpoint = `${fineTuned}:ckpt-step-20`;
    const cursor = await call("GET", `/v1/models?after=${encodeURIComponent(checkpoint)}`, { key });
    expect(cursor.status).toBe(400);
    expect(await errorOf(cursor)).toMatchObject({ param: "after", code: "invalid_cursor" });
    expect((await call("GET", `/v1/models/${checkpoint}`, { key })).status).toBe(200);

    const theirs = await models(other.key);
    expect(theirs.data.map((model) => model.id)).toEqual([env.BASE_MODEL, "someone-elses"]);
  });
});
