/**
 * PiCa's data: the frozen per-layer projections P (the basis, shared by every tenant) and an
 * adapter's trainable M. Conventions are PyTorch's: a weight W is [out, in], y = x Wᵀ, and an
 * adapter adds ΔW = M P, so y = x Wᵀ + (x Pᵀ) Mᵀ.
 */
import type { FloatTensor } from "../tensor.ts";
import { LINEAR_MODULES, type LinearModule } from "../model/weights.ts";

/** One M per module type shared by all layers (the default), or one per layer and module. */
export type SharingMode = "shared" | "per_layer";

/** The modules PiCa targets unless told otherwise: every linear layer of the decoder. */
export const DEFAULT_TARGET_MODULES: readonly LinearModule[] = LINEAR_MODULES;

/** The frozen projections of one base model. */
export interface Basis {
  id: string; // sha256 (hex) of the projections and the fields below: what adapters record
  baseFingerprint: string; // the base model these projections were computed from
  rMax: number; // rows of every P; an adapter of rank r uses the first r
  numLayers: number;
  targetModules: LinearModule[];
  projections: Map<string, FloatTensor>; // projectionKey(layer, module) → P [rMax, in], rows orthonormal
  /**
   * The smaller bases this one was extended from, by rows added, smallest first: its first `rMax`
   * rows are exactly theirs, so adapters trained against them are served by this one too.
   */
  prefixes?: BasisPrefix[];
}

/** A basis this one extends: its rows and its id. */
export interface BasisPrefix {
  rMax: number;
  id: string;
}

/** Whether an adapter of `rank` trained against basis `basisId` uses rows of `basis`: its own, or those of a basis it extends. */
export function basisServes(basis: Pick<Basis, "id" | "prefixes">, basisId: string, rank: number): boolean {
  return basisId === basis.id || (basis.prefixes ?? []).some((prefix) => prefix.id === basisId && rank <= prefix.rMax);
}

/** A tenant's adapter: M for each targeted module (shared) or layer and module (per_layer). */
export interface PicaAdapter {
  rank: number;
  sharing: SharingMode;
  targetModules: LinearModule[];
  basisId: string;
  baseFingerprint: string;
  m: Map<string, FloatTensor>; // adapterKey(...) → M [out, rank]
  provenance: Record<string, unknown>; // where it came from: a job, a merge, a PEFT import
}

/** Key of P for a layer and module. */
export function projectionKey(layer: number, module: LinearModule): string {
  return `${layer}.${module}`;
}

/** Key of M: the module alone when shared, layer and module otherwise. */
export function adapterKey(sharing: SharingMode, module: LinearModule, layer: number): string {
  return sharing === "shared" ? module : `${layer}.${module}`;
}
