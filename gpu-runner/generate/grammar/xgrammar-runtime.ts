/**
 * The one module that loads xgrammar (@mlc-ai/web-xgrammar 0.1.27, its WebAssembly build).
 *
 * Why it is loaded this way: the package is marked `"type": "module"` but its lib/index.js is a
 * UMD bundle around an Emscripten module. Imported as ES it finds neither `exports` nor `define`,
 * so it hangs its API on `globalThis.xgrammar`; and the Emscripten part locates itself with the
 * CommonJS globals `require` and `__filename`, which ES modules lack. So both are put on
 * globalThis while the bundle is imported and the WebAssembly instance starts, then put back.
 *
 * Why the bitmask is read from WebAssembly memory: the package hands out a matcher's bitmask only
 * through an async method, and the synchronous binding under it returns an Emscripten vector
 * whose elements cost one call each (1.5 ms for a 150k vocabulary, against 15 µs to compute it).
 * The decode loop masks logits synchronously, so the instance's memory is captured while it starts
 * and the vector's elements are copied from it in one `set`. That relies on two layouts, checked
 * once here on a vector of known contents: embind's handle keeps the object's address in
 * `$$.ptr`, and libc++'s std::vector starts with its begin and end pointers. If the check fails
 * the slow element-by-element copy is used instead, so results never depend on the shortcut.
 * Matchers are made through the binding's constructor (reached from a first matcher's handle)
 * with the arguments the package's async factory passes, so that a sequence's constraint can be
 * made where the sampler runs, without awaiting.
 */
import { createRequire } from "node:module";
import type * as XGrammarModule from "@mlc-ai/web-xgrammar";

/** The package's exports, as the bundle puts them on globalThis. */
export type XGrammar = typeof XGrammarModule;

/** The Emscripten std::vector<int32_t> a matcher's bitmask arrives in. */
interface NativeIntVector {
  size(): number;
  get(index: number): number;
  push_back(value: number): void;
  delete(): void;
  $$?: { ptr?: number };
}

/** The binding behind a GrammarMatcher (its `handle`, which the package's types mark private). */
export interface NativeMatcher {
  GetNextTokenBitmask(vocabSize: number): NativeIntVector;
  AcceptToken(tokenId: number, verbose: boolean): boolean;
  IsTerminated(): boolean;
  delete(): void;
}

/** What {@link loadXGrammar} resolves to. */
export interface XGrammarRuntime {
  readonly xgrammar: XGrammar;
  /** A matcher for a compiled grammar, made synchronously (the package's factory is async). */
  createMatcher(compiled: XGrammarModule.CompiledGrammar): NativeMatcher;
  /** Copies the matcher's next-token bitmask (ceil(vocabSize / 32) words) into `into`. */
  readBitmask(matcher: NativeMatcher, vocabSize: number, into: Int32Array): void;
  /** Whether bitmasks are copied straight from WebAssembly memory (false: element by element). */
  readonly readsMemoryDirectly: boolean;
}

type BitmaskReader = XGrammarRuntime["readBitmask"];

// The parts of WebAssembly used here; the project's lib settings do not declare the global.
interface WasmMemory {
  readonly buffer: ArrayBuffer;
}
const wasm = (globalThis as unknown as { WebAssembly: { instantiate: (...args: unknown[]) => Promise<unknown>; Memory: new (...args: never[]) => WasmMemory } })
  .WebAssembly;

let loading: Promise<XGrammarRuntime> | null = null;

/** Loads xgrammar once per process; later calls share the first load. */
export function loadXGrammar(): Promise<XGrammarRuntime> {
  loading ??= load().catch((error: unknown) => {
    loading = null;
    throw new Error(`cannot load @mlc-ai/web-xgrammar: ${(error as Error).message}`, { cause: error });
  });
  return loading;
}

function nativeMatcher(matcher: XGrammarModule.GrammarMatcher): NativeMatcher {
  return (matcher as unknown as { handle: NativeMatcher }).handle;
}

async function load(): Promise<XGrammarRuntime> {
  const require = createRequire(import.meta.url);
  const scope = globalThis as Record<string, unknown>;
  const saved = { require: Object.getOwnPropertyDescriptor(scope, "require"), __filename: Object.getOwnPropertyDescriptor(scope, "__filename") };
  const originalInstantiate = wasm.instantiate;
  let memory: WasmMemory | null = null;
  scope.require = require;
  scope.__filename = require.resolve("@mlc-ai/web-xgrammar");
  // The bundle instantiates its module from bytes, so the instance (and its memory) passes here.
  wasm.instantiate = async (...args: unknown[]) => {
    const result = (await originalInstantiate.apply(wasm, args)) as { instance?: { exports: object }; exports?: object };
    for (const value of Object.values(result.instance?.exports ?? result.exports ?? {})) if (value instanceof wasm.Memory) memory = value;
    return result;
  };
  let xgrammar: XGrammar;
  let probe: { info: XGrammarModule.TokenizerInfo; compiler: XGrammarModule.GrammarCompiler; grammar: XGrammarModule.CompiledGrammar };
  try {
    await import("@mlc-ai/web-xgrammar");
    xgrammar = scope.xgrammar as XGrammar;
    if (xgrammar === undefined || typeof xgrammar.GrammarCompiler !== "function") throw new Error("the bundle did not define globalThis.xgrammar");
    // The first call starts the WebAssembly instance; a two-token vocabulary keeps it quick.
    const info = await xgrammar.TokenizerInfo.createTokenizerInfo(["a", ""], "raw", false, 40, [1]);
    const compiler = await xgrammar.GrammarCompiler.createGrammarCompiler(info, false);
    const grammar = await compiler.compileGrammar('root ::= "a"');
    probe = { info, compiler, grammar };
  } finally {
    wasm.instantiate = originalInstantiate;
    restore(scope, "require", saved.require);
    restore(scope, "__filename", saved.__filename);
  }
  const matcher = await xgrammar.GrammarMatcher.createGrammarMatcher(probe.grammar);
  const native = nativeMatcher(matcher);
  const MatcherClass = (native as unknown as { constructor: new (...args: unknown[]) => NativeMatcher }).constructor;
  const direct = memory === null ? null : directReader(memory, native.GetNextTokenBitmask(40));
  matcher.dispose();
  probe.grammar.dispose();
  probe.compiler.dispose();
  probe.info.dispose();
  return {
    xgrammar,
    // The arguments the package's createGrammarMatcher passes: no stop-token override, stop at a stop token.
    createMatcher: (compiled) => new MatcherClass((compiled as unknown as { handle: unknown }).handle, undefined, false, -1),
    readBitmask: direct ?? readElementwise,
    readsMemoryDirectly: direct !== null,
  };
}

function restore(scope: Record<string, unknown>, name: string, descriptor: PropertyDescriptor | undefined): void {
  if (descriptor === undefined) delete scope[name];
  else Object.defineProperty(scope, name, descriptor);
}

const readElementwise: BitmaskReader = (matcher, vocabSize, into) => {
  const vector = matcher.GetNextTokenBitmask(vocabSize);
  try {
    const words = vector.size();
    if (words !== into.length) throw new Error(`xgrammar returned a bitmask of ${words} words, expected ${into.length}`);
    for (let word = 0; word < words; word++) into[word] = vector.get(word);
  } finally {
    vector.delete();
  }
};

// Builds the memory reader if a vector of known contents reads back correctly through it.
function directReader(memory: WasmMemory, sample: NativeIntVector): BitmaskReader | null {
  const VectorClass = (sample as unknown as { constructor: new () => NativeIntVector }).constructor;
  sample.delete();
  const known = [0x12345678, -7, 0, -1, 0x7fffffff];
  const probe = new VectorClass();
  try {
    for (const value of known) probe.push_back(value);
    const view = vectorView(memory, probe);
    if (view === null || view.length !== known.length || known.some((value, index) => view[index] !== value)) return null;
  } catch {
    return null;
  } finally {
    probe.delete();
  }
  return (matcher, vocabSize, into) => {
    const vector = matcher.GetNextTokenBitmask(vocabSize);
    try {
      const view = vectorView(memory, vector);
      if (view === null || view.length !== into.length) throw new Error(`xgrammar returned a bitmask of ${view?.length} words, expected ${into.length}`);
      into.set(view);
    } finally {
      vector.delete();
    }
  };
}

// libc++ on wasm32: a std::vector is { T* begin; T* end; T* capacity_end } at the handle's address.
function vectorView(memory: WasmMemory, vector: NativeIntVector): Int32Array | null {
  const address = vector.$$?.ptr;
  if (typeof address !== "number" || address <= 0 || address % 4 !== 0) return null;
  const words = new Uint32Array(memory.buffer);
  const begin = words[address >>> 2];
  const end = words[(address >>> 2) + 1];
  if (begin % 4 !== 0 || end < begin || end > memory.buffer.byteLength) return null;
  return new Int32Array(memory.buffer, begin, (end - begin) >>> 2);
}
