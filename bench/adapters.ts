/**
 * Adapter benchmark on the engine bench's model: rank-8 PiCa adapters on all seven modules,
 * batch 16, 128 tokens of context. Decode settings are interleaved round by round:
 *   base  — a base-only engine (no adapter path at all), 16 rows;
 *   mixed — the adapter engine, 16 rows with 16 different adapters;
 *   same  — the adapter engine, 16 rows of one adapter.
 * Also: cold loads from a local directory store, the naive merge-and-rebuild baseline, sizes.
 */
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LlamaEngine } from "../gpu-runner/engine/llama-engine.ts";
import type { SequenceBatch } from "../gpu-runner/engine/sequence-batch.ts";
import { parseModelConfig } from "../gpu-runner/model/config.ts";
import { randomWeights } from "../gpu-runner/model/random-weights.ts";
import { readAdapterFile, writeAdapterFile } from "../gpu-runner/pica/adapter-format.ts";
import { computeBasis } from "../gpu-runner/pica/basis.ts";
import { mergeIntoWeights } from "../gpu-runner/pica/merge-weights.ts";
import { exportPeft } from "../gpu-runner/pica/peft.ts";
import { randomAdapter } from "../gpu-runner/testing/random-adapters.ts";
import { BENCH_CONFIG_JSON, promptOf } from "./engine.ts";
import { median, progress, round, timeMs } from "./stats.ts";

const RANK = 8;
const R_MAX = 64;
const ROWS = 16;
const CONTEXT = 128;
const ROUNDS = 15;
const DECODE_STEPS = 8;
const COLD_LOADS = 48;
const NAIVE_REQUESTS = 16;
const REQUEST_PROMPT = 32;
const REQUEST_NEW_TOKENS = 4;

/** Runs the adapters bench and returns its figures. */
export async function runAdaptersBench(): Promise<Record<string, unknown>> {
  const config = parseModelConfig(BENCH_CONFIG_JSON);
  const weights = randomWeights(config, 2024);
  progress(`computing the basis (rMax ${R_MAX}, 7 modules × ${config.numLayers} layers)…`);
  const basisStarted = performance.now();
  const basis = await computeBasis(config, weights, { rMax: R_MAX });
  const basisSeconds = (performance.now() - basisStarted) / 1000;
  progress(`basis ${basis.id.slice(0, 12)}… in ${basisSeconds.toFixed(1)} s`);

  // Two sessions alternate here, so neither may keep its threads spinning after a run.
  const baseEngine = await LlamaEngine.create(config, weights, { allowSpinning: false });
  const engine = await LlamaEngine.create(config, weights, { adapters: { basis, rank: RANK }, allowSpinning: false });
  const adapters = Array.from({ length: ROWS }, (_, i) => randomAdapter(config, basis, { rank: RANK, seed: 1000 + i, scale: 0.1 }));
  adapters.forEach((adapter, i) => engine.registerAdapter(`tenant-${i}`, adapter));

  progress(`prefilling ${CONTEXT} tokens × ${ROWS} rows for each setting…`);
  const prefilled = async (target: LlamaEngine, adapterOf: (row: number) => string | null): Promise<SequenceBatch> => {
    const batch = target.createBatch(ROWS, { initialCapacity: CONTEXT + DECODE_STEPS * (ROUNDS + 1) });
    for (let r = 0; r < ROWS; r++) batch.addRow(adapterOf(r));
    await target.step(
      batch,
      Array.from({ length: ROWS }, (_, r) => promptOf(CONTEXT, r + 1)),
    );
    return batch;
  };
  const settings = {
    base: { engine: baseEngine, batch: await prefilled(baseEngine, () => null) },
    mixed: { engine, batch: await prefilled(engine, (r) => `tenant-${r}`) },
    same: { engine, batch: await prefilled(engine, () => "tenant-0") },
    zeros: { engine, batch: await prefilled(engine, () => null) },
  };
  const times: Record<keyof typeof settings, number[]> = { base: [], mixed: [], same: [], zeros: [] };
  const order = Object.entries(settings) as [keyof typeof settings, (typeof settings)["base"]][];
  for (let round = 0; round < ROUNDS; round++) {
    // Rotate the order each round so no setting always follows the same one.
    for (const [name, { engine: target, batch }] of [...order.slice(round % order.length), ...order.slice(0, round % order.length)]) {
      times[name].push(
        (await timeMs(async () => {
          for (let s = 0; s < DECODE_STEPS; s++)
            await target.step(
              batch,
              Array.from({ length: ROWS }, (_, r) => [(r * 13 + s + round) % 2048]),
            );
        })) / DECODE_STEPS,
      );
    }
    progress(
      `round ${round + 1}/${ROUNDS}: ${Object.entries(times)
        .map(([n, t]) => `${n} ${t.at(-1)!.toFixed(2)} ms`)
        .join(", ")}`,
    );
  }
  // Throughput of setting a over setting b, per round (time b / time a), then the median.
  const ratio = (a: number[], b: number[]) => median(a.map((t, i) => b[i] / t));

  progress("cold loads from a local directory store…");
  const store = await mkdtemp(join(tmpdir(), "pica-adapters-"));
  let adapterBytes = 0;
  const coldMs: number[] = [];
  try {
    for (let i = 0; i < COLD_LOADS; i++)
      await writeAdapterFile(join(store, `cold-${i}.safetensors`), randomAdapter(config, basis, { rank: RANK, seed: 5000 + i }));
    adapterBytes = (await stat(join(store, "cold-0.safetensors"))).size;
    for (let i = 0; i < COLD_LOADS; i++) {
      coldMs.push(await timeMs(async () => engine.registerAdapter(`cold-${i}`, await readAdapterFile(join(store, `cold-${i}.safetensors`)))));
    }

    progress(`${NAIVE_REQUESTS} requests on new adapters: merge + new session vs cold load into the shared session…`);
    const request = async (target: LlamaEngine, adapterId: string | null, seed: number) => {
      const batch = target.createBatch(1, { initialCapacity: REQUEST_PROMPT + REQUEST_NEW_TOKENS });
      batch.addRow(adapterId);
      await target.step(batch, [promptOf(REQUEST_PROMPT, seed)]);
      for (let t = 1; t < REQUEST_NEW_TOKENS; t++) await target.step(batch, [[t]]);
    };
    const ours = await timeMs(async () => {
      for (let i = 0; i < NAIVE_REQUESTS; i++) {
        const id = `cold-${i}`;
        engine.evictAdapter(id);
        engine.registerAdapter(id, await readAdapterFile(join(store, `${id}.safetensors`)));
        await request(engine, id, i);
      }
    });
    const naive = await timeMs(async () => {
      for (let i = 0; i < NAIVE_REQUESTS; i++) {
        const adapter = await readAdapterFile(join(store, `cold-${i}.safetensors`));
        const merged = await LlamaEngine.create(config, mergeIntoWeights(config, weights, basis, adapter));
        await request(merged, null, i);
        await merged.dispose();
      }
    });
    progress(`naive ${naive.toFixed(0)} ms, ours ${ours.toFixed(0)} ms`);

    const lora = exportPeft(adapters[0], basis, config);
    let loraBytes = 0;
    for (const tensor of lora.tensors.values()) loraBytes += tensor.data.byteLength;
    let picaBytes = 0;
    for (const tensor of adapters[0].m.values()) picaBytes += tensor.data.byteLength;

    await engine.dispose();
    await baseEngine.dispose();
    return {
      config: "hidden 512, 8 layers, intermediate 1408; rank 8 on q,k,v,o,gate,up,down; batch 16; context 128",
      mixed_over_base: round(ratio(times.mixed, times.base)),
      mixed_over_same: round(ratio(times.mixed, times.same)),
      zeros_over_base: round(ratio(times.zeros, times.base)),
      decode_tok_s_base: round((ROWS * 1000) / median(times.base)),
      decode_tok_s_mixed: round((ROWS * 1000) / median(times.mixed)),
      cold_load_ms_p50: round(median(coldMs), 3),
      merge_baseline_ratio: round(naive / ours),
      lora_bytes_over_pica_bytes: round(loraBytes / picaBytes),
      basis_seconds: round(basisSeconds),
      adapter_bytes: adapterBytes,
    };
  } finally {
    await rm(store, { recursive: true, force: true });
  }
}
