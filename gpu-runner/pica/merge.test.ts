import { describe, expect, it } from "vitest";
import { linearShape, type LinearModule } from "../model/weights.ts";
import { gaussianAdapter, orthonormalBasis, smallConfig } from "../testing/pica-fixtures.ts";
import { validateAdapterFor } from "./adapter-format.ts";
import { mergeAdapters, zeroAdapter } from "./merge.ts";
import { adapterKey, projectionKey, type Basis, type PicaAdapter, type SharingMode } from "./types.ts";

const config = smallConfig;
const R_MAX = 6;

const testBasis = (seed = 11): Basis => orthonormalBasis(config, { rMax: R_MAX, seed });
const basis = testBasis();

const randomAdapter = (sharing: SharingMode, rank: number, modules: LinearModule[], seed: number): PicaAdapter =>
  gaussianAdapter(config, { sharing, rank, modules, seed });

/** Dense ΔW = M P[:rank] [out, in] in float64; zero when the adapter does not target the module. */
function deltaW(adapter: PicaAdapter, layer: number, module: LinearModule): Float64Array {
  const [out, inDim] = linearShape(config, module);
  const delta = new Float64Array(out * inDim);
  const m = adapter.m.get(adapterKey(adapter.sharing, module, layer));
  if (m === undefined) return delta;
  const p = basis.projections.get(projectionKey(layer, module))!.data;
  for (let o = 0; o < out; o++) {
    for (let j = 0; j < adapter.rank; j++) {
      for (let i = 0; i < inDim; i++) delta[o * inDim + i] += m.data[o * adapter.rank + j] * p[j * inDim + i];
    }
  }
  return delta;
}

const m = (adapter: PicaAdapter, module: LinearModule, layer = 0) => adapter.m.get(adapterKey(adapter.sharing, module, layer))!;

describe("mergeAdapters", () => {
  it("computes Σ wᵢ Mᵢ exactly (float64 sum, one rounding)", () => {
    const a = randomAdapter("shared", 4, ["q_proj", "up_proj"], 1);
    const b = randomAdapter("shared", 4, ["q_proj", "up_proj"], 2);
    const merged = mergeAdapters([
      { adapter: a, weight: 0.5 },
      { adapter: b, weight: -1.25 },
    ]);
    expect(merged).toMatchObject({ rank: 4, sharing: "shared", targetModules: ["q_proj", "up_proj"], basisId: "basis-a", baseFingerprint: "base-1" });
    for (const module of ["q_proj", "up_proj"] as const) {
      const expected = m(a, module).data.map((x, i) => 0.5 * x + -1.25 * m(b, module).data[i]);
      expect(m(merged, module).data).toEqual(expected);
      expect(m(merged, module).shape).toEqual(m(a, module).shape);
    }
    expect(merged.provenance).toEqual({
      kind: "merge",
      parts: [
        { weight: 0.5, rank: 4, provenance: { seed: 1 } },
        { weight: -1.25, rank: 4, provenance: { seed: 2 } },
      ],
    });
    expect(() => validateAdapterFor(merged, { config, basis })).not.toThrow();
  });

  it("zero-pads smaller ranks on the right", () => {
    const small = randomAdapter("shared", 2, ["k_proj"], 3);
    const large = randomAdapter("shared", 5, ["k_proj"], 4);
    const merged = mergeAdapters([
      { adapter: small, weight: 2 },
      { adapter: large, weight: 1 },
    ]);
    expect(merged.rank).toBe(5);
    const out = linearShape(config, "k_proj")[0];
    for (let row = 0; row < out; row++) {
      for (let col = 0; col < 5; col++) {
        const fromSmall = col < 2 ? 2 * m(small, "k_proj").data[row * 2 + col] : 0;
        expect(m(merged, "k_proj").data[row * 5 + col]).toBe(Math.fround(fromSmall + m(large, "k_proj").data[row * 5 + col]));
      }
    }
  });

  it("takes the union of modules, a missing module counting as zero", () => {
    const a = randomAdapter("shared", 3, ["down_proj", "q_proj"], 5);
    const b = randomAdapter("shared", 3, ["v_proj"], 6);
    const merged = mergeAdapters([
      { adapter: a, weight: 3 },
      { adapter: b, weight: 0.25 },
    ]);
    expect(merged.targetModules).toEqual(["q_proj", "v_proj", "down_proj"]);
    expect(m(merged, "q_proj").data).toEqual(m(a, "q_proj").data.map((x) => 3 * x));
    expect(m(merged, "v_proj").data).toEqual(m(b, "v_proj").data.map((x) => 0.25 * x));
  });

  it("broadcasts a shared M to every layer when merged with a per_layer adapter", () => {
    const sharedPart = randomAdapter("shared", 2, ["o_proj"], 7);
    const perLayer = randomAdapter("per_layer", 2, ["o_proj"], 8);
    const merged = mergeAdapters([
      { adapter: sharedPart, weight: 1.5 },
      { adapter: perLayer, weight: -0.5 },
    ]);
    expect(merged.sharing).toBe("per_layer");
    expect([...merged.m.keys()]).toEqual(["0.o_proj", "1.o_proj", "2.o_proj"]);
    for (let layer = 0; layer < 3; layer++) {
      const expected = m(sharedPart, "o_proj").data.map((x, i) => 1.5 * x + -0.5 * m(perLayer, "o_proj", layer).data[i]);
      expect(m(merged, "o_proj", layer).data).toEqual(expected);
    }
  });

  it("gives ΔW = Σ wᵢ ΔWᵢ for mixed ranks, modules and sharing (dense check)", () => {
    const parts = [
      { adapter: randomAdapter("shared", 3, ["q_proj", "gate_proj"], 9), weight: 0.7 },
      { adapter: randomAdapter("per_layer", 6, ["gate_proj", "down_proj"], 10), weight: -1.1 },
      { adapter: randomAdapter("shared", 1, ["q_proj"], 12), weight: 2 },
    ];
    const merged = mergeAdapters(parts);
    expect(merged.rank).toBe(6);
    for (let layer = 0; layer < config.numLayers; layer++) {
      for (const module of ["q_proj", "gate_proj", "down_proj"] as const) {
        const actual = deltaW(merged, layer, module);
        const expected = new Float64Array(actual.length);
        for (const { adapter, weight } of parts) deltaW(adapter, layer, module).forEach((v, i) => (expected[i] += weight * v));
        let diff = 0;
        let norm = 0;
        expected.forEach((v, i) => {
          diff += (v - actual[i]) ** 2;
          norm += v * v;
        });
        expect(norm).toBeGreaterThan(0);
        expect(Math.sqrt(diff / norm)).toBeLessThan(1e-6);
      }
    }
  });

  it("refuses adapters of different bases, naming both ids", () => {
    const other = { ...randomAdapter("shared", 2, ["q_proj"], 13), basisId: "basis-b" };
    expect(() =>
      mergeAdapters([
        { adapter: randomAdapter("shared", 2, ["q_proj"], 14), weight: 1 },
        { adapter: other, weight: 1 },
      ]),
    ).toThrow("part 1 has basis id basis-b but part 0 has basis-a");
    const otherBase = { ...randomAdapter("shared", 2, ["q_proj"], 13), baseFingerprint: "base-2" };
    expect(() =>
      mergeAdapters([
        { adapter: randomAdapter("shared", 2, ["q_proj"], 14), weight: 1 },
        { adapter: otherBase, weight: 1 },
      ]),
    ).toThrow("part 1 has base fingerprint base-2 but part 0 has base-1");
  });

  it("refuses no parts, non-finite weights and per_layer parts of different depths", () => {
    const a = randomAdapter("per_layer", 2, ["q_proj"], 15);
    expect(() => mergeAdapters([])).toThrow("at least one adapter");
    expect(() => mergeAdapters([{ adapter: a, weight: Number.NaN }])).toThrow("part 0 has weight NaN, which is not finite");
    const shallow = randomAdapter("per_layer", 2, ["q_proj"], 16);
    shallow.m.delete("2.q_proj");
    expect(() =>
      mergeAdapters([
        { adapter: a, weight: 1 },
        { adapter: shallow, weight: 1 },
      ]),
    ).toThrow("part 1 has 2 layers but an earlier per_layer part has 3");
  });
});

describe("zeroAdapter", () => {
  it("is all zeros, fits the basis, and is the identity of merging", () => {
    const zero = zeroAdapter({ config, basis }, { rank: 4, sharing: "per_layer", targetModules: ["v_proj", "up_proj"] });
    expect(zero.m.size).toBe(6);
    for (const tensor of zero.m.values()) expect(tensor.data.every((v) => v === 0)).toBe(true);
    const a = randomAdapter("per_layer", 4, ["v_proj", "up_proj"], 17);
    expect(
      mergeAdapters([
        { adapter: a, weight: 1 },
        { adapter: zero, weight: 5 },
      ]).m,
    ).toEqual(a.m);
    expect(() => zeroAdapter({ config, basis }, { rank: R_MAX + 1 })).toThrow("rank 7 must be an integer in [1, 6]");
  });
});
