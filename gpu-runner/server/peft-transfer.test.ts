import { Hono } from "hono";
import { HTTPException } from "hono/http-exception";
import { describe, expect, it } from "vitest";
import { PEFT_IMPORT_REPORT_HEADER, PEFT_PATHS, peftImportReportSchema } from "../../src/protocol/runner.ts";
import { parseSafetensors, serializeSafetensors } from "../checkpoint/safetensors.ts";
import { linearShape } from "../model/weights.ts";
import { parseAdapter, serializeAdapter } from "../pica/adapter-format.ts";
import { peftTensorName } from "../pica/peft.ts";
import { Rng } from "../random.ts";
import type { FloatTensor } from "../tensor.ts";
import { gaussianAdapter, orthonormalBasis, smallConfig } from "../testing/pica-fixtures.ts";
import { toApiError } from "./api-errors.ts";
import { internalRoutes } from "./internal-routes.ts";
import { runnerAuth } from "./runner-auth.ts";

const config = smallConfig;
const basis = orthonormalBasis(config, { rMax: 6, seed: 5 });
const SECRET = "peft-runner-secret";
const auth = { authorization: `Bearer ${SECRET}` };

// The internal sub-app alone, with the runner's error mapping: no engine is needed to convert.
const app = new Hono();
app.onError((error, c) => {
  if (error instanceof HTTPException) return error.getResponse();
  const api = toApiError(error);
  return c.json(api.toBody(), api.status as 400);
});
app.use(runnerAuth(SECRET));
app.route(
  "/internal",
  internalRoutes({ jobs: null, adapters: null, publishAdapter: null, peft: { basis, config, baseModelName: "tiny-base", defaultRank: 4 } }),
);

const peftForm = (config: unknown, model: Uint8Array, extra: Record<string, string> = {}) => {
  const form = new FormData();
  form.append("adapter_config", new Blob([typeof config === "string" ? config : JSON.stringify(config)], { type: "application/json" }), "adapter_config.json");
  form.append("adapter_model", new Blob([new Uint8Array(model)]), "adapter_model.safetensors");
  for (const [name, value] of Object.entries(extra)) form.append(name, value);
  return form;
};
const post = (path: string, body: FormData | string | Uint8Array, headers: Record<string, string> = auth) =>
  Promise.resolve(app.request(path, { method: "POST", headers, body }));
const errorOf = async (response: Response) => ((await response.json()) as { error: { param: string | null; code: string | null; message: string } }).error;

function randomLora(r: number, seed: number): Uint8Array {
  const rng = new Rng(seed);
  const tensors = new Map<string, FloatTensor>();
  for (let layer = 0; layer < config.numLayers; layer++) {
    for (const module of ["q_proj", "down_proj"] as const) {
      const [out, inDim] = linearShape(config, module);
      tensors.set(peftTensorName(layer, module, "lora_A"), { shape: [r, inDim], data: Float32Array.from({ length: r * inDim }, () => rng.normal()) });
      tensors.set(peftTensorName(layer, module, "lora_B"), { shape: [out, r], data: Float32Array.from({ length: out * r }, () => rng.normal()) });
    }
  }
  return serializeSafetensors(tensors, { format: "pt" });
}

describe("the runner's PEFT import and export routes", () => {
  it("exports a PiCa adapter as PEFT files that import back exactly", async () => {
    const adapter = {
      ...gaussianAdapter(config, { sharing: "shared", rank: 4, modules: [...basis.targetModules], seed: 9, provenance: {} }),
      basisId: basis.id,
      baseFingerprint: basis.baseFingerprint,
    };
    const exported = await post(PEFT_PATHS.export, new Uint8Array(serializeAdapter(adapter)));
    expect(exported.status).toBe(200);
    const files = await exported.formData();
    const adapterConfig = JSON.parse(await (files.get("adapter_config") as File).text()) as Record<string, unknown>;
    expect(adapterConfig).toMatchObject({ peft_type: "LORA", r: 4, lora_alpha: 4, base_model_name_or_path: "tiny-base" });
    const model = new Uint8Array(await (files.get("adapter_model") as File).arrayBuffer());
    expect((files.get("adapter_model") as File).name).toBe("adapter_model.safetensors");
    expect(parseSafetensors(model, "x").tensors.has(peftTensorName(0, "q_proj", "lora_A"))).toBe(true);

    const imported = await post(PEFT_PATHS.import, peftForm(adapterConfig, model, { rank: "4" }));
    expect(imported.status).toBe(200);
    const report = peftImportReportSchema.parse(JSON.parse(imported.headers.get(PEFT_IMPORT_REPORT_HEADER)!));
    expect(report).toMatchObject({ rank: 4, sharing: "shared", basis_id: basis.id, lora_r: 4 });
    expect(report.max_projection_error).toBeLessThan(1e-5);
    const bytes = new Uint8Array(await imported.arrayBuffer());
    const digest = Buffer.from(await crypto.subtle.digest("SHA-256", bytes)).toString("hex");
    expect(imported.headers.get("x-content-sha256")).toBe(digest);
    const roundTrip = parseAdapter(bytes, "imported");
    for (const [key, m] of adapter.m) {
      const back = roundTrip.m.get(key)!.data;
      expect(Math.max(...Array.from(m.data, (v, i) => Math.abs(v - back[i])))).toBeLessThan(1e-5);
    }
  });

  it("projects a foreign LoRA onto the basis, at the runner's default import rank, and reports the error", async () => {
    const response = await post(
      PEFT_PATHS.import,
      peftForm({ peft_type: "LORA", r: 3, lora_alpha: 6, target_modules: ["q_proj", "down_proj"], base_model_name_or_path: "elsewhere" }, randomLora(3, 2), {
        sharing: "per_layer",
      }),
    );
    expect(response.status).toBe(200);
    const report = peftImportReportSchema.parse(JSON.parse(response.headers.get(PEFT_IMPORT_REPORT_HEADER)!));
    expect(report).toMatchObject({ rank: 4, sharing: "per_layer", lora_r: 3, lora_alpha: 6, base_model_name_or_path: "elsewhere" });
    expect(Object.keys(report.projection_error)).toEqual(expect.arrayContaining(["q_proj", "down_proj"]));
    expect(report.projection_error.q_proj).toBeGreaterThan(0.01); // random A is outside the span
    expect(report.projection_error.q_proj).toBeLessThan(1);
    expect(report.max_projection_error).toBe(Math.max(...Object.values(report.projection_error)));
    expect(parseAdapter(new Uint8Array(await response.arrayBuffer()), "x")).toMatchObject({ rank: 4, sharing: "per_layer", basisId: basis.id });
  });

  it("answers bad uploads with 400s that name the part, and wrong secrets with 401", async () => {
    const lora = randomLora(2, 3);
    const good = { peft_type: "LORA", r: 2, lora_alpha: 2, target_modules: ["q_proj", "down_proj"] };
    const missing = new FormData();
    missing.append("adapter_config", JSON.stringify(good));
    const cases: [FormData | string, string | null, RegExp][] = [
      [missing, "adapter_model", /adapter_model/],
      [peftForm("{not json", lora), "adapter_config", /not JSON/],
      [peftForm(good, new Uint8Array([1, 2, 3])), "adapter_model", /.+/],
      [peftForm(good, lora, { rank: "7" }), "rank", /rank 7 is above 6, .*the rows of the runner's PiCa basis, 6/],
      [peftForm(good, lora, { rank: "zero" }), "rank", /.+/],
      [peftForm(good, lora, { sharing: "none" }), "sharing", /.+/],
      [peftForm({ ...good, use_dora: true }, lora), null, /use_dora/],
      // Nested deeper than JSON.stringify can go: still a readable refusal, not a crash.
      [peftForm(`{"peft_type": ${"[".repeat(100_000)}${"]".repeat(100_000)}}`, lora), null, /peft_type/],
      ["plain text", null, /multipart/],
    ];
    for (const [body, param, message] of cases) {
      const response = await post(PEFT_PATHS.import, body);
      expect(response.status, String(param)).toBe(400);
      const error = await errorOf(response);
      expect(error.param).toBe(param);
      expect(error.message).toMatch(message);
    }
    const garbage = await post(PEFT_PATHS.export, new Uint8Array([9, 9, 9, 9]));
    expect(garbage.status).toBe(400);
    expect((await errorOf(garbage)).code).toBe("adapter_invalid");
    const foreign = gaussianAdapter(config, { sharing: "shared", rank: 2, modules: [...basis.targetModules], seed: 1, provenance: {} });
    const mismatch = await post(
      PEFT_PATHS.export,
      new Uint8Array(serializeAdapter({ ...foreign, basisId: "another-basis", baseFingerprint: basis.baseFingerprint })),
    );
    expect((await errorOf(mismatch)).code).toBe("adapter_basis_mismatch");
    expect((await post(PEFT_PATHS.import, peftForm(good, lora), {})).status).toBe(401);
    expect((await post(PEFT_PATHS.export, new Uint8Array(4), { authorization: "Bearer nope" })).status).toBe(401);
  });
});
