/**
 * How PiCa adapter weights enter the decoder graph, shared by the graph builder and the host
 * code that fills the inputs.
 *
 * Each layer has one input per adapted module, `adapter.layers.{l}.{module}`, of shape
 * [batch, rank, out]: row r holds its adapter's Mᵀ (zero-padded past the adapter's own rank;
 * zeros for the base model). Inputs are per module, not block-diagonal per group, because the
 * expand is bound by reading these tensors: a block-diagonal layout would read two to three times
 * as many bytes.
 *
 * The shrink x Pᵀ of all adapted modules that share an input is one product on their projections
 * side by side, `projection.layers.{l}.{group}` [in, modules · rank], computed once for every row.
 * The projections are an input too, not a weight of the graph: a session is built once per base
 * model and serves base-model requests while the basis is still being computed.
 *
 * The rank is a symbolic dimension, chosen per run: the bucket (rankBucket) of the largest
 * adapter rank among the run's rows, so a run pays for the adapters it carries, not for the
 * largest rank the runner serves; a run of base-model rows only has rank 0 and skips the work.
 */
import type { Basis } from "../pica/types.ts";
import { projectionKey } from "../pica/types.ts";
import type { ModelConfig } from "./config.ts";
import { LINEAR_GROUPS, linearShape, type LinearGroup, type LinearModule } from "./weights.ts";

/** What the graph needs to carry adapters: the modules (the rank is symbolic, set by each run's inputs). */
export interface AdapterGraphSpec {
  targetModules: readonly LinearModule[];
}

/** The symbolic rank dimension of the serving graph's adapter inputs. */
export const ADAPTER_RANK_DIM = "adapter_rank";

/** The symbolic width of a group's projection input: its adapted modules times the run's rank. */
export function projectionColumnsDim(layout: GroupLayout): string {
  return layout.adapted.length === 1 ? ADAPTER_RANK_DIM : `${layout.group.name}_adapter_columns`;
}

/**
 * The rank a run uses for adapters of rank ≤ `rank`: the next power of two, at most `maxRank`
 * (0 for a run without adapters). Few distinct ranks, so each one's projections are prepared once.
 */
export function rankBucket(rank: number, maxRank: number): number {
  if (rank <= 0) return 0;
  if (rank > maxRank) throw new Error(`adapter rank ${rank} is above the largest rank served, ${maxRank}`);
  return Math.min(maxRank, 2 ** Math.ceil(Math.log2(rank)));
}

/** One group's layout: its modules' output widths and which of them are adapted. */
export interface GroupLayout {
  group: LinearGroup;
  outputs: number[]; // out of each module of the group, in group order
  width: number; // all outputs stacked
  adapted: LinearModule[]; // targeted modules of the group, in group order
  columnOffset: Map<LinearModule, number>; // where each module's outputs start within the stack
}

/** Name of a layer's adapter input for a module. */
export function adapterInputName(layer: number, module: LinearModule): string {
  return `adapter.layers.${layer}.${module}`;
}

/** Name of a layer's projection input for a group: [in, adapted modules · rank]. */
export function projectionInputName(layer: number, group: LinearGroup["name"]): string {
  return `projection.layers.${layer}.${group}`;
}

/**
 * P[:rank] of a group's adapted modules, transposed and side by side ([in, modules · rank]), as the
 * shrink product takes them; zeros where `basis` is null (no adapter can be served yet).
 */
export function stackedProjection(config: ModelConfig, basis: Basis | null, rank: number, layer: number, layout: GroupLayout): Float32Array {
  const inputs = linearShape(config, layout.group.modules[0])[1];
  const columns = rank * layout.adapted.length;
  const out = new Float32Array(inputs * columns);
  if (basis === null) return out;
  layout.adapted.forEach((module, i) => {
    const p = basis.projections.get(projectionKey(layer, module));
    if (p === undefined || p.shape[1] !== inputs) throw new Error(`basis has no projection of shape [·, ${inputs}] for layer ${layer} ${module}`);
    for (let r = 0; r < rank; r++) {
      const row = p.data.subarray(r * inputs, (r + 1) * inputs);
      for (let c = 0; c < inputs; c++) out[c * columns + i * rank + r] = row[c];
    }
  });
  return out;
}

/** The layout of every group for the given adapted modules. */
export function groupLayouts(config: ModelConfig, targetModules: readonly LinearModule[]): GroupLayout[] {
  return LINEAR_GROUPS.map((group) => {
    const outputs = group.modules.map((m) => linearShape(config, m)[0]);
    const columnOffset = new Map<LinearModule, number>();
    let offset = 0;
    group.modules.forEach((m, i) => {
      columnOffset.set(m, offset);
      offset += outputs[i];
    });
    const adapted = group.modules.filter((m) => targetModules.includes(m));
    return { group, outputs, width: offset, adapted, columnOffset };
  });
}
