import { env } from "cloudflare:test";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { PEFT_IMPORT_REPORT_HEADER, PEFT_PATHS, type PeftImportReport } from "../../src/protocol/runner.ts";
import { sha256Hex } from "../src/auth/keys.ts";
import { installFakeRunners, type RunnerHandler } from "./fake-runners.ts";
import { call, errorOf, tenantWithKey } from "./helpers.ts";

const PICA_BYTES = new TextEncoder().encode("pica-adapter-bytes-standing-in-for-safetensors");
const REPORT: PeftImportReport = {
  rank: 8,
  sharing: "shared",
  basis_id: "basis-1",
  lora_r: 16,
  lora_alpha: 32,
  base_model_name_or_path: "elsewhere/base",
  projection_error: { q_proj: 0.12, v_proj: 0.3 },
  max_projection_error: 0.3,
};

let restore: () => void = () => undefined;
let seen: { runner: string; path: string; authorization: string | null; form?: FormData; bytes?: Uint8Array }[];
beforeEach(async () => {
  await env.DB.prepare("DELETE FROM runners").run();
  seen = [];
});
afterEach(() => restore());

/** Runner A fails (5xx); runner B converts as a real runner would answer. */
function fakeConverters(overrides: Partial<Record<"a" | "b", RunnerHandler>> = {}) {
  const broken: RunnerHandler = async (request) => {
    seen.push({ runner: "a", path: new URL(request.url).pathname, authorization: request.headers.get("authorization") });
    return new Response("boom", { status: 500 });
  };
  const converter: RunnerHandler = async (request) => {
    const path = new URL(request.url).pathname;
    if (path === PEFT_PATHS.import) {
      seen.push({ runner: "b", path, authorization: request.headers.get("authorization"), form: await request.formData() });
      return new Response(PICA_BYTES, { headers: { "x-content-sha256": await sha256Hex(PICA_BYTES), [PEFT_IMPORT_REPORT_HEADER]: JSON.stringify(REPORT) } });
    }
    seen.push({ runner: "b", path, authorization: request.headers.get("authorization"), bytes: new Uint8Array(await request.arrayBuffer()) });
    const files = new FormData();
    files.append("adapter_config", new Blob(['{"peft_type": "LORA", "r": 8}'], { type: "application/json" }), "adapter_config.json");
    files.append("adapter_model", new Blob([new Uint8Array([1, 2, 3])]), "adapter_model.safetensors");
    return new Response(files);
  };
  restore = installFakeRunners({ "http://runner-a.test": overrides.a ?? broken, "http://runner-b.test": overrides.b ?? converter });
}

const peftForm = (fields: Record<string, string | Blob> = {}) => {
  const form = new FormData();
  form.append(
    "adapter_config",
    new Blob(['{"peft_type": "LORA", "r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "v_proj"]}'], { type: "application/json" }),
    "adapter_config.json",
  );
  form.append("adapter_model", new Blob([new Uint8Array([7, 7, 7])]), "adapter_model.safetensors");
  form.append("name", "support-bot");
  for (const [name, value] of Object.entries(fields)) form.set(name, value);
  return form;
};

describe("PEFT import", () => {
  it("has a runner project the upload, stores the adapter in R2 with an adapters row, and reports the projection error", async () => {
    fakeConverters();
    const { tenantId, key } = await tenantWithKey(["fine_tuning"]);
    const response = await call("POST", "/v1/adapters/import", { key, body: peftForm({ sharing: "shared", rank: "8" }) });
    expect(response.status).toBe(201);
    const adapter = (await response.json()) as { id: string; sha256: string; bytes: number; import_report: PeftImportReport };
    expect(adapter).toMatchObject({
      object: "adapter",
      source: "peft_import",
      status: "ready",
      rank: 8,
      sharing: "shared",
      basis_id: "basis-1",
      base_model: env.BASE_MODEL,
      bytes: PICA_BYTES.length,
    });
    expect(adapter.id).toMatch(new RegExp(`^peft:${env.BASE_MODEL}:${tenantId}:support-bot:imp[A-Za-z0-9]{24}$`));
    expect(adapter.import_report).toEqual(REPORT);

    // Runner A failed and runner B took it, with the runner secret and the tenant's files.
    expect(seen.map((s) => s.runner)).toEqual(["a", "b"]);
    expect(seen.every((s) => s.authorization === `Bearer ${env.RUNNER_SECRET}`)).toBe(true);
    const form = seen[1].form!;
    expect(await (form.get("adapter_config") as File).text()).toContain('"lora_alpha": 32');
    expect([...new Uint8Array(await (form.get("adapter_model") as File).arrayBuffer())]).toEqual([7, 7, 7]);
    expect(form.get("rank")).toBe("8");

    const row = await env.DB.prepare("SELECT * FROM adapters WHERE id = ?")
      .bind(adapter.id)
      .first<{ tenant_id: string; blob_key: string; sha256: string; source: string; import_report: string }>();
    expect(row).toMatchObject({ tenant_id: tenantId, source: "peft_import", sha256: await sha256Hex(PICA_BYTES) });
    expect(JSON.parse(row!.import_report)).toEqual(REPORT);
    expect(row!.blob_key.startsWith(`tenants/${tenantId}/`)).toBe(true);
    const blob = await env.BLOBS.get(row!.blob_key);
    expect(new Uint8Array(await blob!.arrayBuffer())).toEqual(PICA_BYTES);
  });

  it("refuses bad uploads with 400s naming the part, passes a runner's verdict through, and says 503 when no runner converts", async () => {
    fakeConverters();
    const { key } = await tenantWithKey(["fine_tuning"]);
    const withoutModel = peftForm();
    withoutModel.delete("adapter_model");
    const cases: [BodyInit, string | null][] = [
      [withoutModel, "adapter_model"],
      [peftForm({ name: "has spaces" }), "name"],
      [peftForm({ rank: "0" }), "rank"],
      [peftForm({ sharing: "sometimes" }), "sharing"],
      ["not a form", null],
    ];
    for (const [body, param] of cases) {
      const response = await call("POST", "/v1/adapters/import", { key, body });
      expect(response.status, String(param)).toBe(400);
      expect((await errorOf(response)).param).toBe(param);
    }
    expect(seen).toEqual([]); // nothing reached a runner

    restore();
    fakeConverters({
      b: () =>
        Response.json(
          { error: { message: "adapter_config.json: use_dora: is true", type: "invalid_request_error", param: null, code: "peft_not_importable" } },
          { status: 400 },
        ),
    });
    const refused = await call("POST", "/v1/adapters/import", { key, body: peftForm() });
    expect(refused.status).toBe(400);
    expect(await errorOf(refused)).toMatchObject({ code: "peft_not_importable", message: expect.stringContaining("use_dora") });

    restore();
    fakeConverters({
      b: () => {
        throw new TypeError("connection refused");
      },
    });
    const unavailable = await call("POST", "/v1/adapters/import", { key, body: peftForm() });
    expect(unavailable.status).toBe(503);
    expect(
      await env.DB.prepare("SELECT count(*) AS n FROM adapters WHERE source = 'peft_import' AND tenant_id = (SELECT tenant_id FROM api_keys WHERE prefix = ?)")
        .bind(`${key.slice(0, 20)}…`)
        .first("n"),
    ).toBe(0);
  });
});

describe("PEFT export", () => {
  it("sends the stored adapter to a runner and answers its PEFT files; another tenant gets 404", async () => {
    fakeConverters();
    const owner = await tenantWithKey(["fine_tuning"]);
    const imported = (await (await call("POST", "/v1/adapters/import", { key: owner.key, body: peftForm() })).json()) as { id: string };
    seen = [];
    const exported = await call("GET", `/v1/adapters/${encodeURIComponent(imported.id)}/export`, { key: owner.key });
    expect(exported.status).toBe(200);
    expect(exported.headers.get("content-type")).toMatch(/^multipart\/form-data; boundary=/);
    const files = await exported.formData();
    expect(JSON.parse(await (files.get("adapter_config") as File).text())).toMatchObject({ peft_type: "LORA" });
    expect((files.get("adapter_model") as File).name).toBe("adapter_model.safetensors");
    const sent = seen.find((s) => s.path === PEFT_PATHS.export && s.runner === "b")!;
    expect(sent.bytes).toEqual(PICA_BYTES);

    const other = await tenantWithKey(["fine_tuning", "inference", "admin"]);
    const hidden = await call("GET", `/v1/adapters/${encodeURIComponent(imported.id)}/export`, { key: other.key });
    expect(hidden.status).toBe(404);
    expect((await errorOf(hidden)).code).toBe("adapter_not_found");
    expect((await call("GET", "/v1/adapters/nope/export", { key: owner.key })).status).toBe(404);
    const inferenceOnly = await tenantWithKey(["inference"]);
    expect((await call("GET", `/v1/adapters/${encodeURIComponent(imported.id)}/export`, { key: inferenceOnly.key })).status).toBe(403);
  });
});
