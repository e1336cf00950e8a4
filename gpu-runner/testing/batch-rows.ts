/**
 * The check the engine's adapter tests share: a batch whose rows use different adapters (or
 * none) is prefilled and then decoded step by step, and every row's logits must equal what the
 * same tokens give alone on that row's merged weights.
 */
import { expect } from "vitest";
import type { LlamaEngine } from "../engine/llama-engine.ts";
import { maxAbsDiff } from "./numeric.ts";

/** A row: its adapter (null: the base model), its prompt and the tokens it then decodes, one a step. */
export interface BatchRow {
  adapter: string | null;
  prompt: number[];
  decode: number[];
}

/** Runs `rows` as one batch and compares every row at every step with `expected(adapter, ids)`. */
export async function expectRowsEqualAlone(
  engine: LlamaEngine,
  rows: readonly BatchRow[],
  expected: (adapter: string | null, ids: number[]) => ArrayLike<number>,
  tolerance: number,
  prepare: (batch: ReturnType<LlamaEngine["createBatch"]>) => void = () => {},
): Promise<void> {
  const batch = engine.createBatch(rows.length);
  for (const row of rows) batch.addRow(row.adapter);
  prepare(batch);
  const prefill = await engine.step(
    batch,
    rows.map((r) => r.prompt),
  );
  rows.forEach((row, i) => expect(maxAbsDiff(prefill[i].data, expected(row.adapter, row.prompt)), String(row.adapter)).toBeLessThanOrEqual(tolerance));
  const steps = Math.min(...rows.map((row) => row.decode.length));
  for (let s = 0; s < steps; s++) {
    const out = await engine.step(
      batch,
      rows.map((r) => [r.decode[s]!]),
    );
    rows.forEach((row, i) => {
      const ids = [...row.prompt, ...row.decode.slice(0, s + 1)];
      expect(maxAbsDiff(out[i].data, expected(row.adapter, ids)), String(row.adapter)).toBeLessThanOrEqual(tolerance);
    });
  }
}
