/**
 * Folds an adapter into the base weights: W' = W + M P[:rank] for every targeted layer and
 * module. The exactness oracle for mixed-adapter batches, and the naive way of serving an
 * adapter that the benchmark compares against.
 */
import type { ModelConfig } from "../model/config.ts";
import { linearName, linearShape, type WeightMap } from "../model/weights.ts";
import { adapterKey, basisServes, projectionKey, type Basis, type PicaAdapter } from "./types.ts";

/** A copy of `weights` with the adapter merged in (untargeted weights are shared, not copied). */
export function mergeIntoWeights(config: ModelConfig, weights: WeightMap, basis: Basis, adapter: PicaAdapter): WeightMap {
  if (!basisServes(basis, adapter.basisId, adapter.rank)) throw new Error(`adapter basis ${adapter.basisId} differs from basis ${basis.id}`);
  const merged: WeightMap = new Map(weights);
  const rank = adapter.rank;
  for (let layer = 0; layer < config.numLayers; layer++) {
    for (const module of adapter.targetModules) {
      const name = linearName(layer, module);
      const [out, inputs] = linearShape(config, module);
      const w = weights.get(name)!;
      const m = adapter.m.get(adapterKey(adapter.sharing, module, layer))!.data; // [out, rank]
      const p = basis.projections.get(projectionKey(layer, module))!.data; // [rMax, in]
      const data = Float32Array.from(w.data);
      const row = new Float64Array(inputs);
      for (let o = 0; o < out; o++) {
        row.fill(0);
        for (let j = 0; j < rank; j++) {
          const coefficient = m[o * rank + j];
          if (coefficient === 0) continue;
          const offset = j * inputs;
          for (let i = 0; i < inputs; i++) row[i] += coefficient * p[offset + i];
        }
        for (let i = 0; i < inputs; i++) data[o * inputs + i] += row[i];
      }
      merged.set(name, { shape: w.shape, data });
    }
  }
  return merged;
}
