import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { readSafetensorsFile } from "../checkpoint/safetensors.ts";
import { LINEAR_MODULES, linearShape, type LinearModule } from "../model/weights.ts";
import { Rng } from "../random.ts";
import type { FloatTensor } from "../tensor.ts";
import { gaussianAdapter, orthonormalBasis, smallConfig } from "../testing/pica-fixtures.ts";
import { exportPeft, importPeft, peftTensorName, readPeftDirectory, writePeftDirectory } from "./peft.ts";
import { adapterKey, projectionKey, type PicaAdapter, type SharingMode } from "./types.ts";

const config = smallConfig;
const R_MAX = 6;
const L = config.numLayers;

const testBasis = (targetModules: LinearModule[] = [...LINEAR_MODULES]) => orthonormalBasis(config, { rMax: R_MAX, seed: 21, targetModules });
const basis = testBasis();
const P = (layer: number, module: LinearModule) => basis.projections.get(projectionKey(layer, module))!.data;

const randomData = (rng: Rng, n: number) => Float32Array.from({ length: n }, () => rng.normal());

const randomAdapter = (sharing: SharingMode, rank: number, modules: LinearModule[], seed: number): PicaAdapter =>
  gaussianAdapter(config, { sharing, rank, modules, seed, provenance: {} });

/** A random LoRA (A not in the basis span) for these modules and layers, with rank r. */
function randomLora(modules: LinearModule[], layers: number[], r: number, seed: number, ranks: Partial<Record<LinearModule, number>> = {}) {
  const rng = new Rng(seed);
  const tensors = new Map<string, FloatTensor>();
  for (const layer of layers) {
    for (const module of modules) {
      const [out, inDim] = linearShape(config, module);
      const rank = ranks[module] ?? r;
      tensors.set(peftTensorName(layer, module, "lora_A"), { shape: [rank, inDim], data: randomData(rng, rank * inDim) });
      tensors.set(peftTensorName(layer, module, "lora_B"), { shape: [out, rank], data: randomData(rng, out * rank) });
    }
  }
  return tensors;
}
const loraConfig = (extra: Record<string, unknown> = {}) => ({
  peft_type: "LORA",
  r: 3,
  lora_alpha: 6,
  target_modules: ["q_proj", "down_proj"],
  bias: "none",
  ...extra,
});

/** Dense float64 s·B A [out, in]. */
function denseDelta(tensors: Map<string, FloatTensor>, layer: number, module: LinearModule, scale: number): Float64Array {
  const [out, inDim] = linearShape(config, module);
  const delta = new Float64Array(out * inDim);
  const a = tensors.get(peftTensorName(layer, module, "lora_A"));
  const b = tensors.get(peftTensorName(layer, module, "lora_B"));
  if (a === undefined || b === undefined) return delta;
  const r = a.shape[0];
  for (let o = 0; o < out; o++) {
    for (let i = 0; i < r; i++) {
      for (let k = 0; k < inDim; k++) delta[o * inDim + k] += scale * b.data[o * r + i] * a.data[i * inDim + k];
    }
  }
  return delta;
}

/** Dense X Pᵀ [out, rank] (X [out, in], P [rank, in]) or dense M P [out, in]. */
function matmulTransposed(x: ArrayLike<number>, p: Float32Array, out: number, rank: number, inDim: number): Float64Array {
  const g = new Float64Array(out * rank);
  for (let o = 0; o < out; o++) for (let j = 0; j < rank; j++) for (let k = 0; k < inDim; k++) g[o * rank + j] += x[o * inDim + k] * p[j * inDim + k];
  return g;
}
function matmul(m: ArrayLike<number>, p: Float32Array, out: number, rank: number, inDim: number): Float64Array {
  const y = new Float64Array(out * inDim);
  for (let o = 0; o < out; o++) for (let j = 0; j < rank; j++) for (let k = 0; k < inDim; k++) y[o * inDim + k] += m[o * rank + j] * p[j * inDim + k];
  return y;
}
const maxDiff = (x: ArrayLike<number>, y: ArrayLike<number>) => Math.max(...Array.from(x, (v, i) => Math.abs(v - y[i])));

/** Dense Σ_l ‖ΔW_l − M_l P_l‖ / Σ_l ‖ΔW_l‖ for one module. */
function denseError(adapter: PicaAdapter, tensors: Map<string, FloatTensor>, module: LinearModule, scale: number): number {
  const [out, inDim] = linearShape(config, module);
  let residual = 0;
  let norm = 0;
  for (let layer = 0; layer < L; layer++) {
    const delta = denseDelta(tensors, layer, module, scale);
    const fit = matmul(adapter.m.get(adapterKey(adapter.sharing, module, layer))!.data, P(layer, module), out, adapter.rank, inDim);
    delta.forEach((v, i) => {
      residual += (v - fit[i]) ** 2;
      norm += v * v;
    });
  }
  return Math.sqrt(residual / norm);
}

describe("exportPeft", () => {
  const adapter = randomAdapter("shared", 4, ["q_proj", "down_proj"], 1);
  const { adapterConfig, tensors } = exportPeft(adapter, basis, config, { baseModelName: "HuggingFaceTB/SmolLM2-135M" });

  it("writes PEFT's names, shapes and config", () => {
    expect(adapterConfig).toMatchObject({
      peft_type: "LORA",
      task_type: "CAUSAL_LM",
      base_model_name_or_path: "HuggingFaceTB/SmolLM2-135M",
      r: 4,
      lora_alpha: 4,
      lora_dropout: 0,
      target_modules: ["q_proj", "down_proj"],
      bias: "none",
      fan_in_fan_out: false,
      use_rslora: false,
    });
    const names = [0, 1, 2].flatMap((l) => [
      [`base_model.model.model.layers.${l}.self_attn.q_proj.lora_A.weight`, [4, 16]],
      [`base_model.model.model.layers.${l}.self_attn.q_proj.lora_B.weight`, [16, 4]],
      [`base_model.model.model.layers.${l}.mlp.down_proj.lora_A.weight`, [4, 24]],
      [`base_model.model.model.layers.${l}.mlp.down_proj.lora_B.weight`, [16, 4]],
    ]);
    expect(new Map([...tensors].map(([name, t]) => [name, t.shape]))).toEqual(new Map(names as [string, number[]][]));
  });

  it("uses lora_A = P_l[:r] and lora_B = the shared M in every layer", () => {
    for (let layer = 0; layer < L; layer++) {
      expect(tensors.get(peftTensorName(layer, "down_proj", "lora_A"))!.data).toEqual(P(layer, "down_proj").slice(0, 4 * 24));
      expect(tensors.get(peftTensorName(layer, "down_proj", "lora_B"))!.data).toEqual(adapter.m.get("down_proj")!.data);
    }
  });

  it("writes a directory PEFT can load, and reads it back", async () => {
    const dir = await mkdtemp(join(tmpdir(), "pica-peft-"));
    try {
      await writePeftDirectory(dir, adapter, basis, config);
      expect(JSON.parse(await readFile(join(dir, "adapter_config.json"), "utf8"))).toEqual({ ...adapterConfig, base_model_name_or_path: null });
      expect((await readSafetensorsFile(join(dir, "adapter_model.safetensors"))).metadata).toEqual({ format: "pt" });
      const read = await readPeftDirectory(dir);
      expect(read.tensors).toEqual(tensors);
      await expect(readPeftDirectory(join(dir, "absent"))).rejects.toThrow("adapter_config.json: cannot read it as JSON");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("importPeft", () => {
  it.each(["shared", "per_layer"] as const)("round-trips an exported adapter exactly (%s)", (sharing) => {
    const adapter = randomAdapter(sharing, 5, ["k_proj", "o_proj", "up_proj", "down_proj"], 2);
    const { adapterConfig, tensors } = exportPeft(adapter, basis, config);
    const imported = importPeft(adapterConfig, tensors, basis, config, { sharing, rank: 5 });
    expect(imported.adapter.targetModules).toEqual(LINEAR_MODULES); // modules absent from the LoRA are zero
    for (const [key, m] of adapter.m) expect(maxDiff(imported.adapter.m.get(key)!.data, m.data)).toBeLessThan(1e-6);
    expect(imported.adapter.m.get(adapterKey(sharing, "q_proj", 0))!.data.every((v) => v === 0)).toBe(true);
    for (const module of adapter.targetModules) expect(imported.projectionError[module]).toBeLessThan(1e-6);
    expect(imported.projectionError.q_proj).toBe(0);
  });

  it("projects a LoRA outside the basis span by least squares (per_layer, dense check)", () => {
    const tensors = randomLora(["q_proj", "down_proj"], [0, 1, 2], 3, 3);
    const { adapter, projectionError } = importPeft(loraConfig(), tensors, basis, config, { sharing: "per_layer", rank: 4 });
    for (const module of ["q_proj", "down_proj"] as const) {
      const [out, inDim] = linearShape(config, module);
      for (let layer = 0; layer < L; layer++) {
        const expected = matmulTransposed(denseDelta(tensors, layer, module, 2), P(layer, module), out, 4, inDim);
        expect(maxDiff(adapter.m.get(`${layer}.${module}`)!.data, expected)).toBeLessThan(1e-5);
      }
      const dense = denseError(adapter, tensors, module, 2);
      expect(dense).toBeGreaterThan(0.1); // really outside the span
      expect(Math.abs(projectionError[module] - dense)).toBeLessThan(1e-6);
    }
  });

  it("averages over layers with sharing, absent layers counting as zero (dense check)", () => {
    const tensors = randomLora(["v_proj"], [0, 2], 2, 4);
    const peftConfig = loraConfig({ r: 2, lora_alpha: 3, target_modules: ["v_proj"], layers_to_transform: [0, 2] });
    const { adapter, projectionError } = importPeft(peftConfig, tensors, basis, config, { sharing: "shared", rank: 6 });
    const [out, inDim] = linearShape(config, "v_proj");
    const mean = new Float64Array(out * 6);
    for (let layer = 0; layer < L; layer++) {
      matmulTransposed(denseDelta(tensors, layer, "v_proj", 1.5), P(layer, "v_proj"), out, 6, inDim).forEach((v, i) => (mean[i] += v / L));
    }
    expect(maxDiff(adapter.m.get("v_proj")!.data, mean)).toBeLessThan(1e-5);
    expect(Math.abs(projectionError.v_proj - denseError(adapter, tensors, "v_proj", 1.5))).toBeLessThan(1e-6);
  });

  it("scales by alpha/√r with use_rslora", () => {
    const tensors = randomLora(["q_proj", "down_proj"], [0, 1, 2], 4, 5);
    const plain = importPeft(loraConfig({ r: 4, lora_alpha: 8 }), tensors, basis, config, { sharing: "per_layer", rank: 3 });
    const rslora = importPeft(loraConfig({ r: 4, lora_alpha: 8, use_rslora: true }), tensors, basis, config, { sharing: "per_layer", rank: 3 });
    for (const [key, m] of plain.adapter.m) {
      expect(
        maxDiff(
          rslora.adapter.m.get(key)!.data,
          m.data.map((v) => 2 * v),
        ),
      ).toBeLessThan(1e-5); // (8/√4) / (8/4)
    }
    expect(rslora.projectionError.q_proj).toBeCloseTo(plain.projectionError.q_proj, 9);
  });

  it("honours rank_pattern and alpha_pattern", () => {
    const tensors = randomLora(["q_proj", "down_proj"], [0, 1, 2], 3, 6, { down_proj: 5 });
    const peftConfig = loraConfig({ rank_pattern: { down_proj: 5 }, alpha_pattern: { "mlp.down_proj": 2 } });
    const { adapter, projectionError } = importPeft(peftConfig, tensors, basis, config, { sharing: "per_layer", rank: 4 });
    const [out, inDim] = linearShape(config, "down_proj");
    const expected = matmulTransposed(denseDelta(tensors, 1, "down_proj", 2 / 5), P(1, "down_proj"), out, 4, inDim);
    expect(maxDiff(adapter.m.get("1.down_proj")!.data, expected)).toBeLessThan(1e-5);
    expect(Math.abs(projectionError.down_proj - denseError(adapter, tensors, "down_proj", 2 / 5))).toBeLessThan(1e-6);
    expect(() => importPeft(loraConfig(), tensors, basis, config, { sharing: "per_layer", rank: 4 })).toThrow(
      "tensor base_model.model.model.layers.0.mlp.down_proj.lora_A.weight: has shape [5, 24], expected [3, 24] (r, in)",
    );
  });

  it("accepts PEFT's regex and all-linear target_modules", () => {
    const some = randomLora(["q_proj", "down_proj"], [0, 1, 2], 3, 7);
    const regex = ".*\\.(q_proj|down_proj)";
    expect(() => importPeft(loraConfig({ target_modules: regex }), some, basis, config, { sharing: "shared", rank: 2 })).not.toThrow();
    expect(() => importPeft(loraConfig({ target_modules: ".*\\.q_proj" }), some, basis, config, { sharing: "shared", rank: 2 })).toThrow("is not targeted");
    const all = randomLora([...LINEAR_MODULES], [0, 1, 2], 3, 7);
    expect(() => importPeft(loraConfig({ target_modules: "all-linear" }), all, basis, config, { sharing: "shared", rank: 2 })).not.toThrow();
    expect(() => importPeft(loraConfig({ target_modules: "all-linear" }), some, basis, config, { sharing: "shared", rank: 2 })).toThrow(
      "k_proj.lora_A.weight: is missing",
    );
  });

  describe("rejects what it cannot import, naming the field or tensor", () => {
    const tensors = randomLora(["q_proj", "down_proj"], [0, 1, 2], 3, 8);
    const q0A = peftTensorName(0, "q_proj", "lora_A");
    const edit = (change: (t: Map<string, FloatTensor>) => void) => {
      const copy = new Map(tensors);
      change(copy);
      return copy;
    };
    const cases: [string, unknown, Map<string, FloatTensor>, string][] = [
      ["not LoRA", loraConfig({ peft_type: "IA3" }), tensors, 'adapter_config.json: peft_type: is "IA3", only "LORA"'],
      ["a bias", loraConfig({ bias: "all" }), tensors, 'adapter_config.json: bias: is "all"; a bias is not representable'],
      ["fan_in_fan_out", loraConfig({ fan_in_fan_out: true }), tensors, "adapter_config.json: fan_in_fan_out: is true"],
      ["DoRA", loraConfig({ use_dora: true }), tensors, "adapter_config.json: use_dora: is true"],
      ["modules_to_save", loraConfig({ modules_to_save: ["lm_head"] }), tensors, "adapter_config.json: modules_to_save: fully trained modules [lm_head]"],
      ["missing r", { ...loraConfig(), r: undefined }, tensors, "adapter_config.json: r:"],
      [
        "a non-linear target",
        loraConfig({ target_modules: ["q_proj", "down_proj", "lm_head"] }),
        tensors,
        'adapter_config.json: target_modules: "lm_head" is not a decoder linear module',
      ],
      ["a bad regex", loraConfig({ target_modules: "(q_proj" }), tensors, "adapter_config.json: target_modules: is not a valid regular expression"],
      [
        "a missing lora_B",
        loraConfig(),
        edit((t) => t.delete(peftTensorName(2, "down_proj", "lora_B"))),
        "tensor base_model.model.model.layers.2.mlp.down_proj.lora_B.weight: is missing (its lora_A is present)",
      ],
      [
        "a targeted module without tensors",
        loraConfig({ target_modules: ["q_proj", "v_proj", "down_proj"] }),
        tensors,
        "tensor base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight: is missing (adapter_config.json targets this module)",
      ],
      [
        "an untargeted tensor",
        loraConfig({ target_modules: ["q_proj"] }),
        tensors,
        "tensor base_model.model.model.layers.0.mlp.down_proj.lora_A.weight: is not targeted",
      ],
      [
        "an extra tensor",
        loraConfig(),
        edit((t) => t.set("base_model.model.lm_head.lora_A.weight", { shape: [3, 16], data: new Float32Array(48) })),
        "tensor base_model.model.lm_head.lora_A.weight: is not a lora_A/lora_B weight",
      ],
      [
        "a wrong block",
        loraConfig(),
        edit((t) => t.set("base_model.model.model.layers.0.mlp.q_proj.lora_A.weight", t.get(q0A)!)),
        "tensor base_model.model.model.layers.0.mlp.q_proj.lora_A.weight: is not a lora_A/lora_B weight",
      ],
      [
        "a layer beyond the model",
        loraConfig(),
        edit((t) => t.set(peftTensorName(3, "q_proj", "lora_A"), t.get(q0A)!)),
        "tensor base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight: layer 3 is beyond the model's 3 layers",
      ],
      [
        "a shape mismatch",
        loraConfig(),
        edit((t) => t.set(q0A, { shape: [3, 8], data: new Float32Array(24) })),
        `tensor ${q0A}: has shape [3, 8], expected [3, 16] (r, in)`,
      ],
      [
        "a NaN",
        loraConfig(),
        edit((t) => t.set(q0A, { shape: [3, 16], data: new Float32Array(48).fill(Number.NaN) })),
        `tensor ${q0A}: value NaN at index 0 is not finite`,
      ],
      ["no tensors", loraConfig(), new Map(), "adapter_model.safetensors: has no LoRA tensors"],
    ];
    it.each(cases)("%s", (_, peftConfig, input, message) => {
      expect(() => importPeft(peftConfig, input, basis, config, { sharing: "shared", rank: 4 })).toThrow(message);
    });

    it("a module outside the basis", () => {
      const narrow = testBasis(["q_proj", "v_proj"]);
      expect(() => importPeft(loraConfig(), tensors, narrow, config, { sharing: "shared", rank: 4 })).toThrow(
        "tensor base_model.model.model.layers.0.mlp.down_proj.lora_A.weight: module down_proj is not in the basis target modules [q_proj, v_proj]",
      );
    });

    it("an import rank above rMax", () => {
      expect(() => importPeft(loraConfig(), tensors, basis, config, { sharing: "shared", rank: 7 })).toThrow("import rank 7 must be an integer in [1, 6]");
    });
  });
});
