/**
 * A base model's fingerprint: sha256 over its config and every weight, so an adapter or a basis
 * computed from one checkpoint is never used with another.
 */
import { createHash } from "node:crypto";
import type { ModelConfig } from "../model/config.ts";
import type { WeightMap } from "../model/weights.ts";
import type { FloatTensor } from "../tensor.ts";

/** sha256 (hex) of the config and the weights in name order. */
export function modelFingerprint(config: ModelConfig, weights: WeightMap): string {
  const hash = modelFingerprintHash(config);
  for (const name of [...weights.keys()].sort()) hash.add(name, weights.get(name)!);
  return hash.digest();
}

/**
 * `modelFingerprint`, yielding to the event loop between tensors, so lazily read weights are
 * collectable as it goes and never all in memory at once.
 */
export async function modelFingerprintYielding(config: ModelConfig, weights: WeightMap): Promise<string> {
  const hash = modelFingerprintHash(config);
  for (const name of [...weights.keys()].sort()) {
    hash.add(name, weights.get(name)!);
    await new Promise((resolve) => setImmediate(resolve));
  }
  return hash.digest();
}

/** The fingerprint computed a tensor at a time (tensors must be added in name order). */
function modelFingerprintHash(config: ModelConfig): { add(name: string, tensor: FloatTensor): void; digest(): string } {
  const hash = createHash("sha256");
  hash.update(JSON.stringify(fingerprintedConfig(config)));
  return {
    add(name, tensor) {
      hash.update(`${name}:${tensor.shape.join("x")};`);
      const data = tensor.data;
      hash.update(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    },
    digest: () => hash.digest("hex"),
  };
}

/**
 * The config as fingerprinted: switches added after fingerprints were first stored (Qwen3's q/k
 * norms, sliding windows) count only where they change the model, so every model that existed
 * before them keeps its fingerprint, and its stored basis and adapters keep working.
 */
function fingerprintedConfig(config: ModelConfig): Record<string, unknown> {
  const { qkNorm, attentionWindows, ...rest } = config;
  return {
    ...rest,
    ...(qkNorm ? { qkNorm } : {}),
    ...(attentionWindows.some((w) => w !== null) ? { attentionWindows } : {}),
  };
}
