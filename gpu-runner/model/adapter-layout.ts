/**
 * How PiCa adapter weights enter the decoder graph, shared by the graph builder and the host
 * code that fills the inputs.
 *
 * Per layer and linear group (q/k/v, o, gate/up, down), the graph takes one input
 * `adapter.layers.{l}.{group}` of shape [batch, R, N]: N is the group's stacked output width and
 * R = rank × (targeted modules of the group). Row block i holds Mᵢᵀ ([rank, outᵢ]) in the
 * columns of module i's outputs and zeros elsewhere, so one batched product expands the
 * group's shrunk activations (x Pᵀ, [batch, tokens, R]) into every module's ΔW x at once.
 */
import type { ModelConfig } from "./config.ts";
import { LINEAR_GROUPS, linearShape, type LinearGroup, type LinearModule } from "./weights.ts";

/** What the graph needs to carry adapters: the serving rank, the modules and their projections. */
export interface AdapterGraphSpec {
  rank: number;
  targetModules: readonly LinearModule[];
  projection(layer: number, module: LinearModule): Float32Array; // P[:rank] as [rank, in]
}

/** One group's adapter input layout. */
export interface GroupLayout {
  group: LinearGroup;
  outputs: number[]; // out of each module of the group, in group order
  width: number; // N: all outputs stacked
  adapted: LinearModule[]; // targeted modules of the group, in group order
  rows: number; // R = rank × adapted.length
  columnOffset: Map<LinearModule, number>; // where each module's outputs start within N
}

/** Name of a layer's adapter input for a group. */
export function adapterInputName(layer: number, group: LinearGroup["name"]): string {
  return `adapter.layers.${layer}.${group}`;
}

/** The layout of every group (groups with no targeted module have rows = 0 and no input). */
export function groupLayouts(config: ModelConfig, targetModules: readonly LinearModule[], rank: number): GroupLayout[] {
  return LINEAR_GROUPS.map((group) => {
    const outputs = group.modules.map((m) => linearShape(config, m)[0]);
    const columnOffset = new Map<LinearModule, number>();
    let offset = 0;
    group.modules.forEach((m, i) => {
      columnOffset.set(m, offset);
      offset += outputs[i];
    });
    const adapted = group.modules.filter((m) => targetModules.includes(m));
    return { group, outputs, width: offset, adapted, rows: rank * adapted.length, columnOffset };
  });
}
