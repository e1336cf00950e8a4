/**
 * The adapters an engine can serve right now. Registering validates an adapter against the
 * engine's basis and keeps its M compact; nothing about the ONNX session changes, so adding the
 * thousandth adapter costs what adding the first did.
 */
import { adapterKey, type Basis, type PicaAdapter } from "../pica/types.ts";
import { validateAdapterFor } from "../pica/adapter-format.ts";
import type { ModelConfig } from "../model/config.ts";
import type { LinearModule } from "../model/weights.ts";

/** An adapter ready to be placed in batch rows. */
export interface ResidentAdapter {
  id: string;
  adapter: PicaAdapter;
  bytes: number; // size of its M tensors
}

/** Adapters were asked for before the engine's basis was ready. */
export class BasisNotReadyError extends Error {
  constructor() {
    super("the PiCa basis of this runner is still being computed; adapters are served once it is ready");
    this.name = "BasisNotReadyError";
  }
}

/** A row asked for an adapter that is not registered (never loaded, or evicted since). */
export class AdapterNotLoadedError extends Error {
  override readonly name = "AdapterNotLoadedError";
  constructor(readonly id: string) {
    super(`adapter ${id} is not loaded`);
  }
}

export class AdapterRegistry {
  private readonly resident = new Map<string, ResidentAdapter>();
  #basis: Basis | null = null;

  constructor(
    private readonly config: ModelConfig,
    private readonly rankCap: number | null, // the largest adapter rank served; null: the basis's rMax
    readonly targetModules: readonly LinearModule[],
  ) {}

  /** The basis adapters are checked against, or null while it is being computed. */
  get basis(): Basis | null {
    return this.#basis;
  }

  /** The largest adapter rank served: the cap asked for, else the basis's rMax (0 until it is known). */
  get maxRank(): number {
    return this.rankCap ?? this.#basis?.rMax ?? 0;
  }

  /** Sets the basis once it is known: it must cover the layers, the largest rank served and the modules. */
  setBasis(basis: Basis): void {
    if (this.#basis !== null && this.#basis.id !== basis.id)
      throw new Error(`this engine already serves basis ${this.#basis.id}; it cannot change to ${basis.id}`);
    if (this.rankCap !== null && this.rankCap > basis.rMax)
      throw new Error(`the largest rank served must be an integer in [1, ${basis.rMax}] (the basis's rMax), got ${this.rankCap}`);
    if (basis.numLayers !== this.config.numLayers) throw new Error(`basis has ${basis.numLayers} layers, the model ${this.config.numLayers}`);
    for (const module of this.targetModules) {
      if (!basis.targetModules.includes(module)) throw new Error(`module ${module} is not in the basis (it covers ${basis.targetModules.join(", ")})`);
    }
    this.#basis = basis;
  }

  /** Validates and registers an adapter under `id` (replacing one of the same id). */
  register(id: string, adapter: PicaAdapter): ResidentAdapter {
    if (this.#basis === null) throw new BasisNotReadyError();
    validateAdapterFor(adapter, { config: this.config, basis: this.#basis });
    if (adapter.rank > this.maxRank) {
      throw new Error(`adapter ${id} has rank ${adapter.rank}, above the largest rank this engine serves, ${this.maxRank}`);
    }
    for (const module of adapter.targetModules) {
      if (!this.targetModules.includes(module)) {
        throw new Error(`adapter ${id} targets ${module}, which this engine does not adapt (it adapts ${this.targetModules.join(", ")})`);
      }
    }
    let bytes = 0;
    for (const tensor of adapter.m.values()) bytes += tensor.data.byteLength;
    const entry = { id, adapter, bytes };
    this.resident.set(id, entry);
    return entry;
  }

  /** Forgets an adapter; rows already using it keep their copy until they finish. */
  evict(id: string): boolean {
    return this.resident.delete(id);
  }

  /** The resident adapter for `id`, or an error naming it. */
  get(id: string): ResidentAdapter {
    const entry = this.resident.get(id);
    if (entry === undefined) throw new AdapterNotLoadedError(id);
    return entry;
  }

  /** Whether `id` is resident. */
  has(id: string): boolean {
    return this.resident.has(id);
  }

  /** Ids of the resident adapters. */
  ids(): string[] {
    return [...this.resident.keys()];
  }

  /** Number of resident adapters. */
  get size(): number {
    return this.resident.size;
  }

  /** M of a module in a layer ([out, rank]), or null when the adapter does not target it. */
  static moduleWeights(adapter: PicaAdapter, module: LinearModule, layer: number): Float32Array | null {
    if (!adapter.targetModules.includes(module)) return null;
    return adapter.m.get(adapterKey(adapter.sharing, module, layer))!.data;
  }
}
