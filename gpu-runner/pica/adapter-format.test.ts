import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseSafetensors, serializeSafetensors, type SafetensorsFile } from "../checkpoint/safetensors.ts";
import { parseModelConfig } from "../model/config.ts";
import type { LinearModule } from "../model/weights.ts";
import { gaussianAdapter, SMALL_CONFIG_JSON, smallConfig } from "../testing/pica-fixtures.ts";
import { adapterTensorName, parseAdapter, readAdapterFile, serializeAdapter, tensorsSha256, validateAdapterFor, writeAdapterFile } from "./adapter-format.ts";
import { adapterKey, type PicaAdapter, type SharingMode } from "./types.ts";

const RAW_CONFIG = SMALL_CONFIG_JSON;
const config = smallConfig;
const FILE = "tenant.safetensors";

const randomAdapter = (sharing: SharingMode, rank: number, modules: LinearModule[], seed = 1): PicaAdapter =>
  gaussianAdapter(config, { sharing, rank, modules, seed, provenance: { job: "j1", steps: 3 } });

/** Re-encodes a valid adapter file after `mutate` edits its metadata or tensors. */
function rewrite(bytes: Uint8Array, mutate: (file: SafetensorsFile) => void): Uint8Array {
  const file = parseSafetensors(bytes, FILE);
  mutate(file);
  return serializeSafetensors(file.tensors, file.metadata);
}

const shared = randomAdapter("shared", 4, ["q_proj", "v_proj", "down_proj"]);
const good = serializeAdapter(shared);

describe("adapter file round trip", () => {
  it.each(["shared", "per_layer"] as const)("keeps every value and field exactly (%s)", (sharing) => {
    const adapter = randomAdapter(sharing, 3, ["k_proj", "gate_proj"], 7);
    const parsed = parseAdapter(serializeAdapter(adapter), FILE);
    expect(parsed).toEqual(adapter);
    expect(serializeAdapter(parsed)).toEqual(serializeAdapter(adapter));
  });

  it("stores the documented tensor names and metadata", () => {
    const file = parseSafetensors(serializeAdapter(randomAdapter("per_layer", 2, ["o_proj"])), FILE);
    expect([...file.tensors.keys()].sort()).toEqual(["pica.layers.0.o_proj.M", "pica.layers.1.o_proj.M", "pica.layers.2.o_proj.M"]);
    expect(file.tensors.get("pica.layers.1.o_proj.M")).toMatchObject({ dtype: "F32", shape: [16, 2] });
    const metadata = parseSafetensors(good, FILE).metadata;
    expect(metadata).toEqual({
      format: "pica-adapter",
      format_version: "1",
      base_fingerprint: "base-1",
      basis_id: "basis-a",
      rank: "4",
      target_modules: '["q_proj","v_proj","down_proj"]',
      sharing: "shared",
      provenance: '{"job":"j1","steps":3}',
      tensors_sha256: tensorsSha256(shared),
    });
    expect(adapterTensorName("shared", "up_proj", 5)).toBe("pica.up_proj.M");
  });

  it("hashes names, shapes and values", () => {
    const changed = randomAdapter("shared", 4, ["q_proj", "v_proj", "down_proj"]);
    changed.m.get("v_proj")!.data[3] += 1e-3;
    expect(tensorsSha256(changed)).not.toBe(tensorsSha256(shared));
    expect(tensorsSha256(shared)).toMatch(/^[0-9a-f]{64}$/);
  });

  it("writes and reads a file", async () => {
    const dir = await mkdtemp(join(tmpdir(), "pica-adapter-"));
    try {
      const path = join(dir, "a.safetensors");
      await writeAdapterFile(path, shared);
      expect(await readAdapterFile(path)).toEqual(shared);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("malformed adapter files are rejected, naming the field", () => {
  const cases: [string, (file: SafetensorsFile) => void, RegExp][] = [
    ["wrong format", (f) => (f.metadata.format = "lora"), /metadata\.format: is "lora"/],
    ["bad version", (f) => (f.metadata.format_version = "2"), /metadata\.format_version: "2" is not supported/],
    ["bad JSON in target_modules", (f) => (f.metadata.target_modules = "[q_proj"), /metadata\.target_modules: is not valid JSON/],
    ["unknown module", (f) => (f.metadata.target_modules = '["q_proj","lm_head"]'), /metadata\.target_modules: "lm_head" is not a linear module/],
    ["empty modules", (f) => (f.metadata.target_modules = "[]"), /metadata\.target_modules: must be a non-empty array/],
    ["duplicate module", (f) => (f.metadata.target_modules = '["q_proj","q_proj"]'), /metadata\.target_modules: q_proj appears twice/],
    ["rank not an integer", (f) => (f.metadata.rank = "4.0"), /metadata\.rank: must be a positive integer/],
    ["rank zero", (f) => (f.metadata.rank = "0"), /metadata\.rank: must be a positive integer/],
    ["bad sharing", (f) => (f.metadata.sharing = "both"), /metadata\.sharing: must be "shared" or "per_layer"/],
    ["provenance not an object", (f) => (f.metadata.provenance = "[1]"), /metadata\.provenance: must be a JSON object/],
    ["bad sha field", (f) => (f.metadata.tensors_sha256 = "xyz"), /metadata\.tensors_sha256: must be 64/],
    ["missing tensor", (f) => f.tensors.delete("pica.v_proj.M"), /tensor pica\.v_proj\.M: is missing/],
    [
      "extra tensor",
      (f) => f.tensors.set("pica.k_proj.M", { dtype: "F32", shape: [8, 4], data: new Float32Array(32) }),
      /tensor pica\.k_proj\.M: is not expected for shared modules/,
    ],
    [
      "wrong tensor name",
      (f) => f.tensors.set("pica.q_proj.lora_A", { dtype: "F32", shape: [1], data: new Float32Array(1) }),
      /tensor pica\.q_proj\.lora_A: is not an adapter tensor/,
    ],
    [
      "per-layer tensor in a shared file",
      (f) => f.tensors.set("pica.layers.0.q_proj.M", { dtype: "F32", shape: [16, 4], data: new Float32Array(64) }),
      /tensor pica\.layers\.0\.q_proj\.M: is per-layer but the adapter's sharing is shared/,
    ],
    [
      "shape mismatch",
      (f) => f.tensors.set("pica.q_proj.M", { dtype: "F32", shape: [16, 3], data: new Float32Array(48) }),
      /tensor pica\.q_proj\.M: has shape \[16, 3\], expected \[out, 4\]/,
    ],
    ["NaN value", (f) => (f.tensors.get("pica.down_proj.M")!.data[5] = Number.NaN), /tensor pica\.down_proj\.M: value NaN at index 5/],
    ["Inf value", (f) => (f.tensors.get("pica.q_proj.M")!.data[0] = -Infinity), /tensor pica\.q_proj\.M: value -Infinity at index 0/],
    ["half-precision tensor", (f) => (f.tensors.get("pica.q_proj.M")!.dtype = "F16"), /tensor pica\.q_proj\.M: has dtype F16, expected F32/],
  ];
  it.each(cases)("%s", (_, mutate, message) => {
    expect(() => parseAdapter(rewrite(good, mutate), FILE)).toThrow(new RegExp(`^${FILE}: ${message.source}`));
  });

  it.each(["format", "format_version", "base_fingerprint", "basis_id", "rank", "target_modules", "sharing", "provenance", "tensors_sha256"])(
    "missing metadata.%s",
    (field) => {
      const bytes = rewrite(good, (f) => delete f.metadata[field]);
      expect(() => parseAdapter(bytes, FILE)).toThrow(`${FILE}: metadata.${field}: is missing`);
    },
  );

  it("a per_layer file missing one layer's tensor", () => {
    const bytes = rewrite(serializeAdapter(randomAdapter("per_layer", 2, ["q_proj", "o_proj"])), (f) => f.tensors.delete("pica.layers.1.o_proj.M"));
    expect(() => parseAdapter(bytes, FILE)).toThrow(`${FILE}: tensor pica.layers.1.o_proj.M: is missing`);
  });

  it("a per_layer file whose layers disagree on a module's out dimension", () => {
    const bytes = rewrite(serializeAdapter(randomAdapter("per_layer", 2, ["q_proj"])), (f) =>
      f.tensors.set("pica.layers.2.q_proj.M", { dtype: "F32", shape: [8, 2], data: new Float32Array(16) }),
    );
    expect(() => parseAdapter(bytes, FILE)).toThrow(/tensor pica\.layers\.2\.q_proj\.M: has 8 output rows but pica\.layers\.1\.q_proj\.M has 16/);
  });

  it("a flipped byte in a tensor fails the sha256 check", () => {
    const bytes = good.slice();
    const headerLength = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    bytes[8 + headerLength] ^= 1; // lowest mantissa bit of the first value: still finite
    expect(() => parseAdapter(bytes, FILE)).toThrow(new RegExp(`^${FILE}: metadata\\.tensors_sha256: is [0-9a-f]{64} but the tensors hash to`));
  });

  it("serializing an in-memory adapter checks it too", () => {
    const broken = randomAdapter("shared", 4, ["q_proj"]);
    broken.m.get("q_proj")!.data[2] = Number.NaN;
    expect(() => serializeAdapter(broken)).toThrow(/<adapter>: tensor pica\.q_proj\.M: value NaN at index 2/);
  });
});

describe("validateAdapterFor", () => {
  const basis = {
    id: "basis-a",
    baseFingerprint: "base-1",
    rMax: 4,
    numLayers: 3,
    targetModules: ["q_proj", "k_proj", "v_proj", "down_proj"] as LinearModule[],
  };
  it("accepts an adapter that fits", () => {
    expect(() => validateAdapterFor(shared, { config, basis })).not.toThrow();
    expect(() => validateAdapterFor(randomAdapter("per_layer", 2, ["k_proj"]), { config, basis })).not.toThrow();
  });
  it("names both basis ids on a mismatch", () => {
    expect(() => validateAdapterFor(shared, { config, basis: { ...basis, id: "basis-b" } })).toThrow(
      "adapter basis id basis-a differs from the runner's basis id basis-b",
    );
  });
  it("refuses another base model", () => {
    expect(() => validateAdapterFor(shared, { config, basis: { ...basis, baseFingerprint: "base-2" } })).toThrow(
      "adapter base fingerprint base-1 differs from the runner's base-2",
    );
  });
  it("refuses a rank above rMax", () => {
    expect(() => validateAdapterFor(shared, { config, basis: { ...basis, rMax: 3 } })).toThrow("adapter rank 4 exceeds the basis rMax 3");
  });
  it("refuses a module outside the basis", () => {
    expect(() => validateAdapterFor(randomAdapter("shared", 2, ["gate_proj"]), { config, basis })).toThrow(
      "module gate_proj is not in the basis target modules",
    );
  });
  it("refuses a wrong out dimension", () => {
    const wide = parseModelConfig({ ...RAW_CONFIG, hidden_size: 32 });
    expect(() => validateAdapterFor(shared, { config: wide, basis })).toThrow("tensor pica.q_proj.M has shape [16, 4], expected [32, 4]");
  });
  it("refuses a per_layer adapter with the wrong layer count", () => {
    const adapter = randomAdapter("per_layer", 2, ["q_proj"]);
    adapter.m.delete(adapterKey("per_layer", "q_proj", 2));
    expect(() => validateAdapterFor(adapter, { config, basis })).toThrow("per_layer adapter has 2 layers, the basis has 3");
  });
});
