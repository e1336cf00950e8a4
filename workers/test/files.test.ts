import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { call, errorOf, tenantWithKey } from "./helpers.ts";
import { trainingJsonl, upload } from "./fine-tuning-helpers.ts";

describe("files", () => {
  it("stores a valid upload in R2 under the tenant and lists, retrieves, serves and deletes it", async () => {
    const { key, tenantId } = await tenantWithKey();
    const content = trainingJsonl(12);
    const created = await upload(key, content, { filename: "qa.jsonl" });
    expect(created.status).toBe(200);
    const file = (await created.json()) as Record<string, unknown>;
    expect(file).toMatchObject({
      object: "file",
      purpose: "fine-tune",
      filename: "qa.jsonl",
      bytes: new TextEncoder().encode(content).length,
      status: "processed",
      status_details: null,
    });
    expect(file.id).toMatch(/^file-/);

    const row = await env.DB.prepare("SELECT * FROM files WHERE id = ?").bind(file.id).first<Record<string, any>>();
    expect(row!.examples).toBe(12);
    // Estimated at the base model's configured rate: the shipped model's byte vocabulary is one token per byte.
    expect(env.BASE_MODEL_BYTES_PER_TOKEN).toBe("1");
    // Counted by hand: the questions "What is i + 1?" are 10 × 14 + 2 × 15 = 170 bytes, the answers
    // 9 × 1 + 3 × 2 = 15, and each of the 12 conversations adds the default 10 template tokens (no
    // runner has reported its template): 170 + 15 + 120 = 305 (at BPE's 4 bytes per token it would
    // be 12 × (4 + 1 + 10) = 180).
    expect(row!.estimated_tokens).toBe(305);
    expect(row!.blob_key).toBe(`tenants/${tenantId}/files/${file.id}.jsonl`);
    expect(await (await env.BLOBS.get(row!.blob_key))!.text()).toBe(content);

    expect(await (await call("GET", `/v1/files/${file.id}`, { key })).json()).toEqual(file);
    const content200 = await call("GET", `/v1/files/${file.id}/content`, { key });
    expect(await content200.text()).toBe(content);

    const second = (await (await upload(key, content)).json()) as { id: string };
    const list = (await (await call("GET", "/v1/files?limit=1", { key })).json()) as Record<string, any>;
    expect(list.data).toHaveLength(1);
    expect(list.has_more).toBe(true);
    const rest = (await (await call("GET", `/v1/files?limit=10&after=${list.last_id}`, { key })).json()) as Record<string, any>;
    expect(rest.has_more).toBe(false);
    expect([...list.data, ...rest.data].map((f: { id: string }) => f.id).sort()).toEqual([file.id, second.id].sort());

    expect(await (await call("DELETE", `/v1/files/${file.id}`, { key })).json()).toEqual({ id: file.id, object: "file", deleted: true });
    expect(await env.BLOBS.get(row!.blob_key)).toBeNull();
    expect((await call("GET", `/v1/files/${file.id}`, { key })).status).toBe(404);
    expect((await call("DELETE", `/v1/files/${file.id}`, { key })).status).toBe(404);
  });

  it("refuses bad lines naming the first several line numbers and reasons, and stores nothing", async () => {
    const { key, tenantId } = await tenantWithKey();
    const lines = trainingJsonl(12).trim().split("\n");
    lines[2] = "{not json";
    lines[5] = JSON.stringify({ messages: [{ role: "user", content: "only a question" }] });
    lines[8] = JSON.stringify({
      messages: [
        { role: "robot", content: "x" },
        { role: "assistant", content: "y" },
      ],
    });
    const response = await upload(key, lines.join("\n"));
    expect(response.status).toBe(400);
    const error = await errorOf(response);
    expect(error).toMatchObject({ type: "invalid_request_error", param: "file", code: "invalid_training_file" });
    expect(error.message).toContain("3 bad lines");
    expect(error.message).toContain("line 3: invalid JSON");
    expect(error.message).toContain("line 6: messages has no assistant message");
    expect(error.message).toContain('line 9: messages[0].role must be one of "system", "user", "assistant", got "robot"');
    // The same lines as data, for a client that shows each reason beside its line.
    expect((error as { lines?: unknown }).lines).toEqual([
      { line: 3, reason: expect.stringContaining("invalid JSON") },
      { line: 6, reason: "messages has no assistant message; an example needs at least one to train on" },
      { line: 9, reason: 'messages[0].role must be one of "system", "user", "assistant", got "robot"' },
    ]);
    const listed = await env.BLOBS.list({ prefix: `tenants/${tenantId}/` });
    expect(listed.objects).toHaveLength(0);
  });

  it("lists at most ten bad lines and counts the rest", async () => {
    const { key } = await tenantWithKey();
    const response = await upload(key, Array.from({ length: 25 }, () => "[]").join("\n"));
    const error = await errorOf(response);
    expect(error.message).toContain("25 bad lines");
    expect(error.message).toContain("line 10: a line must be a JSON object");
    expect(error.message).not.toContain("line 11:");
    expect(error.message).toContain("and 15 more bad lines");
    expect((error as { lines?: { line: number }[] }).lines?.map((l) => l.line)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  });

  it("refuses too few examples, invalid UTF-8 (by line), prompt/completion mixed with chat, and accepts prompt/completion files", async () => {
    const { key } = await tenantWithKey();
    const few = await errorOf(await upload(key, trainingJsonl(9)));
    expect(few.message).toContain("it has 9 examples; at least 10 are required");

    const good = new TextEncoder().encode(trainingJsonl(12));
    const bad = new Uint8Array([...good.subarray(0, 30), 0xff, 0xfe, ...good.subarray(30)]);
    const utf8 = await upload(key, bad);
    expect(utf8.status).toBe(400);
    expect((await errorOf(utf8)).message).toContain("line 1: not valid UTF-8");

    const mixed = `${trainingJsonl(11)}${JSON.stringify({ prompt: "p", completion: "c" })}\n`;
    expect((await errorOf(await upload(key, mixed))).message).toContain("line 12: this line is a prompt/completion example");

    const completions = Array.from({ length: 10 }, (_, i) => JSON.stringify({ prompt: `${i}+1=`, completion: ` ${i + 1}` })).join("\n");
    expect((await upload(key, completions)).status).toBe(200);
    const weighted = Array.from({ length: 10 }, () =>
      JSON.stringify({
        messages: [
          { role: "user", content: "a" },
          { role: "assistant", content: "b", weight: 0 },
          { role: "user", content: "c" },
          { role: "assistant", content: "d", weight: 1 },
        ],
      }),
    ).join("\n");
    expect((await upload(key, weighted)).status).toBe(200);
  });

  it("answers bad requests with OpenAI-shaped 4xx naming the parameter", async () => {
    const { key } = await tenantWithKey();
    const noPurpose = await upload(key, trainingJsonl(), { purpose: null });
    expect(noPurpose.status).toBe(400);
    expect((await errorOf(noPurpose)).param).toBe("purpose");
    const wrongPurpose = await upload(key, trainingJsonl(), { purpose: "assistants" });
    expect((await errorOf(wrongPurpose)).param).toBe("purpose");
    const form = new FormData();
    form.set("purpose", "fine-tune");
    form.set("file", "just text");
    const textField = await call("POST", "/v1/files", { key, body: form });
    expect(textField.status).toBe(400);
    expect((await errorOf(textField)).param).toBe("file");
    const noFile = new FormData();
    noFile.set("purpose", "fine-tune");
    expect((await errorOf(await call("POST", "/v1/files", { key, body: noFile }))).code).toBe("missing_required_parameter");
    const json = await call("POST", "/v1/files", { key, json: { purpose: "fine-tune" } });
    expect(json.status).toBe(400);
    expect((await errorOf(json)).code).toBe("invalid_content_type");
    const broken = await call("POST", "/v1/files", { key, headers: { "content-type": "multipart/form-data; boundary=xyz" }, body: "garbage" });
    expect(broken.status).toBe(400);
    expect((await call("GET", "/v1/files?limit=0", { key })).status).toBe(400);
    expect((await call("GET", "/v1/files?limit=abc", { key })).status).toBe(400);
    const unknownCursor = await call("GET", "/v1/files?after=file-nope", { key });
    expect(unknownCursor.status).toBe(400);
    expect((await errorOf(unknownCursor)).param).toBe("after");
    expect((await call("GET", "/v1/files", { key: "nonsense" })).status).toBe(401);
    const inferenceOnly = await tenantWithKey(["inference"]);
    expect((await call("GET", "/v1/files", { key: inferenceOnly.key })).status).toBe(403);
  });
});
