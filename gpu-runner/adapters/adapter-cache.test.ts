import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LlamaEngine } from "../engine/llama-engine.ts";
import { serializeAdapter } from "../pica/adapter-format.ts";
import { computeBasis } from "../pica/basis.ts";
import type { PicaAdapter } from "../pica/types.ts";
import { FIXTURE_BASIS_ID, gaussianAdapter, smallConfig } from "../testing/pica-fixtures.ts";
import { randomAdapter } from "../testing/random-adapters.ts";
import { tinyModel } from "../testing/tiny-checkpoints.ts";
import { AdapterCache, AdapterCacheFullError, AdapterRejectedError, type AdapterHost } from "./adapter-cache.ts";
import { AdapterNotFoundError, type AdapterStore } from "./adapter-store.ts";

/** In-memory store that counts reads; `gate` holds reads back, `failures` fails that many first. */
class MemoryStore implements AdapterStore {
  readonly blobs = new Map<string, Uint8Array>();
  reads = 0;
  failures = 0;
  gate: Promise<void> = Promise.resolve();

  async read(id: string): Promise<Uint8Array> {
    this.reads++;
    await this.gate;
    if (this.failures > 0) {
      this.failures--;
      throw new Error("connection reset");
    }
    const blob = this.blobs.get(id);
    if (blob === undefined) throw new AdapterNotFoundError(id);
    return blob;
  }
}

/** Engine stand-in that refuses other bases, like the real registry, and records what is registered. */
class FakeEngine implements AdapterHost {
  readonly registered = new Set<string>();
  registerAdapter(id: string, adapter: PicaAdapter): { bytes: number } {
    if (adapter.basisId !== FIXTURE_BASIS_ID) throw new Error(`adapter basis ${adapter.basisId} is not ${FIXTURE_BASIS_ID}`);
    this.registered.add(id);
    let bytes = 0;
    for (const tensor of adapter.m.values()) bytes += tensor.data.byteLength;
    return { bytes };
  }
  evictAdapter(id: string): boolean {
    return this.registered.delete(id);
  }
}

/** A q_proj-only shared adapter of smallConfig: 16 × rank floats = 64 × rank bytes. */
const blob = (rank: number, seed: number, basisId = FIXTURE_BASIS_ID) =>
  serializeAdapter({ ...gaussianAdapter(smallConfig, { sharing: "shared", rank, modules: ["q_proj"], seed }), basisId });

function setup(limits: { maxAdapters: number; maxBytes: number }, ranks: Record<string, number> = {}) {
  const store = new MemoryStore();
  for (const [index, id] of ["a", "b", "c", "d"].entries()) store.blobs.set(id, blob(ranks[id] ?? 2, index + 1));
  const engine = new FakeEngine();
  return { store, engine, cache: new AdapterCache(engine, store, limits) };
}

const sorted = (ids: Iterable<string>) => [...ids].sort();

describe("AdapterCache", () => {
  it("evicts the least recently used adapter past the count budget, a hit refreshing recency", async () => {
    const { engine, cache } = setup({ maxAdapters: 2, maxBytes: 1e9 });
    (await cache.acquire("a"))();
    (await cache.acquire("b"))();
    (await cache.acquire("a"))(); // hit: b is now least recently used
    (await cache.acquire("c"))();
    expect([cache.has("a"), cache.has("b"), cache.has("c")]).toEqual([true, false, true]);
    expect(sorted(engine.registered)).toEqual(["a", "c"]);
    expect(cache.stats()).toEqual({ resident: 2, bytes: 256, hits: 1, misses: 3, loads: 3, evictions: 1 });
  });

  it("evicts as many LRU adapters as the byte budget needs", async () => {
    const { engine, cache } = setup({ maxAdapters: 10, maxBytes: 400 }, { d: 4 });
    for (const id of ["a", "b", "c"]) (await cache.acquire(id))(); // 3 × 128 = 384 bytes
    (await cache.acquire("d"))(); // 256 bytes: a and b must go
    expect(sorted(engine.registered)).toEqual(["c", "d"]);
    expect(cache.stats()).toMatchObject({ resident: 2, bytes: 384, evictions: 2 });
  });

  it("never evicts pinned adapters and reports a full cache when everything is pinned", async () => {
    const { engine, cache } = setup({ maxAdapters: 2, maxBytes: 1e9 });
    const releaseA = await cache.acquire("a");
    (await cache.acquire("b"))();
    const releaseC = await cache.acquire("c"); // a is older but pinned: b goes
    expect(sorted(engine.registered)).toEqual(["a", "c"]);
    await expect(cache.acquire("d")).rejects.toThrow(/adapter cache is full: cannot load adapter d .*2 of 2 resident adapters pinned/);
    expect(cache.has("d")).toBe(false);
    expect(sorted(engine.registered)).toEqual(["a", "c"]);
    releaseA();
    releaseA(); // idempotent: must not unpin someone else's hold
    (await cache.acquire("d"))();
    expect(sorted(engine.registered)).toEqual(["c", "d"]);
    releaseC();
  });

  it("refuses an adapter bigger than the whole byte budget without registering it", async () => {
    const { engine, cache } = setup({ maxAdapters: 4, maxBytes: 200 }, { a: 4 });
    await expect(cache.acquire("a")).rejects.toThrow(/adapter cache is full: cannot load adapter a \(256 bytes\)/);
    expect(engine.registered.size).toBe(0);
  });

  it("shares one store read among 10 concurrent acquires of a cold adapter, each holding a pin", async () => {
    const { store, cache } = setup({ maxAdapters: 1, maxBytes: 1e9 });
    let open!: () => void;
    store.gate = new Promise((resolve) => (open = resolve));
    const pending = Array.from({ length: 10 }, () => cache.acquire("a"));
    open();
    const releases = await Promise.all(pending);
    expect(store.reads).toBe(1);
    expect(cache.stats()).toMatchObject({ resident: 1, misses: 10, loads: 1 });
    for (const release of releases.slice(1)) release();
    await expect(cache.acquire("b")).rejects.toThrow(/adapter cache is full/); // one pin still held
    releases[0]();
    (await cache.acquire("b"))();
    expect([cache.has("a"), cache.has("b")]).toEqual([false, true]);
  });

  it("refuses a corrupted blob (one flipped byte of tensor data) naming the adapter and the sha mismatch", async () => {
    const { store, engine, cache } = setup({ maxAdapters: 4, maxBytes: 1e9 });
    const bytes = blob(2, 9);
    const dataStart = 8 + new DataView(bytes.buffer, bytes.byteOffset).getUint32(0, true);
    bytes[dataStart] ^= 0x01; // lowest mantissa byte of the first float: still finite, only the hash notices
    store.blobs.set("bad", bytes);
    await expect(cache.acquire("bad")).rejects.toThrow(/adapter bad could not be loaded: .*tensors_sha256.*file corrupted/);
    expect(cache.has("bad")).toBe(false);
    expect(engine.registered.size).toBe(0);
    expect(cache.stats()).toMatchObject({ resident: 0, bytes: 0 });
  });

  it("refuses an adapter trained against another basis, naming it, and registers nothing", async () => {
    const { store, engine, cache } = setup({ maxAdapters: 4, maxBytes: 1e9 });
    store.blobs.set("other", blob(2, 5, "basis-b"));
    await expect(cache.acquire("other")).rejects.toThrow(/adapter other was refused by the engine: .*basis-b/);
    expect(cache.has("other")).toBe(false);
    expect(engine.registered.size).toBe(0);
  });

  it("does not cache failed loads: a later acquire retries the store", async () => {
    const { store, cache } = setup({ maxAdapters: 4, maxBytes: 1e9 });
    store.failures = 1;
    await expect(cache.acquire("a")).rejects.toThrow(/adapter a could not be loaded: connection reset/);
    (await cache.acquire("a"))();
    expect(store.reads).toBe(2);
    await expect(cache.acquire("missing")).rejects.toBeInstanceOf(AdapterNotFoundError);
    await expect(cache.acquire("missing")).rejects.toBeInstanceOf(AdapterNotFoundError);
    expect(store.reads).toBe(4);
  });

  it("fails with a class per cause, naming the adapter, for the API to map without reading messages", async () => {
    const failure = (promise: Promise<unknown>) =>
      promise.then(
        () => null,
        (error: unknown) => error,
      );
    const { store, cache } = setup({ maxAdapters: 4, maxBytes: 200 }, { a: 4 });
    const full = await failure(cache.acquire("a"));
    expect(full).toBeInstanceOf(AdapterCacheFullError);
    expect(full).toMatchObject({ id: "a", bytes: 256 });
    store.blobs.set("garbage", new Uint8Array([1, 2, 3]));
    const unreadable = await failure(cache.acquire("garbage"));
    expect(unreadable).toBeInstanceOf(AdapterRejectedError);
    expect(unreadable).toMatchObject({ id: "garbage", stage: "load" });
    store.blobs.set("other", blob(2, 5, "basis-b"));
    const refused = await failure(cache.acquire("other"));
    expect(refused).toBeInstanceOf(AdapterRejectedError);
    expect(refused).toMatchObject({ id: "other", stage: "register" });
    expect((refused as Error).cause).toBeInstanceOf(Error);
  });
});

describe("AdapterCache over the real LlamaEngine (tiny llama-gqa)", () => {
  const { config, weights } = tinyModel("llama-gqa");
  let engine: LlamaEngine;
  const store = new MemoryStore();

  beforeAll(async () => {
    const basis = await computeBasis(config, weights, { rMax: 8 });
    engine = await LlamaEngine.create(config, weights, { adapters: { basis, rank: 4 } });
    for (let seed = 1; seed <= 4; seed++) store.blobs.set(`t/${seed}`, serializeAdapter(randomAdapter(config, basis, { rank: 4, seed })));
    store.blobs.set("foreign", serializeAdapter(randomAdapter(config, { ...basis, id: "some-other-basis" }, { rank: 4, seed: 9 })));
  });
  afterAll(() => engine.dispose());

  it("unregisters evicted adapters from the engine and refuses a foreign basis", async () => {
    const cache = new AdapterCache(engine, store, { maxAdapters: 2, maxBytes: 1e9 });
    for (const id of ["t/1", "t/2", "t/3", "t/4"]) (await cache.acquire(id))();
    expect(["t/1", "t/2", "t/3", "t/4"].map((id) => engine.hasAdapter(id))).toEqual([false, false, true, true]);
    expect(cache.stats()).toMatchObject({ resident: 2, evictions: 2 });
    await expect(cache.acquire("foreign")).rejects.toThrow(/adapter foreign was refused by the engine: .*some-other-basis/);
    expect(engine.hasAdapter("foreign")).toBe(false);
    expect(["t/3", "t/4"].map((id) => engine.hasAdapter(id))).toEqual([true, true]);
  });
});
