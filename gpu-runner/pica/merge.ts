/**
 * Combining adapters that share a basis: M = Σ wᵢ Mᵢ, which is exactly ΔW = Σ wᵢ ΔWᵢ because
 * every adapter's ΔW is linear in its M with the same P.
 */
import type { ModelConfig } from "../model/config.ts";
import { LINEAR_MODULES, linearShape, type LinearModule } from "../model/weights.ts";
import type { FloatTensor } from "../tensor.ts";
import { adapterLayerCount, assertWellFormedAdapter, expectedAdapterKeys, validateAdapterFor } from "./adapter-format.ts";
import { adapterKey, DEFAULT_TARGET_MODULES, type Basis, type PicaAdapter, type SharingMode } from "./types.ts";

/** One adapter of a merge and its weight. */
export interface WeightedAdapter {
  adapter: PicaAdapter;
  weight: number;
}

/** Σ wᵢ Mᵢ over adapters of one basis, accumulated in float64 and rounded once to float32. */
export function mergeAdapters(parts: readonly WeightedAdapter[], options: { provenance?: Record<string, unknown> } = {}): PicaAdapter {
  if (parts.length === 0) throw new Error("mergeAdapters needs at least one adapter");
  const first = parts[0].adapter;
  parts.forEach(({ adapter, weight }, index) => {
    if (!Number.isFinite(weight)) throw new Error(`mergeAdapters: part ${index} has weight ${weight}, which is not finite`);
    assertWellFormedAdapter(adapter, `<merge part ${index}>`);
    if (adapter.basisId !== first.basisId) {
      throw new Error(`mergeAdapters: part ${index} has basis id ${adapter.basisId} but part 0 has ${first.basisId}`);
    }
    if (adapter.baseFingerprint !== first.baseFingerprint) {
      throw new Error(`mergeAdapters: part ${index} has base fingerprint ${adapter.baseFingerprint} but part 0 has ${first.baseFingerprint}`);
    }
  });

  const rank = Math.max(...parts.map((p) => p.adapter.rank));
  const targetModules = LINEAR_MODULES.filter((module) => parts.some((p) => p.adapter.targetModules.includes(module)));
  // A shared M broadcast to every layer is a valid per-layer M, so any per_layer part makes the
  // result per_layer; its layer count must then be known, and agree across parts.
  let numLayers = 1;
  let sharing: SharingMode = "shared";
  for (const [index, { adapter }] of parts.entries()) {
    const layers = adapterLayerCount(adapter);
    if (layers === null) continue;
    if (sharing === "per_layer" && layers !== numLayers) {
      throw new Error(`mergeAdapters: part ${index} has ${layers} layers but an earlier per_layer part has ${numLayers}`);
    }
    sharing = "per_layer";
    numLayers = layers;
  }

  const outOf = new Map<LinearModule, number>();
  parts.forEach(({ adapter }, index) => {
    for (const module of adapter.targetModules) {
      const out = adapter.m.get(adapterKey(adapter.sharing, module, 0))!.shape[0];
      const seen = outOf.get(module);
      if (seen !== undefined && seen !== out) {
        throw new Error(`mergeAdapters: part ${index} has ${out} output rows for ${module}, an earlier part has ${seen}`);
      }
      outOf.set(module, out);
    }
  });

  const m = new Map<string, FloatTensor>();
  for (const { key, module, layer } of expectedAdapterKeys(sharing, targetModules, numLayers)) {
    const out = outOf.get(module)!;
    const sum = new Float64Array(out * rank); // [out, rank]
    for (const { adapter, weight } of parts) {
      // A module the part does not target has M = 0; a smaller rank is zero-padded on the
      // right, exact because rank r uses the first r rows of the same nested P.
      const part = adapter.m.get(adapterKey(adapter.sharing, module, layer));
      if (part === undefined) continue;
      const partRank = adapter.rank;
      for (let row = 0; row < out; row++) {
        for (let col = 0; col < partRank; col++) sum[row * rank + col] += weight * part.data[row * partRank + col];
      }
    }
    m.set(key, { shape: [out, rank], data: Float32Array.from(sum) });
  }

  return {
    rank,
    sharing,
    targetModules,
    basisId: first.basisId,
    baseFingerprint: first.baseFingerprint,
    m,
    provenance: options.provenance ?? {
      kind: "merge",
      parts: parts.map(({ adapter, weight }) => ({ weight, rank: adapter.rank, provenance: adapter.provenance })),
    },
  };
}

/** An adapter whose every M is zero: the base model exactly, and PiCa's initialisation. */
export function zeroAdapter(
  context: { config: ModelConfig; basis: Pick<Basis, "id" | "baseFingerprint" | "rMax" | "targetModules" | "numLayers"> },
  options: { rank: number; sharing?: SharingMode; targetModules?: readonly LinearModule[]; provenance?: Record<string, unknown> },
): PicaAdapter {
  const { config, basis } = context;
  const { rank, sharing = "shared" } = options;
  const targetModules = [...(options.targetModules ?? basis.targetModules ?? DEFAULT_TARGET_MODULES)];
  if (!Number.isSafeInteger(rank) || rank < 1 || rank > basis.rMax) {
    throw new Error(`zeroAdapter: rank ${rank} must be an integer in [1, ${basis.rMax}] (the basis rMax)`);
  }
  const m = new Map<string, FloatTensor>();
  for (const { key, module } of expectedAdapterKeys(sharing, targetModules, basis.numLayers)) {
    const out = linearShape(config, module)[0];
    m.set(key, { shape: [out, rank], data: new Float32Array(out * rank) });
  }
  const adapter: PicaAdapter = {
    rank,
    sharing,
    targetModules,
    basisId: basis.id,
    baseFingerprint: basis.baseFingerprint,
    m,
    provenance: options.provenance ?? { kind: "zero" },
  };
  validateAdapterFor(adapter, context);
  return adapter;
}
