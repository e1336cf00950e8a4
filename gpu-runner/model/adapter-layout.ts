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
 */
import type { Basis } from "../pica/types.ts";
import { projectionKey } from "../pica/types.ts";
import type { ModelConfig } from "./config.ts";
import { LINEAR_GROUPS, linearShape, type LinearGroup, type LinearModule } from "./weights.ts";

/** What the graph needs to carry adapters: the serving rank and the modules. */
export interface AdapterGraphSpec {
  rank: number;
  targetModules: readonly LinearModule[];
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
