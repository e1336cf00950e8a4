import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { call, errorOf, tenantWithKey } from "./helpers.ts";
import { createdJob, RUNNER_AUTH, sha256, uploadedFile } from "./fine-tuning-helpers.ts";

describe("tenant isolation of files, jobs and adapters", () => {
  it("gives tenant B a 404 for every read, use, cancel and delete of tenant A's things, and changes nothing", async () => {
    const a = await tenantWithKey();
    const b = await tenantWithKey(["admin"]); // every scope: only ownership may stop it
    const job = await createdJob(a.key, { suffix: "mine" });
    const validation = await uploadedFile(a.key);
    // Finish A's job so it has an adapter and a checkpoint.
    const checkpoint = new Uint8Array([4, 5, 6]);
    await call("PUT", `/internal/jobs/${job.id}/checkpoints/3`, {
      headers: { ...RUNNER_AUTH, "x-content-sha256": await sha256(checkpoint) },
      body: checkpoint,
    });
    const adapter = new Uint8Array([1, 2, 3]);
    expect(
      (await call("PUT", `/internal/jobs/${job.id}/adapter`, { headers: { ...RUNNER_AUTH, "x-content-sha256": await sha256(adapter) }, body: adapter })).status,
    ).toBe(200);
    const model = `ft:pica-base-4m:${a.tenantId}:mine:${job.id}`;
    const checkpointModel = `${model}:ckpt-step-3`;
    const bFile = await uploadedFile(b.key);

    const attempts: [string, string, unknown?][] = [
      ["GET", `/v1/files/${job.training_file}`],
      ["GET", `/v1/files/${job.training_file}/content`],
      ["DELETE", `/v1/files/${job.training_file}`],
      ["POST", "/v1/fine_tuning/jobs", { model: "pica-base-4m", training_file: job.training_file }],
      ["POST", "/v1/fine_tuning/jobs", { model: "pica-base-4m", training_file: bFile, validation_file: validation }],
      ["GET", `/v1/fine_tuning/jobs/${job.id}`],
      ["POST", `/v1/fine_tuning/jobs/${job.id}/cancel`],
      ["GET", `/v1/fine_tuning/jobs/${job.id}/events`],
      ["GET", `/v1/fine_tuning/jobs/${job.id}/checkpoints`],
      ["GET", `/v1/adapters/${model}`],
      ["GET", `/v1/adapters/${encodeURIComponent(model)}`],
      ["GET", `/v1/adapters/${checkpointModel}`],
      ["GET", `/v1/adapters/${encodeURIComponent(model)}/export`],
      ["GET", `/v1/models/${model}`],
      ["POST", "/v1/chat/completions", { model, messages: [{ role: "user", content: "hi" }] }],
      ["POST", "/v1/completions", { model: "pica-base-4m", adapter_id: checkpointModel, prompt: "hi", stream: true }],
      ["DELETE", `/v1/api_keys/${a.keyId}`],
      ["DELETE", `/v1/adapters/${model}`],
      ["DELETE", `/v1/adapters/${checkpointModel}`],
    ];
    for (const [method, path, json] of attempts) {
      const response = await call(method, path, { key: b.key, json });
      expect(response.status, `${method} ${path}`).toBe(404);
      const error = await errorOf(response);
      expect(error.type).toBe("not_found_error");
      expect(error.code, `${method} ${path}`).toMatch(/not_found$/); // the same answer as for an id that never existed
    }
    // A's ids as B's cursors are as unknown as ids that never existed.
    for (const [list, foreign, unknown] of [
      ["/v1/files", job.training_file, "file-nope"],
      ["/v1/fine_tuning/jobs", job.id, "ftjob-nope"],
      ["/v1/adapters", model, "ft:nope"],
      ["/v1/models", model, "ft:nope"],
    ]) {
      const refused = await call("GET", `${list}?after=${encodeURIComponent(foreign)}`, { key: b.key });
      expect(refused.status, list).toBe(400);
      const never = await errorOf(await call("GET", `${list}?after=${encodeURIComponent(unknown)}`, { key: b.key }));
      expect(await errorOf(refused)).toEqual({ ...never, message: never.message.replace(JSON.stringify(unknown), JSON.stringify(foreign)) });
    }
    // B's lists hold none of A's things.
    const bFiles = (await (await call("GET", "/v1/files", { key: b.key })).json()) as { data: { id: string }[] };
    expect(bFiles.data.map((f) => f.id)).toEqual([bFile]);
    expect(((await (await call("GET", "/v1/fine_tuning/jobs", { key: b.key })).json()) as { data: unknown[] }).data).toEqual([]);
    expect(((await (await call("GET", "/v1/adapters", { key: b.key })).json()) as { data: unknown[] }).data).toEqual([]);

    // A still has everything, unchanged.
    expect((await call("GET", `/v1/files/${job.training_file}/content`, { key: a.key })).status).toBe(200);
    expect(await (await call("GET", `/v1/fine_tuning/jobs/${job.id}`, { key: a.key })).json()).toMatchObject({ status: "succeeded", fine_tuned_model: model });
    expect((await call("GET", `/v1/adapters/${model}`, { key: a.key })).status).toBe(200);
    expect((await call("GET", "/v1/models", { key: a.key })).status).toBe(200); // A's key still works
    const bModels = (await (await call("GET", "/v1/models", { key: b.key })).json()) as { data: { id: string }[] };
    expect(bModels.data.map((m) => m.id)).toEqual(["pica-base-4m"]);
  });

  it("lets the owner delete an adapter: the row and the blob go, and the runner can no longer fetch it", async () => {
    const { key, tenantId } = await tenantWithKey();
    const job = await createdJob(key, { suffix: "gone" });
    const adapter = new Uint8Array([9, 8, 7]);
    await call("PUT", `/internal/jobs/${job.id}/adapter`, { headers: { ...RUNNER_AUTH, "x-content-sha256": await sha256(adapter) }, body: adapter });
    const model = `ft:pica-base-4m:${tenantId}:gone:${job.id}`;
    const row = await env.DB.prepare("SELECT blob_key FROM adapters WHERE id = ?").bind(model).first<{ blob_key: string }>();
    expect(await env.BLOBS.head(row!.blob_key)).not.toBeNull();
    const deleted = await call("DELETE", `/v1/adapters/${encodeURIComponent(model)}`, { key });
    expect(await deleted.json()).toEqual({ id: model, object: "adapter", deleted: true });
    expect(await env.BLOBS.head(row!.blob_key)).toBeNull();
    expect(await env.DB.prepare("SELECT id FROM adapters WHERE id = ?").bind(model).first()).toBeNull();
    expect((await call("GET", `/v1/adapters/${model}`, { key })).status).toBe(404);
    expect((await call("GET", `/internal/adapters/${encodeURIComponent(model)}/blob`, { headers: RUNNER_AUTH })).status).toBe(404);
    // Scopes: listing adapters is for inference keys, deleting for fine-tuning keys.
    const inferenceOnly = await tenantWithKey(["inference"]);
    expect((await call("GET", "/v1/adapters", { key: inferenceOnly.key })).status).toBe(200);
    expect((await call("DELETE", `/v1/adapters/${model}`, { key: inferenceOnly.key })).status).toBe(403);
  });
});
