/**
 * A basis asked for with more rows than the stored one holds is extended, not recomputed: the
 * stored rows stay bit for bit, the new rows are the next singular vectors (orthogonal to them),
 * the file records the smaller basis's id, and adapters trained against the smaller basis are
 * served by the larger one exactly.
 */
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LlamaEngine } from "../engine/llama-engine.ts";
import { referenceForward } from "../model/reference.ts";
import { LINEAR_MODULES } from "../model/weights.ts";
import { maxAbsDiff, syntheticTokens } from "../testing/numeric.ts";
import { randomAdapter } from "../testing/random-adapters.ts";
import { tinyModel } from "../testing/tiny-checkpoints.ts";
import { basisFileName, computeBasis, loadOrComputeBasis, parseBasis, serializeBasis, truncateBasis } from "./basis.ts";
import { mergeIntoWeights } from "./merge-weights.ts";
import { projectionKey, type Basis } from "./types.ts";

const { config, weights } = tinyModel("llama-gqa");

describe("extending a stored basis", () => {
  let directory: string;
  let small: Basis;
  let extended: Basis;
  let computed: boolean;

  beforeAll(async () => {
    directory = await mkdtemp(join(tmpdir(), "pica-basis-extension-"));
    small = (await loadOrComputeBasis(directory, config, weights, { rMax: 4 })).basis;
    ({ basis: extended, computed } = await loadOrComputeBasis(directory, config, weights, { rMax: 12 }));
  });
  afterAll(() => rm(directory, { recursive: true, force: true }));

  it("keeps every stored row bit for bit and records the smaller basis it extends", () => {
    expect(computed).toBe(true);
    expect(extended.rMax).toBe(12);
    expect(extended.id).not.toBe(small.id);
    expect(extended.prefixes).toEqual([{ rMax: 4, id: small.id }]);
    for (let layer = 0; layer < config.numLayers; layer++) {
      for (const module of LINEAR_MODULES) {
        const before = small.projections.get(projectionKey(layer, module))!.data;
        const after = extended.projections.get(projectionKey(layer, module))!.data;
        expect(Buffer.from(after.buffer, after.byteOffset, before.byteLength).equals(Buffer.from(before.buffer, before.byteOffset, before.byteLength))).toBe(
          true,
        );
      }
    }
    expect(truncateBasis(extended, 4).id).toBe(small.id);
  });

  it("adds orthonormal rows spanning the next singular directions, as a basis computed at once does", async () => {
    const fresh = await computeBasis(config, weights, { rMax: 12 });
    for (const module of LINEAR_MODULES) {
      const p = extended.projections.get(projectionKey(1, module))!;
      const q = fresh.projections.get(projectionKey(1, module))!;
      const columns = p.shape[1];
      let overlap = 0; // ‖P[4:12] Q[4:12]ᵀ‖²: 8 when the new rows span the same subspace
      for (let i = 0; i < 12; i++) {
        for (let j = 0; j < 12; j++) {
          let dot = 0;
          for (let c = 0; c < columns; c++) dot += p.data[i * columns + c] * p.data[j * columns + c];
          expect(Math.abs(dot - (i === j ? 1 : 0)), `${module} rows ${i}·${j}`).toBeLessThanOrEqual(1e-5);
        }
      }
      for (let i = 4; i < 12; i++) {
        for (let j = 4; j < 12; j++) {
          let dot = 0;
          for (let c = 0; c < columns; c++) dot += p.data[i * columns + c] * q.data[j * columns + c];
          overlap += dot * dot;
        }
      }
      expect(overlap, module).toBeGreaterThan(8 - 0.05);
    }
  });

  it("is stored with its prefix and read back the same; a later start loads it", async () => {
    const path = join(directory, basisFileName(12));
    const read = parseBasis(new Uint8Array(await readFile(path)), path);
    expect(read.id).toBe(extended.id);
    expect(read.prefixes).toEqual([{ rMax: 4, id: small.id }]);
    const again = await loadOrComputeBasis(directory, config, weights, { rMax: 12 });
    expect(again.computed).toBe(false);
    expect(again.basis.id).toBe(extended.id);
  });

  it("refuses a file whose recorded prefix does not match its rows", async () => {
    const forged = serializeBasis({ ...extended, prefixes: [{ rMax: 4, id: "0".repeat(64) }] });
    const path = join(directory, "forged.safetensors");
    await writeFile(path, forged);
    expect(() => parseBasis(new Uint8Array(forged), path)).toThrow(/extends: the first 4 rows hash to [0-9a-f]{64}, not to the recorded basis_id 0{64}/);
  });

  it("serves adapters trained against the smaller basis exactly, within its rows, beside new ones", async () => {
    const old = randomAdapter(config, small, { rank: 4, seed: 31 });
    const wide = randomAdapter(config, extended, { rank: 12, seed: 32 });
    const engine = await LlamaEngine.create(config, weights, { adapters: { basis: extended } });
    try {
      engine.registerAdapter("old", old);
      engine.registerAdapter("wide", wide);
      const tooWide = { ...randomAdapter(config, extended, { rank: 5, seed: 33 }), basisId: small.id };
      expect(() => engine.registerAdapter("too-wide", tooWide)).toThrow(/adapter rank 5 exceeds the 4 rows of its basis/);
      const ids = syntheticTokens(6, 3);
      const batch = engine.createBatch(2);
      batch.addRow("old");
      batch.addRow("wide");
      const [servedOld, servedWide] = await engine.step(batch, [ids, ids]);
      expect(maxAbsDiff(servedOld.data, referenceForward(config, mergeIntoWeights(config, weights, small, old), ids).at(-1)!)).toBeLessThanOrEqual(1e-4);
      expect(maxAbsDiff(servedWide.data, referenceForward(config, mergeIntoWeights(config, weights, extended, wide), ids).at(-1)!)).toBeLessThanOrEqual(1e-4);
      expect(maxAbsDiff(servedOld.data, referenceForward(config, weights, ids).at(-1)!)).toBeGreaterThan(0.05);
    } finally {
      await engine.dispose();
    }
  });

  it("extends the extension, keeping both prefixes", async () => {
    const { basis } = await loadOrComputeBasis(directory, config, weights, { rMax: 16 });
    expect(basis.prefixes).toEqual([
      { rMax: 4, id: small.id },
      { rMax: 12, id: extended.id },
    ]);
    expect(truncateBasis(basis, 12).id).toBe(extended.id);
  });
});
