/**
 * A base model's fingerprint: sha256 over its config and every weight, so an adapter or a basis
 * computed from one checkpoint is never used with another.
 */
import { createHash } from "node:crypto";
import type { ModelConfig } from "../model/config.ts";
import type { WeightMap } from "../model/weights.ts";

/** sha256 (hex) of the config and the weights in name order. */
export function modelFingerprint(config: ModelConfig, weights: WeightMap): string {
  const hash = createHash("sha256");
  hash.update(JSON.stringify(fingerprintedConfig(config)));
  for (const name of [...weights.keys()].sort()) {
    const tensor = weights.get(name)!;
    hash.update(`${name}:${tensor.shape.join("x")};`);
    hash.update(new Uint8Array(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength));
  }
  return hash.digest("hex");
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
