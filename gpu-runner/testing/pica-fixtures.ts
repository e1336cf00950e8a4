/**
 * Small PiCa fixtures for unit tests that need a basis or adapters but not a real model: a tiny
 * config, random orthonormal projections and Gaussian adapters, all seeded.
 */
import { parseModelConfig, type ModelConfig } from "../model/config.ts";
import { LINEAR_MODULES, linearShape, type LinearModule } from "../model/weights.ts";
import { adapterKey, projectionKey, type Basis, type PicaAdapter, type SharingMode } from "../pica/types.ts";
import { Rng } from "../random.ts";
import type { FloatTensor } from "../tensor.ts";

/** q/o/down: out 16; k/v: out 8; gate/up: out 24; in 16 except down_proj (24); 3 layers. */
export const SMALL_CONFIG_JSON = {
  architectures: ["LlamaForCausalLM"],
  vocab_size: 32,
  hidden_size: 16,
  intermediate_size: 24,
  num_hidden_layers: 3,
  num_attention_heads: 4,
  num_key_value_heads: 2,
};

/** The parsed small config. */
export const smallConfig: ModelConfig = parseModelConfig(SMALL_CONFIG_JSON);

/** Ids the fixtures' basis and adapters carry unless told otherwise. */
export const FIXTURE_BASIS_ID = "basis-a";
export const FIXTURE_BASE_FINGERPRINT = "base-1";

/** Rows of a random matrix made orthonormal by Gram–Schmidt (a QR) in float64, stored as float32. */
export function orthonormalRows(rng: Rng, rows: number, cols: number): Float32Array {
  const q = Array.from({ length: rows }, () => Float64Array.from({ length: cols }, () => rng.normal()));
  for (let i = 0; i < rows; i++) {
    for (let pass = 0; pass < 2; pass++) {
      for (let j = 0; j < i; j++) {
        let dot = 0;
        for (let k = 0; k < cols; k++) dot += q[i][k] * q[j][k];
        for (let k = 0; k < cols; k++) q[i][k] -= dot * q[j][k];
      }
      const norm = Math.hypot(...q[i]);
      for (let k = 0; k < cols; k++) q[i][k] /= norm;
    }
  }
  return Float32Array.from(q.flatMap((row) => [...row]));
}

/** A basis of random orthonormal projections (not a model's singular vectors) for `config`. */
export function orthonormalBasis(config: ModelConfig, options: { rMax: number; seed: number; targetModules?: LinearModule[] }): Basis {
  const rng = new Rng(options.seed);
  const projections = new Map<string, FloatTensor>();
  for (let layer = 0; layer < config.numLayers; layer++) {
    for (const module of LINEAR_MODULES) {
      const inputs = linearShape(config, module)[1];
      projections.set(projectionKey(layer, module), { shape: [options.rMax, inputs], data: orthonormalRows(rng, options.rMax, inputs) });
    }
  }
  return {
    id: FIXTURE_BASIS_ID,
    baseFingerprint: FIXTURE_BASE_FINGERPRINT,
    rMax: options.rMax,
    numLayers: config.numLayers,
    targetModules: options.targetModules ?? [...LINEAR_MODULES],
    projections,
  };
}

/** An adapter whose M entries are standard normals, against the fixture basis ids. */
export function gaussianAdapter(
  config: ModelConfig,
  options: { sharing: SharingMode; rank: number; modules: LinearModule[]; seed: number; provenance?: Record<string, unknown> },
): PicaAdapter {
  const { sharing, rank, modules } = options;
  const rng = new Rng(options.seed);
  const m = new Map<string, FloatTensor>();
  for (let layer = 0; layer < (sharing === "shared" ? 1 : config.numLayers); layer++) {
    for (const module of modules) {
      const out = linearShape(config, module)[0];
      m.set(adapterKey(sharing, module, layer), { shape: [out, rank], data: Float32Array.from({ length: out * rank }, () => rng.normal()) });
    }
  }
  return {
    rank,
    sharing,
    targetModules: modules,
    basisId: FIXTURE_BASIS_ID,
    baseFingerprint: FIXTURE_BASE_FINGERPRINT,
    m,
    provenance: options.provenance ?? { seed: options.seed },
  };
}
