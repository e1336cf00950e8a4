import { describe, expect, it } from "vitest";
import { OnnxSession } from "../runtime/onnx-session.ts";
import { GraphBuilder, type Value } from "./builder.ts";
import { binary, broadcastShapes, concat, gather, gemmTransB, matMul, reduceMean, reshape, slice, softmax, splitHalves, transpose, unsqueeze } from "./ops.ts";

function initializerNames(g: GraphBuilder): string[] {
  return g.toModelProto().graph!.initializer!.map((t) => t.name!);
}

describe("GraphBuilder bookkeeping", () => {
  it("refuses a duplicate node name, naming it", () => {
    const g = new GraphBuilder("g");
    const x = g.input("x", "float32", [2, 3]);
    binary(g, "Add", "/model/add", x, x);
    expect(() => binary(g, "Mul", "/model/add", x, x)).toThrow("duplicate node name /model/add");
    expect(g.nodes).toHaveLength(1);
  });

  it("refuses a duplicate value name, from an input or a node's output", () => {
    const g = new GraphBuilder("g");
    const x = g.input("x", "float32", [2]);
    expect(() => g.input("x", "float32", [3])).toThrow("duplicate value name x");
    expect(() => g.initializer("x", "float32", [1], new Float32Array(1))).toThrow("duplicate value name x");
    expect(() => g.addNode("Neg", [x], [{ dtype: "float32", shape: [2] }], { name: "/neg", outputNames: ["x"] })).toThrow("duplicate value name x");
  });

  it("refuses a value from another graph, even one with the same name", () => {
    const g = new GraphBuilder("g");
    const other = new GraphBuilder("other");
    const own = g.input("x", "float32", [2]);
    const foreign = other.input("x", "float32", [2]);
    expect(() => binary(g, "Add", "/add", own, foreign)).toThrow("node /add: input x is not a value of this graph");
  });

  it("refuses an initializer whose data does not fill its shape, and a negative dimension", () => {
    const g = new GraphBuilder("g");
    expect(() => g.initializer("w", "float32", [2, 3], new Float32Array(5))).toThrow("initializer w: 5 elements for shape [2, 3] (needs 6)");
    expect(() => g.input("bad", "float32", [2, -1])).toThrow("value bad: invalid dimension -1");
  });

  it("names node outputs <node>/output_i and renames graph outputs through Identity", () => {
    const g = new GraphBuilder("g");
    const x = g.input("x", "float32", [2]);
    const y = binary(g, "Add", "/model/add", x, x);
    expect(y.name).toBe("/model/add/output_0");
    const out = g.output(y, "logits");
    expect(out.name).toBe("logits");
    expect(out.shape).toEqual([2]);
    expect(g.nodes.at(-1)).toMatchObject({ opType: "Identity", inputs: ["/model/add/output_0"], outputs: ["logits"] });
    expect(g.outputs.map((o) => o.name)).toEqual(["logits"]);
  });

  it("emits a shared constant once per distinct content", () => {
    const g = new GraphBuilder("g");
    const a = g.constInt64([1, 2]);
    const b = g.constInt64([1, 2]);
    expect(b).toBe(a);
    expect(a.name).toBe("/model/constants/INT64/[2]1_2");
    const scalar = g.constInt64([1], []);
    expect(scalar).not.toBe(g.constInt64([1]));
    expect(g.constFloat(0.5)).toBe(g.constFloat(0.5));
    expect(g.constFloat(0.5, "float64")).not.toBe(g.constFloat(0.5));
    expect(initializerNames(g).sort()).toEqual(
      [
        "/model/constants/INT64/[2]1_2",
        "/model/constants/INT64/1",
        "/model/constants/INT64/[1]1",
        "/model/constants/FLOAT/0.5",
        "/model/constants/DOUBLE/0.5",
      ].sort(),
    );
    expect(g.initializerBytes()).toBe(16 + 8 + 8 + 4 + 8);
  });

  it("ops reuse the shared constants they need (two slices on the same axis add one axis constant)", () => {
    const g = new GraphBuilder("g");
    const x = g.input("x", "float32", [4, 10]);
    slice(g, "/s1", x, 1, 0, 5);
    slice(g, "/s2", x, 1, 5, 10);
    // starts 0 and 5, ends 5 and 10, axis 1: [0], [5], [10], [1]
    expect(initializerNames(g).sort()).toEqual(
      ["/model/constants/INT64/[1]0", "/model/constants/INT64/[1]5", "/model/constants/INT64/[1]10", "/model/constants/INT64/[1]1"].sort(),
    );
  });
});

describe("shape inference", () => {
  const graph = () => new GraphBuilder("shapes");

  it("broadcastShapes: numpy rules with symbolic dims", () => {
    expect(broadcastShapes("n", [2, 1, 4], [3, 1])).toEqual([2, 3, 4]);
    expect(broadcastShapes("n", ["batch", 1, 4], [1, "tokens", 4])).toEqual(["batch", "tokens", 4]);
    expect(broadcastShapes("n", [4], [])).toEqual([4]);
  });

  it("broadcasting errors name the op, both shapes and the dimensions", () => {
    const g = graph();
    const a = g.input("a", "float32", [2, 3]);
    const b = g.input("b", "float32", [2, 4]);
    expect(() => binary(g, "Add", "/add", a, b)).toThrow("/add: cannot broadcast [2, 3] with [2, 4] (dimensions 3 and 4)");
    const c = g.input("c", "float32", ["batch", 3]);
    const d = g.input("d", "float32", ["tokens", 3]);
    expect(() => binary(g, "Mul", "/mul", c, d)).toThrow("/mul: cannot broadcast [batch, 3] with [tokens, 3] (dimensions batch and tokens)");
  });

  it("binary ops refuse mixed dtypes", () => {
    const g = graph();
    const a = g.input("a", "float32", [2]);
    const b = g.input("b", "float64", [2]);
    expect(() => binary(g, "Sub", "/sub", a, b)).toThrow(/\/sub: dtype mismatch a:float32, b:float64/);
  });

  it("matMul broadcasts batch dims and keeps symbolic ones", () => {
    const g = graph();
    const a = g.input("a", "float32", ["batch", 1, "tokens", 8]);
    const b = g.input("b", "float32", [4, 8, 5]);
    expect(matMul(g, "/mm", a, b).shape).toEqual(["batch", 4, "tokens", 5]);
    const c = g.input("c", "float32", [3, 8]);
    const w = g.input("w", "float32", [8, 2]);
    expect(matMul(g, "/mm2", c, w).shape).toEqual([3, 2]);
    const k = g.input("k", "float32", [2, "heads", "d", "past"]);
    const q = g.input("q", "float32", [2, "heads", "tokens", "d"]);
    expect(matMul(g, "/scores", q, k).shape).toEqual([2, "heads", "tokens", "past"]);
  });

  it("matMul errors name both shapes", () => {
    const g = graph();
    const a = g.input("a", "float32", [2, 3, 4]);
    const b = g.input("b", "float32", [5, 6]);
    expect(() => matMul(g, "/mm", a, b)).toThrow("/mm: inner dimensions differ: [2, 3, 4] × [5, 6]");
    const v = g.input("v", "float32", [4]);
    expect(() => matMul(g, "/mv", a, v)).toThrow("/mv: MatMul needs rank ≥ 2, got [2, 3, 4] × [4]");
    const c = g.input("c", "float32", [3, 4, 6]);
    const e = g.input("e", "float32", [2, 6, 7]);
    expect(() => matMul(g, "/batch", c, e)).toThrow("/batch: cannot broadcast [3] with [2] (dimensions 3 and 2)");
  });

  it("gemmTransB: [M, K] × [N, K]ᵀ + bias", () => {
    const g = graph();
    const x = g.input("x", "float32", ["rows", 6]);
    const w = g.initializer("w", "float32", [4, 6], new Float32Array(24));
    const bias = g.initializer("bias", "float32", [4], new Float32Array(4));
    const y = gemmTransB(g, "/gemm", x, w, bias);
    expect(y.shape).toEqual(["rows", 4]);
    expect(g.nodes.at(-1)?.attributes).toEqual({ transB: 1 });
    const wrong = g.initializer("wrong", "float32", [4, 5], new Float32Array(20));
    expect(() => gemmTransB(g, "/bad", x, wrong)).toThrow("/bad: Gemm inner dimensions differ: [rows, 6] × [4, 5]ᵀ");
    const badBias = g.initializer("badBias", "float32", [3], new Float32Array(3));
    expect(() => gemmTransB(g, "/badBias", x, w, badBias)).toThrow("/badBias: cannot broadcast [rows, 4] with [3] (dimensions 4 and 3)");
    const x3 = g.input("x3", "float32", [2, 3, 6]);
    expect(() => gemmTransB(g, "/rank", x3, w)).toThrow("/rank: Gemm needs 2-D operands, got [2, 3, 6] and [4, 6]");
  });

  it("reshape: 0 copies, -1 infers, a size mismatch is an error naming both shapes", () => {
    const g = graph();
    const x = g.input("x", "float32", [2, 3, 4]);
    expect(reshape(g, "/r1", x, [0, -1]).shape).toEqual([2, 12]);
    expect(reshape(g, "/r2", x, [-1, 4]).shape).toEqual([6, 4]);
    expect(reshape(g, "/r3", x, [0, 0, 2, 2]).shape).toEqual([2, 3, 2, 2]);
    expect(() => reshape(g, "/r4", x, [5, 5])).toThrow("/r4: cannot reshape [2, 3, 4] to [5, 5]");
    expect(() => reshape(g, "/r5", x, [-1, 5])).toThrow("/r5: cannot reshape [2, 3, 4] to [-1, 5]");
  });

  it("reshape with symbolic dims: 0 keeps a symbol, symbolic targets need a shape input", () => {
    const g = graph();
    const x = g.input("x", "float32", ["batch", "tokens", 8]);
    expect(reshape(g, "/keep", x, [0, 0, 2, 4]).shape).toEqual(["batch", "tokens", 2, 4]);
    expect(() => reshape(g, "/infer", x, [0, -1])).toThrow(/\/infer: reshape \[batch, tokens, 8\] to \[0, -1\] infers a symbolic size/);
    expect(() => reshape(g, "/symbolic", x, ["batch", 8, "tokens"])).toThrow(/needs a runtime shape input/);
    const flat = reshape(g, "/flat", x, [-1, 8], { outShape: ["rows", 8] });
    expect(flat.shape).toEqual(["rows", 8]);
  });

  it("transpose permutes the shape", () => {
    const g = graph();
    const x = g.input("x", "float32", ["batch", "tokens", 4, 16]);
    expect(transpose(g, "/t", x, [0, 2, 3, 1]).shape).toEqual(["batch", 4, 16, "tokens"]);
    expect(() => transpose(g, "/bad", x, [1, 0])).toThrow("/bad: perm [1,0] does not match rank of [batch, tokens, 4, 16]");
  });

  it("concat: numeric sizes add, a symbolic one makes a named symbolic size", () => {
    const g = graph();
    const a = g.input("a", "float32", [2, 3]);
    const b = g.input("b", "float32", [2, 5]);
    expect(concat(g, "/c1", [a, b], -1).shape).toEqual([2, 8]);
    const past = g.input("past", "float32", [1, 2, "past", 4]);
    const now = g.input("now", "float32", [1, 2, "tokens", 4]);
    expect(concat(g, "/kv", [past, now], 2, "context").shape).toEqual([1, 2, "context", 4]);
    expect(concat(g, "/kv2", [past, now], 2).shape).toEqual([1, 2, "/kv2/concat", 4]);
    expect(() => concat(g, "/c2", [a, past], 0)).toThrow("/c2: rank mismatch in Concat: [2, 3], [1, 2, past, 4]");
    const c = g.input("c", "float32", [3, 5]);
    expect(() => concat(g, "/c3", [b, c], 1)).toThrow("/c3: Concat shapes differ off axis 1: [2, 5], [3, 5]");
    expect(() => concat(g, "/c4", [a, b], 2)).toThrow("/c4: axis 2 out of range for rank 2");
  });

  it("slice clamps like ONNX and needs an output size on a symbolic axis", () => {
    const g = graph();
    const x = g.input("x", "float32", [2, 10]);
    expect(slice(g, "/s1", x, 1, 2, 7).shape).toEqual([2, 5]);
    expect(slice(g, "/s2", x, 1, 2, -1).shape).toEqual([2, 7]);
    expect(slice(g, "/s3", x, -1, 4, 1000).shape).toEqual([2, 6]);
    expect(slice(g, "/s4", x, 1, 8, 3).shape).toEqual([2, 0]);
    const y = g.input("y", "float32", ["tokens", 4]);
    expect(() => slice(g, "/s5", y, 0, 0, 2)).toThrow("/s5: slice of symbolic axis needs an output dimension");
    expect(slice(g, "/s6", y, 0, 0, 2, "head").shape).toEqual(["head", 4]);
  });

  it("gather: output rank is rank(x) - 1 + rank(indices)", () => {
    const g = graph();
    const table = g.initializer("embed", "float32", [10, 4], new Float32Array(40));
    const ids = g.input("ids", "int64", ["batch", "tokens"]);
    expect(gather(g, "/g1", table, ids).shape).toEqual(["batch", "tokens", 4]);
    const cols = g.input("cols", "int32", [3]);
    expect(gather(g, "/g2", table, cols, 1).shape).toEqual([10, 3]);
    const floats = g.input("floats", "float32", [3]);
    expect(() => gather(g, "/g3", table, floats)).toThrow("/g3: Gather indices must be integers, got float32");
  });

  it("unsqueeze inserts axes at output positions, negative ones counted in the output rank", () => {
    const g = graph();
    const x = g.input("x", "float32", [3, "t"]);
    expect(unsqueeze(g, "/u1", x, [0, -1]).shape).toEqual([1, 3, "t", 1]);
    expect(unsqueeze(g, "/u2", x, [1]).shape).toEqual([3, 1, "t"]);
    expect(() => unsqueeze(g, "/u3", x, [4])).toThrow("/u3: axis 4 out of range for rank 3");
  });

  it("reduceMean with and without keepdims", () => {
    const g = graph();
    const x = g.input("x", "float32", ["batch", 3, 4]);
    expect(reduceMean(g, "/m1", x, [-1]).shape).toEqual(["batch", 3, 1]);
    expect(reduceMean(g, "/m2", x, [0, 2], false).shape).toEqual([3]);
  });

  it("splitHalves halves an even numeric axis and refuses odd or symbolic ones", () => {
    const g = graph();
    const x = g.input("x", "float32", ["tokens", 2, 16]);
    const [first, second] = splitHalves(g, "/split", x, -1);
    expect(first.shape).toEqual(["tokens", 2, 8]);
    expect(second.shape).toEqual(["tokens", 2, 8]);
    expect(second.name).toBe("/split/output_1");
    const odd = g.input("odd", "float32", [2, 5]);
    expect(() => splitHalves(g, "/odd", odd, 1)).toThrow("/odd: cannot split axis 1 of [2, 5] in halves");
    expect(() => splitHalves(g, "/sym", x, 0)).toThrow("/sym: cannot split axis 0 of [tokens, 2, 16] in halves");
  });
});

describe("serialize() runs in onnxruntime", () => {
  it("y = softmax(x Wᵀ + b) equals a hand computation", async () => {
    const g = new GraphBuilder("tiny");
    const x = g.input("x", "float32", ["rows", 3]);
    // W: [2 outputs, 3 inputs], b: [2]
    const w = g.initializer("W", "float32", [2, 3], Float32Array.from([1, 0, -1, 0.5, 2, 0]));
    const b = g.initializer("b", "float32", [2], Float32Array.from([0.25, -1]));
    const logits = gemmTransB(g, "/model/head/Gemm", x, w, b);
    const probs = g.output(softmax(g, "/model/head/Softmax", logits, -1), "probs");
    expect(probs.shape).toEqual(["rows", 2]);

    const session = await OnnxSession.create(g.serialize(), { inputs: g.inputs, outputs: g.outputs });
    try {
      const input = [1, 2, 3, -1, 0.5, 2];
      const result = await session.run({ x: { dtype: "float32", shape: [2, 3], data: Float32Array.from(input) } });
      expect(result.probs.shape).toEqual([2, 2]);
      // Row 0: z = [1 - 3 + 0.25, 0.5 + 4 - 1] = [-1.75, 3.5]; row 1: [-1 - 2 + 0.25, -0.5 + 1 - 1] = [-2.75, -0.5].
      const expected = [
        [-1.75, 3.5],
        [-2.75, -0.5],
      ].flatMap(([p, q]) => [Math.exp(p) / (Math.exp(p) + Math.exp(q)), Math.exp(q) / (Math.exp(p) + Math.exp(q))]);
      const actual = [...(result.probs.data as Float32Array)];
      actual.forEach((v, i) => expect(v).toBeCloseTo(expected[i], 6));
    } finally {
      await session.dispose();
    }
  });

  it("the shapes the builder infers are the shapes onnxruntime produces", async () => {
    const g = new GraphBuilder("shapes");
    const ids = g.input("ids", "int64", ["batch", "tokens"]);
    const table = g.initializer(
      "table",
      "float32",
      [5, 8],
      Float32Array.from({ length: 40 }, (_, i) => i / 10),
    );
    const embedded = gather(g, "/embed", table, ids); // [batch, tokens, 8]
    const heads = reshape(g, "/heads", embedded, [0, 0, 2, 4]); // [batch, tokens, 2, 4]
    const moved = transpose(g, "/perm", heads, [0, 2, 1, 3]); // [batch, 2, tokens, 4]
    const [low, high] = splitHalves(g, "/halves", moved, -1); // [batch, 2, tokens, 2] ×2
    const swapped = concat(g, "/swap", [high, low], -1); // [batch, 2, tokens, 4]
    const scores = matMul(g, "/scores", swapped, transpose(g, "/kT", moved, [0, 1, 3, 2])); // [batch, 2, tokens, tokens]
    const mean = reduceMean(g, "/mean", scores, [-1], false); // [batch, 2, tokens]
    const first = slice(g, "/first", mean, 1, 0, 1); // [batch, 1, tokens]
    const widened = unsqueeze(g, "/wide", first, [0]); // [1, batch, 1, tokens]
    const outputs = [embedded, heads, moved, low, swapped, scores, mean, first, widened];
    outputs.forEach((v, i) => g.output(v, `out${i}`));
    expect(widened.shape).toEqual([1, "batch", 1, "tokens"]);

    const session = await OnnxSession.create(g.serialize(), { inputs: g.inputs, outputs: g.outputs });
    try {
      const bindings: Record<string, number> = { batch: 2, tokens: 3 };
      const result = await session.run({ ids: { dtype: "int64", shape: [2, 3], data: BigInt64Array.from([0n, 1n, 2n, 4n, 3n, 1n]) } });
      outputs.forEach((v: Value, i) => {
        const expected = v.shape.map((d) => (typeof d === "number" ? d : bindings[d]));
        expect(result[`out${i}`].shape, v.name).toEqual(expected);
      });
      // One value checked by hand: embedded row of id 4 starts at 4 * 8 / 10.
      expect((result.out0.data as Float32Array)[3 * 8]).toBeCloseTo(3.2, 6);
      // The swap: low half of head 0 of token 0 (id 0) is [0, 0.1], high half is [0.2, 0.3].
      expect([...(result.out4.data as Float32Array).subarray(0, 4)].map((v) => Math.round(v * 10) / 10)).toEqual([0.2, 0.3, 0, 0.1]);
    } finally {
      await session.dispose();
    }
  });
});
