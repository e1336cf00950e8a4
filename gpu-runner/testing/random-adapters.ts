/**
 * Deterministic random PiCa adapters for tests and benchmarks: M drawn with std 1/sqrt(rank),
 * so ΔW = M P is as large as W itself and every adapter visibly changes the logits.
 */
import type { ModelConfig } from "../model/config.ts";
import { linearShape, type LinearModule } from "../model/weights.ts";
import { adapterKey, type Basis, type PicaAdapter, type SharingMode } from "../pica/types.ts";
import { Rng } from "../random.ts";

/** A random adapter against `basis`. */
export function randomAdapter(
  config: ModelConfig,
  basis: Basis,
  options: { rank: number; seed: number; sharing?: SharingMode; targetModules?: LinearModule[]; scale?: number },
): PicaAdapter {
  const sharing = options.sharing ?? "shared";
  const targetModules = options.targetModules ?? [...basis.targetModules];
  const rng = new Rng(options.seed);
  const std = (options.scale ?? 1) / Math.sqrt(options.rank);
  const m = new Map<string, { shape: number[]; data: Float32Array }>();
  const layers = sharing === "shared" ? [0] : Array.from({ length: config.numLayers }, (_, l) => l);
  for (const layer of layers) {
    for (const module of targetModules) {
      const out = linearShape(config, module)[0];
      const data = new Float32Array(out * options.rank);
      for (let i = 0; i < data.length; i++) data[i] = std * rng.normal();
      m.set(adapterKey(sharing, module, layer), { shape: [out, options.rank], data });
    }
  }
  return {
    rank: options.rank,
    sharing,
    targetModules,
    basisId: basis.id,
    baseFingerprint: basis.baseFingerprint,
    m,
    provenance: { source: "random", seed: options.seed },
  };
}
