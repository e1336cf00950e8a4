import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GraphBuilder } from "../graph/builder.ts";
import { binary, gather } from "../graph/ops.ts";
import { OnnxSession, sessionCreationCount, supportedExecutionProviders, type ExecutionProvider, type HostTensor } from "./onnx-session.ts";

const require = createRequire(import.meta.url);

/** sum = a + b, both [batch, 3]; picked = table[ids], ids [batch]. */
function buildGraph(): GraphBuilder {
  const g = new GraphBuilder("feeds");
  const a = g.input("a", "float32", ["batch", 3]);
  const b = g.input("b", "float32", ["batch", 3]);
  const ids = g.input("ids", "int64", ["batch"]);
  const table = g.initializer("table", "float32", [4, 2], Float32Array.from([0, 1, 10, 11, 20, 21, 30, 31]));
  g.output(binary(g, "Add", "/add", a, b), "sum");
  g.output(gather(g, "/pick", table, ids), "picked");
  return g;
}

function f32(shape: number[], values?: number[]): HostTensor {
  const size = shape.reduce((p, d) => p * d, 1);
  return { dtype: "float32", shape, data: Float32Array.from(values ?? Array.from({ length: size }, (_, i) => i)) };
}

function goodFeeds(): Record<string, HostTensor> {
  return {
    a: f32([2, 3]),
    b: f32([2, 3], [10, 20, 30, 40, 50, 60]),
    ids: { dtype: "int64", shape: [2], data: BigInt64Array.from([3n, 1n]) },
  };
}

describe("OnnxSession", () => {
  const g = buildGraph();
  let session: OnnxSession;
  beforeAll(async () => {
    session = await OnnxSession.create(g.serialize(), { inputs: g.inputs, outputs: g.outputs });
  });
  afterAll(() => session.dispose());

  it("runs with valid feeds and returns every output by default", async () => {
    const out = await session.run(goodFeeds());
    expect(Object.keys(out).sort()).toEqual(["picked", "sum"]);
    expect(out.sum).toEqual({ dtype: "float32", shape: [2, 3], data: Float32Array.from([10, 21, 32, 43, 54, 65]) });
    expect([...(out.picked.data as Float32Array)]).toEqual([30, 31, 10, 11]);
    expect(out.picked.shape).toEqual([2, 2]);
  });

  it("returns only the requested outputs, and refuses an unknown one", async () => {
    const out = await session.run(goodFeeds(), ["picked"]);
    expect(Object.keys(out)).toEqual(["picked"]);
    await expect(session.run(goodFeeds(), ["logits"])).rejects.toThrow('the graph has no output "logits"');
  });

  it("refuses a missing input", async () => {
    const { b: _unused, ...feeds } = goodFeeds();
    await expect(session.run(feeds)).rejects.toThrow('missing input "b"');
  });

  it("refuses an unexpected input, listing what the graph takes", async () => {
    await expect(session.run({ ...goodFeeds(), c: f32([2, 3]) })).rejects.toThrow(/unexpected input "c" \(the graph takes a, b, ids/);
  });

  it("refuses a wrong dtype", async () => {
    const feeds = { ...goodFeeds(), a: { dtype: "float64" as const, shape: [2, 3], data: new Float64Array(6) } };
    await expect(session.run(feeds)).rejects.toThrow('input "a" must be float32, got float64');
    const ids = { ...goodFeeds(), ids: { dtype: "int32" as const, shape: [2], data: Int32Array.from([3, 1]) } };
    await expect(session.run(ids)).rejects.toThrow('input "ids" must be int64, got int32');
  });

  it("refuses a wrong rank", async () => {
    await expect(session.run({ ...goodFeeds(), a: f32([6]) })).rejects.toThrow('input "a" must have rank 2 [batch, 3], got [6]');
  });

  it("refuses a fixed dimension of the wrong size", async () => {
    const feeds = { ...goodFeeds(), a: f32([3, 2]) };
    await expect(session.run(feeds)).rejects.toThrow('input "a" dimension 1 must be 3, got 2');
  });

  it("refuses one symbolic dimension bound to two sizes", async () => {
    const feeds = { ...goodFeeds(), b: f32([5, 3]) };
    await expect(session.run(feeds)).rejects.toThrow('input "b" dimension 0 (batch) is 5 but another input bound batch=2');
    const ids = { ...goodFeeds(), ids: { dtype: "int64" as const, shape: [3], data: BigInt64Array.from([0n, 1n, 2n]) } };
    await expect(session.run(ids)).rejects.toThrow('input "ids" dimension 0 (batch) is 3 but another input bound batch=2');
  });

  it("binds a symbolic dimension afresh on every run", async () => {
    const feeds = {
      a: f32([1, 3]),
      b: f32([1, 3], [1, 1, 1]),
      ids: { dtype: "int64" as const, shape: [1], data: BigInt64Array.from([2n]) },
    };
    const out = await session.run(feeds);
    expect([...(out.sum.data as Float32Array)]).toEqual([1, 2, 3]);
    expect((await session.run(goodFeeds())).sum.shape).toEqual([2, 3]);
  });

  it("refuses data whose length does not match the shape", async () => {
    const feeds = { ...goodFeeds(), b: { dtype: "float32" as const, shape: [2, 3], data: new Float32Array(5) } };
    await expect(session.run(feeds)).rejects.toThrow('input "b" has 5 elements for shape [2, 3]');
  });

  it("turns a failed run into an error naming the inputs", async () => {
    // Index 9 is outside the 4-row table: the feeds pass our checks but the Gather kernel fails.
    const feeds = { ...goodFeeds(), ids: { dtype: "int64" as const, shape: [2], data: BigInt64Array.from([9n, 0n]) } };
    await expect(session.run(feeds)).rejects.toThrow(/^onnxruntime run failed: .*\(inputs a:float32\[2,3\] b:float32\[2,3\] ids:int64\[2\]\)$/s);
  });
});

describe("OnnxSession.create", () => {
  const g = buildGraph();
  const signature = { inputs: g.inputs, outputs: g.outputs };

  it("counts one creation per session", async () => {
    const before = sessionCreationCount();
    const first = await OnnxSession.create(g.serialize(), signature);
    expect(sessionCreationCount()).toBe(before + 1);
    const second = await OnnxSession.create(g.serialize(), signature);
    expect(sessionCreationCount()).toBe(before + 2);
    await first.dispose();
    await second.dispose();
    expect(sessionCreationCount()).toBe(before + 2);
  });

  it("refuses an execution provider this build does not have, listing those it has", async () => {
    const available = supportedExecutionProviders();
    expect(available).toContain("cpu");
    const missing = ["webgpu", "cuda", "dml-not-a-provider"].find((name) => !available.includes(name))!;
    const before = sessionCreationCount();
    await expect(OnnxSession.create(g.serialize(), signature, { executionProvider: missing as ExecutionProvider })).rejects.toThrow(
      `execution provider "${missing}" is not available in this onnxruntime-node build (available: ${available.join(", ")})`,
    );
    expect(sessionCreationCount()).toBe(before);
  });

  it.skipIf(
    existsSync(join(dirname(require.resolve("onnxruntime-node")), "..", "bin", "napi-v6", process.platform, process.arch, "libonnxruntime_providers_cuda.so")),
  )("fails naming a provider whose libraries are not installed (CUDA here) rather than falling back to the CPU", async () => {
    const before = sessionCreationCount();
    const error = await OnnxSession.create(g.serialize(), signature, { executionProvider: "cuda" }).then(
      () => null,
      (e: Error) => e,
    );
    expect(error?.message).toMatch(
      /^onnxruntime could not load the model on cuda: .*Failed to load shared library.*is the cuda execution provider installed on this host\? See the README's GPU section/s,
    );
    expect(sessionCreationCount()).toBe(before);
  });

  it("turns bytes that are not a model into a readable error, counting no session", async () => {
    const before = sessionCreationCount();
    await expect(OnnxSession.create(Uint8Array.from([1, 2, 3, 4, 5]), signature)).rejects.toThrow(
      /^onnxruntime could not load the model\b.*protobuf parsing failed/,
    );
    expect(sessionCreationCount()).toBe(before);
  });
});
