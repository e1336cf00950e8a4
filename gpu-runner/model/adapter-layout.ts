/**
 * How PiCa adapter weights enter the decoder graph, shared by the graph builder and the host
 * code that fills the inputs.
 *
 * Each layer has one input per adapted module, `adapter.layers.{l}.{module}`, of shape
 * [batch, rank, out]: row r holds its adapter's Mᵀ (zero-padded past the adapter's own rank;
 * zeros for the base model). The shrink x Pᵀ of all adapted modules that share an input rides in
 * the group's stacked weight product, so only this small per-row expand is separate. Inputs are
 * per module, not block-diagonal per group, because the expand is bound by reading these
 * tensors: a block-diagonal layout would read two to three times as many bytes.
 */
import type { ModelConfig } from "./config.ts";
import { LINEAR_GROUPS, linearShape, type LinearGroup, type LinearModule } from "./weights.ts";

/** What the graph needs to carry adapters: the serving rank, the modules and their projections. */
export interface AdapterGraphSpec {
  rank: number;
  targetModules: readonly LinearModule[];
  projection(layer: number, module: LinearModule): Float32Array; // P[:rank] as [rank, in]
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
