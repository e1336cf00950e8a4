/**
 * The walker: which nodes it differentiates, what it refuses, how it treats parameters that do
 * not reach the loss, that frozen weights are not duplicated by onnxruntime's constant folding,
 * and a small MLP (frozen and trainable weights) against finite differences.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import onnxProto from "onnx-proto";
// Tests may import onnxruntime directly for this only: OnnxSession does not expose optimizedModelFilePath.
import * as ort from "onnxruntime-node";
import { describe, expect, it } from "vitest";
import { OnnxSession } from "../runtime/onnx-session.ts";
import { checkGradients, ProblemBuilder } from "../testing/gradient-check.ts";
import { appendGradients } from "./autodiff.ts";
import { GraphBuilder, type Value } from "./builder.ts";
import { weightedCrossEntropy } from "./loss.ts";
import { binary, gemmTransB, matMul, reduceSum, reshape, transpose, unary } from "./ops.ts";

function sumAll(g: GraphBuilder, name: string, x: Value): Value {
  return reduceSum(
    g,
    name,
    x,
    x.shape.map((_, i) => i),
    false,
  );
}

function backward(g: GraphBuilder, prefix = "/grad") {
  return g.nodes.filter((n) => n.name.startsWith(`${prefix}/`));
}

describe("appendGradients", () => {
  it("names the op and node that has no rule, but only when it lies on the path", () => {
    const g = new GraphBuilder("g");
    const w = g.input("w", "float32", [3]);
    const frozen = g.input("frozen", "float32", [3]);
    const erfFrozen = g.addNode("Erf", [frozen], [{ dtype: "float32", shape: [3] }], { name: "/model/frozen/erf" })[0];
    const erfOff = g.addNode("Erf", [w], [{ dtype: "float32", shape: [3] }], { name: "/model/unused/erf" })[0];
    g.output(erfOff, "unused"); // reachable from w, but not part of the loss
    const loss = sumAll(g, "/model/loss", binary(g, "Mul", "/model/mul", w, erfFrozen));
    expect(() => appendGradients(g, loss, [w])).not.toThrow();

    const h = new GraphBuilder("h");
    const v = h.input("v", "float32", [3]);
    const erf = h.addNode("Erf", [v], [{ dtype: "float32", shape: [3] }], { name: "/model/erf" })[0];
    expect(() => appendGradients(h, sumAll(h, "/model/loss", erf), [v])).toThrow("no gradient rule for op Erf (node /model/erf)");
  });

  it("refuses a non-scalar loss, and integer, initializer or foreign parameters", () => {
    const g = new GraphBuilder("g");
    const w = g.input("w", "float32", [3]);
    const ids = g.input("ids", "int64", [3]);
    expect(() => appendGradients(g, w, [w])).toThrow("must be a scalar");
    expect(() => appendGradients(g, sumAll(g, "/loss", w), [ids])).toThrow("parameter ids must be float");
    const frozen = g.initializer("frozen", "float32", [3], new Float32Array(3));
    expect(() => appendGradients(g, g.values.get("/loss/output_0")!, [frozen])).toThrow("parameter frozen is an initializer");
    const other = new GraphBuilder("other").input("w", "float32", [3]);
    expect(() => appendGradients(g, g.values.get("/loss/output_0")!, [other])).toThrow("parameter w is not a value of graph g");
  });

  it("gives parameters that do not reach the loss zeros of their runtime shape (ConstantOfShape when symbolic, else 0·p)", async () => {
    const g = new GraphBuilder("g");
    const used = g.input("used", "float64", [2, 3]);
    const unused = g.input("unused", "float64", ["n", 4]);
    const dangling = g.input("dangling", "float32", [5]);
    g.output(unary(g, "Sigmoid", "/model/side", dangling), "side"); // computed, but not from the loss
    const loss = sumAll(g, "/model/loss", binary(g, "Mul", "/model/mul", used, used));
    const bytesBefore = g.initializerBytes();
    const gradients = appendGradients(g, loss, [used, unused, dangling]);
    expect(g.initializerBytes() - bytesBefore).toBeLessThan(64); // shapes and the seed only, never a zeros tensor
    const zeros = backward(g).filter((n) => n.name.endsWith("/zeros"));
    expect(zeros.map((n) => [n.name, n.opType])).toEqual([
      ["/grad/unused/zeros", "ConstantOfShape"],
      ["/grad/dangling/zeros", "Mul"],
    ]);
    for (const [name, value] of gradients) g.output(value, `grad.${name}`);

    const session = await OnnxSession.create(g.serialize(), { inputs: g.inputs, outputs: g.outputs }, { optimizationLevel: "basic" });
    const results = await session.run({
      used: { dtype: "float64", shape: [2, 3], data: Float64Array.from([1, 2, 3, 4, 5, 6]) },
      unused: { dtype: "float64", shape: [3, 4], data: new Float64Array(12).fill(7) },
      dangling: { dtype: "float32", shape: [5], data: new Float32Array(5).fill(1) },
    });
    await session.dispose();
    expect(Array.from(results["grad.used"].data as Float64Array)).toEqual([2, 4, 6, 8, 10, 12]);
    expect(results["grad.unused"]).toMatchObject({ dtype: "float64", shape: [3, 4] });
    expect(Array.from(results["grad.unused"].data as Float64Array)).toEqual(new Array(12).fill(0));
    expect(results["grad.dangling"]).toMatchObject({ dtype: "float32", shape: [5] });
    expect(Array.from(results["grad.dangling"].data as Float32Array).every((v) => v === 0)).toBe(true);
  });

  it("differentiates only the paths from trainable inputs: a frozen branch adds no backward nodes", () => {
    const build = (frozenBranch: boolean) => {
      const g = new GraphBuilder("g");
      const x = g.input("x", "float32", ["batch", 4]);
      const w = g.input("w", "float32", [4, 4]);
      const trainable = unary(g, "Sigmoid", "/model/trainable/Sigmoid", matMul(g, "/model/trainable/MatMul", x, w));
      const other = frozenBranch
        ? unary(
            g,
            "Sigmoid",
            "/model/frozen/Sigmoid",
            matMul(g, "/model/frozen/MatMul", x, g.initializer("frozen", "float32", [4, 4], new Float32Array(16).fill(0.1))),
          )
        : g.input("y", "float32", ["batch", 4]);
      appendGradients(g, sumAll(g, "/model/loss", binary(g, "Add", "/model/Add", trainable, other)), [w]);
      return backward(g);
    };
    const withFrozen = build(true);
    expect(withFrozen.filter((n) => n.name.includes("/frozen/"))).toEqual([]);
    expect(withFrozen.map((n) => n.opType)).toEqual(build(false).map((n) => n.opType));
    expect(withFrozen.length).toBeGreaterThan(0);
  });

  it("sums two contributions with Add, names backward nodes after the forward node, and takes another prefix", () => {
    const g = new GraphBuilder("g");
    const w = g.input("w", "float32", [3]);
    const loss = sumAll(g, "/model/loss", binary(g, "Mul", "/model/mul", unary(g, "Exp", "/model/exp", w), w));
    const first = appendGradients(g, loss, [w]);
    expect(first.get("w")!.name).toBe("/grad/w/Add/output_0");
    expect(backward(g).every((n) => /^\/grad(\/model\/(loss|mul|exp)\/|\/w\/)/.test(n.name))).toBe(true);
    const second = appendGradients(g, loss, [w], { name: "/grad2" });
    expect(second.get("w")!.name).toBe("/grad2/w/Add/output_0");
  });
});

/** Total bytes of the initializers of a serialised or optimised model. */
function initializerBytes(bytes: Uint8Array): number {
  const model = onnxProto.onnx.ModelProto.decode(bytes);
  let total = 0;
  for (const t of model.graph?.initializer ?? []) {
    total += t.rawData?.length ?? 0;
    total += (t.floatData?.length ?? 0) * 4 + (t.doubleData?.length ?? 0) * 8 + (t.int64Data?.length ?? 0) * 8 + (t.int32Data?.length ?? 0) * 4;
  }
  return total;
}

/** Initializer bytes of the model onnxruntime optimises `g` into (level "all"). */
async function optimisedInitializerBytes(g: GraphBuilder, dir: string, label: string): Promise<number> {
  const path = join(dir, `${label}.onnx`);
  const session = await ort.InferenceSession.create(g.serialize(), { graphOptimizationLevel: "all", optimizedModelFilePath: path, logSeverityLevel: 3 });
  await session.release();
  return initializerBytes(readFileSync(path));
}

describe("frozen weights under onnxruntime's constant folding", () => {
  const hidden = 256;
  const inner = 512;
  const vocab = 384;

  /** x·A (A trainable) → ·Wᵀ (frozen, stored [hidden, inner]) → Sigmoid → lm_head (frozen, Gemm transB=1) → loss. */
  function forward(naive: boolean) {
    const g = new GraphBuilder("frozen");
    const fill = (n: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i));
    const x = g.input("x", "float32", ["batch", "tokens", hidden]);
    const a = g.input("a", "float32", [hidden, hidden]);
    const wT = g.initializer("w_t", "float32", [hidden, inner], fill(hidden * inner));
    const head = g.initializer("lm_head", "float32", [vocab, inner], fill(vocab * inner));
    const h = matMul(g, "/model/a/MatMul", x, a);
    const y = unary(g, "Sigmoid", "/model/Sigmoid", matMul(g, "/model/w/MatMul", h, wT));
    const flat = reshape(g, "/model/Reshape", y, [-1, inner], { outShape: ["rows", inner] });
    const logits = gemmTransB(g, "/lm_head/Gemm", flat, head);
    const loss = weightedCrossEntropy(g, "/loss", logits, g.input("labels", "int64", ["rows"]), g.input("weights", "float32", ["rows"]));
    if (naive) {
      // What the rule must not do: dh = dy · Transpose(Wᵀ), fed here by a stand-in gradient.
      const dy = g.input("dy", "float32", ["batch", "tokens", inner]);
      g.output(matMul(g, "/naive/MatMul", dy, transpose(g, "/naive/Transpose", wT, [1, 0])), "naive");
    }
    return { g, loss, a, weightBytes: 4 * (hidden * inner + vocab * inner) };
  }

  it("keeps each frozen weight once: the input gradient through MatMul and Gemm reads the stored weight", async () => {
    const dir = mkdtempSync(join(tmpdir(), "autodiff-"));
    try {
      const naive = forward(true);
      naive.g.output(naive.loss, "loss");
      const naiveBytes = await optimisedInitializerBytes(naive.g, dir, "naive");
      expect(naiveBytes).toBeGreaterThan(1.3 * naive.weightBytes); // the measurement sees a transposed copy

      const { g, loss, a, weightBytes } = forward(false);
      // A parameter of known shape off the loss's path: its zeros must not become an initializer either.
      const idle = g.input("idle", "float32", [hidden, inner]);
      const gradients = appendGradients(g, loss, [a, idle]);
      g.output(loss, "loss");
      g.output(gradients.get("a")!, "grad.a");
      g.output(gradients.get("idle")!, "grad.idle");
      const ops = backward(g).map((n) => n.opType);
      expect(ops).not.toContain("Transpose");
      expect(initializerBytes(g.serialize())).toBeLessThan(1.05 * weightBytes);
      expect(await optimisedInitializerBytes(g, dir, "training")).toBeLessThan(1.1 * weightBytes);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("a two-layer MLP against finite differences", () => {
  it("matches float64 central differences for trainable weights before and after a frozen one", async () => {
    const p = new ProblemBuilder(11, { batch: 5 });
    const g = p.graph;
    const x = p.float("x", ["batch", 4], { frozen: true });
    const a = p.float("a", [4, 4]); // trainable, upstream of the frozen layer
    const b1 = p.float("b1", [6]);
    const w2 = p.float("w2", [3, 6]); // trainable, nn.Linear layout
    const w1 = g.initializer(
      "w1",
      "float64",
      [4, 6],
      Float64Array.from({ length: 24 }, (_, i) => Math.cos(i) * 0.7),
    );
    const h = unary(g, "Sigmoid", "/mlp/Sigmoid", binary(g, "Add", "/mlp/bias/Add", matMul(g, "/mlp/w1/MatMul", matMul(g, "/mlp/a/MatMul", x, a), w1), b1));
    const logits = gemmTransB(g, "/mlp/w2/Gemm", h, w2);
    const weights = p.float("weights", ["batch"], { frozen: true, positive: true });
    const loss = weightedCrossEntropy(g, "/loss", logits, p.int("labels", ["batch"], [0, 2, 1, 2, 0]), weights);
    const report = await checkGradients(p.problem(loss));
    console.log(`MLP gradients: relative errors ${JSON.stringify(report.errors)}`);
    expect(report.maxRelativeError).toBeLessThan(1e-6);
    expect(report.backwardNodes.some((n) => n.opType === "Gemm" && n.inputs.includes("w1"))).toBe(true); // dx of the frozen layer
  });
});
