/**
 * Many distinct adapters for a tenant without training them: deterministic random PiCa adapters
 * on the shipped model's basis, written in PEFT's LoRA format and imported through the public
 * API (`POST /v1/adapters/import`), so they are stored and served like any tenant's adapter.
 * For the load and chaos benchmarks and the fault tests.
 */
import { PicaClient } from "../src/client/pica-client.ts";
import { serializeSafetensors } from "../gpu-runner/checkpoint/safetensors.ts";
import { loadCheckpoint } from "../gpu-runner/model/checkpoint.ts";
import { SHIPPED_MODEL_DIRECTORY } from "../gpu-runner/model/shipped-model.ts";
import { loadOrComputeBasis } from "../gpu-runner/pica/basis.ts";
import { exportPeft } from "../gpu-runner/pica/peft.ts";
import { randomAdapter } from "../gpu-runner/testing/random-adapters.ts";

export interface RandomPeftOptions {
  count: number;
  seed: number;
  rank?: number; // default 8
  scale?: number; // default 0.1: outputs stay close to the base model's, and so do their lengths
  concurrency?: number; // imports in flight, default 4
  namePrefix?: string; // default "random"
}

/** The PEFT files of `count` random adapters: adapter_config.json text and safetensors bytes. */
export async function randomPeftAdapters(
  options: Pick<RandomPeftOptions, "count" | "seed" | "rank" | "scale">,
): Promise<{ config: string; model: Uint8Array }[]> {
  const { config, weights } = await loadCheckpoint(SHIPPED_MODEL_DIRECTORY);
  const { basis } = await loadOrComputeBasis(SHIPPED_MODEL_DIRECTORY, config, weights, { rMax: 32 });
  return Array.from({ length: options.count }, (_, i) => {
    const adapter = randomAdapter(config, basis, { rank: options.rank ?? 8, seed: options.seed + i, scale: options.scale ?? 0.1 });
    const peft = exportPeft(adapter, basis, config);
    return { config: JSON.stringify(peft.adapterConfig), model: serializeSafetensors(peft.tensors, { format: "pt" }) };
  });
}

/** Imports `count` random adapters for the key's tenant; returns their ids in order. */
export async function importRandomAdapters(edgeUrl: string, key: string, options: RandomPeftOptions): Promise<string[]> {
  const client = new PicaClient({ baseUrl: edgeUrl, apiKey: key });
  const files = await randomPeftAdapters(options);
  const ids: string[] = new Array(files.length);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < files.length; i = next++) {
      const imported = await client.importAdapter(`${options.namePrefix ?? "random"}-${i}`, files[i].config, files[i].model);
      ids[i] = imported.id;
    }
  };
  await Promise.all(Array.from({ length: options.concurrency ?? 4 }, worker));
  return ids;
}
