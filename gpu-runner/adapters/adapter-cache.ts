/**
 * Which adapters are resident in an engine: loaded on first use from a store, kept in LRU order
 * under a count budget and a byte budget, and pinned while a request runs with them so they are
 * never evicted from under it. The one owner of registerAdapter/evictAdapter calls on its engine.
 */
import { parseAdapter } from "../pica/adapter-format.ts";
import { BasisNotReadyError } from "../engine/adapter-registry.ts";
import type { PicaAdapter } from "../pica/types.ts";
import { AdapterNotFoundError, type AdapterStore } from "./adapter-store.ts";

/** The part of an engine the cache drives (LlamaEngine fits; tests may pass a fake). */
export interface AdapterHost {
  registerAdapter(id: string, adapter: PicaAdapter): { bytes: number };
  evictAdapter(id: string): boolean;
}

/** Budgets of an AdapterCache; both must hold after every load. */
export interface AdapterCacheLimits {
  maxAdapters: number; // resident adapters at most
  maxBytes: number; // total size of their M tensors at most
}

/** Counters of an AdapterCache. */
export interface AdapterCacheStats {
  resident: number;
  bytes: number;
  hits: number; // acquires that found the adapter resident
  misses: number; // acquires that did not (including those that joined a load in flight)
  loads: number; // store reads started
  evictions: number;
}

/** The adapter is pinned by a running request, so it cannot be replaced or evicted now. */
export class AdapterInUseError extends Error {
  override readonly name = "AdapterInUseError";
  constructor(readonly id: string) {
    super(`adapter ${id} is in use by running requests; try again when they finish`);
  }
}

/** A stored adapter that cannot be served: its file does not read or parse, or the engine refuses it (wrong basis, rank, modules). */
export class AdapterRejectedError extends Error {
  override readonly name = "AdapterRejectedError";
  constructor(
    readonly id: string,
    readonly stage: "load" | "register", // reading and parsing the file, or registering it with the engine
    cause: unknown,
  ) {
    super(`adapter ${id} ${stage === "load" ? "could not be loaded" : "was refused by the engine"}: ${(cause as Error).message}`, { cause });
  }
}

/** Even evicting every unpinned adapter would not make room for this one: a retry once requests finish may succeed. */
export class AdapterCacheFullError extends Error {
  override readonly name = "AdapterCacheFullError";
  constructor(
    readonly id: string,
    readonly bytes: number,
    state: { pinned: number; resident: number; residentBytes: number; maxAdapters: number; maxBytes: number },
  ) {
    super(
      `adapter cache is full: cannot load adapter ${id} (${bytes} bytes) with ${state.pinned} of ${state.resident} resident adapters pinned ` +
        `(${state.residentBytes} bytes resident; limits ${state.maxAdapters} adapters, ${state.maxBytes} bytes)`,
    );
  }
}

/** Drops one pin taken by `acquire`; calling it again does nothing. */
export type ReleaseAdapter = () => void;

interface Entry {
  bytes: number;
  pins: number;
}

/** One load in flight and how many acquires wait on it (each gets a pin when it lands). */
interface Flight {
  done: Promise<void>;
  waiters: number;
}

/** LRU cache of the adapters registered in one engine, with single-flight loading and pinning. */
export class AdapterCache {
  // Map iteration order is insertion order, so re-inserting on use keeps it least-recent first.
  private readonly entries = new Map<string, Entry>();
  private readonly flights = new Map<string, Flight>();
  private counters = { hits: 0, misses: 0, loads: 0, evictions: 0 };
  private residentBytes = 0;

  constructor(
    private readonly engine: AdapterHost,
    private readonly store: AdapterStore,
    private readonly limits: AdapterCacheLimits,
    private readonly onLoad?: (seconds: number) => void, // observes each completed load
  ) {
    if (!Number.isSafeInteger(limits.maxAdapters) || limits.maxAdapters < 1) {
      throw new Error(`maxAdapters must be a positive integer, got ${limits.maxAdapters}`);
    }
    if (!(limits.maxBytes > 0)) throw new Error(`maxBytes must be positive, got ${limits.maxBytes}`);
  }

  /** Makes `id` resident and pins it; call the returned function when the request using it ends. */
  async acquire(id: string): Promise<ReleaseAdapter> {
    const entry = this.entries.get(id);
    if (entry !== undefined) {
      this.counters.hits++;
      this.entries.delete(id);
      this.entries.set(id, entry);
      return this.pin(id, entry);
    }
    this.counters.misses++;
    let flight = this.flights.get(id);
    if (flight === undefined) {
      const started: Flight = { done: Promise.resolve(), waiters: 0 };
      started.done = this.load(id, started).finally(() => this.flights.delete(id));
      this.flights.set(id, started);
      flight = started;
    }
    flight.waiters++;
    await flight.done;
    // load() already counted this waiter's pin, synchronously with registering, so no other
    // load finishing in between could evict the adapter before this caller holds it.
    return this.releaser(id, this.entries.get(id)!);
  }

  /**
   * Makes `id` resident from the given file bytes (checked like a store read), replacing a resident
   * copy that no request is using. Returns its resident size.
   */
  async insert(id: string, bytes: Uint8Array): Promise<{ bytes: number }> {
    await this.flights.get(id)?.done.catch(() => undefined);
    const entry = this.entries.get(id);
    if (entry !== undefined) {
      if (entry.pins > 0) throw new AdapterInUseError(id);
      this.evict(id);
    }
    const flight: Flight = { done: Promise.resolve(), waiters: 0 };
    flight.done = this.load(id, flight, bytes).finally(() => this.flights.delete(id));
    this.flights.set(id, flight);
    await flight.done;
    return { bytes: this.entries.get(id)!.bytes };
  }

  /** Evicts `id` unless a request is using it; false when it was not resident. */
  remove(id: string): boolean {
    const entry = this.entries.get(id);
    if (entry === undefined) return false;
    if (entry.pins > 0) throw new AdapterInUseError(id);
    this.evict(id);
    return true;
  }

  /** Resident adapter ids, least recently used first. */
  residentIds(): string[] {
    return [...this.entries.keys()];
  }

  /** Whether `id` is resident. */
  has(id: string): boolean {
    return this.entries.has(id);
  }

  /** Counters and current occupancy. */
  stats(): AdapterCacheStats {
    return { resident: this.entries.size, bytes: this.residentBytes, ...this.counters };
  }

  private pin(id: string, entry: Entry): ReleaseAdapter {
    entry.pins++;
    return this.releaser(id, entry);
  }

  private releaser(id: string, entry: Entry): ReleaseAdapter {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      if (entry.pins <= 0) throw new Error(`adapter ${id} released more often than acquired`);
      entry.pins--;
    };
  }

  private async load(id: string, flight: Flight, given?: Uint8Array): Promise<void> {
    this.counters.loads++;
    const started = performance.now();
    let adapter: PicaAdapter;
    try {
      adapter = parseAdapter(given ?? (await this.store.read(id)), `${id}.safetensors`);
    } catch (error) {
      if (error instanceof AdapterNotFoundError) throw error;
      throw new AdapterRejectedError(id, "load", error);
    }
    // Refuse before registering when even evicting every unpinned adapter would not make room.
    if (this.victimsFor(id, estimateBytes(adapter)) === null) throw this.fullError(id, estimateBytes(adapter));
    let registered: { bytes: number };
    try {
      registered = this.engine.registerAdapter(id, adapter);
    } catch (error) {
      if (error instanceof BasisNotReadyError) throw error; // not the adapter's fault: retry later
      throw new AdapterRejectedError(id, "register", error);
    }
    // The engine's byte count is the authority; recheck with it before evicting anything.
    const victims = this.victimsFor(id, registered.bytes);
    if (victims === null) {
      this.engine.evictAdapter(id);
      throw this.fullError(id, registered.bytes);
    }
    for (const victim of victims) this.evict(victim);
    this.entries.set(id, { bytes: registered.bytes, pins: flight.waiters });
    this.residentBytes += registered.bytes;
    this.onLoad?.((performance.now() - started) / 1000);
  }

  /** The unpinned least-recently-used adapters to evict so `bytes` more fit; null when no choice suffices. */
  private victimsFor(id: string, bytes: number): string[] | null {
    let count = this.entries.size + 1;
    let total = this.residentBytes + bytes;
    const victims: string[] = [];
    for (const [candidate, entry] of this.entries) {
      if (count <= this.limits.maxAdapters && total <= this.limits.maxBytes) break;
      if (entry.pins > 0 || candidate === id) continue;
      victims.push(candidate);
      count--;
      total -= entry.bytes;
    }
    return count <= this.limits.maxAdapters && total <= this.limits.maxBytes ? victims : null;
  }

  private evict(id: string): void {
    const entry = this.entries.get(id)!;
    this.engine.evictAdapter(id);
    this.entries.delete(id);
    this.residentBytes -= entry.bytes;
    this.counters.evictions++;
  }

  private fullError(id: string, bytes: number): AdapterCacheFullError {
    const pinned = [...this.entries.values()].filter((entry) => entry.pins > 0).length;
    const { maxAdapters, maxBytes } = this.limits;
    return new AdapterCacheFullError(id, bytes, { pinned, resident: this.entries.size, residentBytes: this.residentBytes, maxAdapters, maxBytes });
  }
}

/** Size of an adapter's M tensors as float32, which is what the engine keeps resident. */
function estimateBytes(adapter: PicaAdapter): number {
  let bytes = 0;
  for (const tensor of adapter.m.values()) bytes += tensor.data.length * 4;
  return bytes;
}
