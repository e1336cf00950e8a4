/**
 * Every gradient rule against float64 central finite differences (h = 1e-6): the op on random
 * inputs, then Σ output ⊙ (a fixed random probe). The error is max|analytic − numeric| divided
 * by max(max|numeric|, 1e-3), per parameter; every case must stay under 1e-6.
 */
import { afterAll, describe, expect, it } from "vitest";
import { checkGradients, ProblemBuilder } from "../testing/gradient-check.ts";
import { dequantizeMatrix, quantizeMatrix } from "../quantize/block-format.ts";
import { quantizedMatMul, quantizedShapes } from "../quantize/quantized-graph.ts";
import { Rng } from "../random.ts";
import { maxAbsDiff } from "../testing/numeric.ts";
import { appendGradients } from "./autodiff.ts";
import { GraphBuilder, type Value } from "./builder.ts";
import { GRADIENT_RULES } from "./gradient-rules.ts";
import { weightedCrossEntropy } from "./loss.ts";
import {
  binary,
  cast,
  concat,
  expand,
  gather,
  gemm,
  gemmTransB,
  matMul,
  reduceMean,
  reduceSum,
  reshape,
  slice,
  softmax,
  split,
  sum,
  transpose,
  unary,
  unsqueeze,
} from "./ops.ts";

const TOLERANCE = 1e-6;
const measured: [string, number][] = [];
const covered = new Set<string>();

/** Builds a problem with `build`, checks it, and records the error and the ops it covered. */
async function check(label: string, build: (p: ProblemBuilder) => Value, options: { sizes?: Record<string, number>; step?: number; tolerance?: number } = {}) {
  const p = new ProblemBuilder(label.length * 7919, options.sizes ?? {});
  const output = build(p);
  for (const node of p.graph.nodes) covered.add(node.opType);
  const report = await checkGradients(p.problem(output), { step: options.step });
  measured.push([label, report.maxRelativeError]);
  expect(report.maxRelativeError, `${label}: ${JSON.stringify(report.errors)}`).toBeLessThan(options.tolerance ?? TOLERANCE);
  return report;
}

afterAll(() => {
  const worst = [...measured].sort((x, y) => y[1] - x[1]).slice(0, 5);
  console.log(`gradient rules: ${measured.length} checks; worst relative errors: ${worst.map(([label, e]) => `${label} ${e.toExponential(2)}`).join(", ")}`);
});

describe("elementwise rules, with broadcasting", () => {
  it("Add [3,1,4] + [2,1], and a symbolic [n,4] + [4]", async () => {
    await check("Add broadcast", (p) => binary(p.graph, "Add", "/add", p.float("a", [3, 1, 4]), p.float("b", [2, 1])));
    await check("Add symbolic", (p) => binary(p.graph, "Add", "/add", p.float("a", ["n", 4]), p.float("b", [4])), { sizes: { n: 3 } });
  });

  it("Sub, Mul [3,1,4] × [2,1], Div by a positive [2,1]", async () => {
    await check("Sub", (p) => binary(p.graph, "Sub", "/sub", p.float("a", [2, 3]), p.float("b", [3])));
    await check("Mul broadcast", (p) => binary(p.graph, "Mul", "/mul", p.float("a", [3, 1, 4]), p.float("b", [2, 1])));
    await check("Div", (p) => binary(p.graph, "Div", "/div", p.float("a", [2, 3]), p.float("b", [2, 1], { positive: true })));
  });

  it("Pow with constant exponents 2, 3 and 0.5", async () => {
    for (const exponent of [2, 3, 0.5]) {
      await check(`Pow ${exponent}`, (p) => binary(p.graph, "Pow", "/pow", p.float("x", [2, 3], { positive: true }), p.graph.constFloat(exponent, "float64")));
    }
  });

  it("unary ops: Neg, Sqrt, Reciprocal, Exp, Log, Sigmoid, Tanh, Sin, Cos", async () => {
    for (const op of ["Neg", "Sqrt", "Reciprocal", "Exp", "Log", "Sigmoid", "Sin", "Cos"] as const) {
      await check(op, (p) => unary(p.graph, op, `/${op}`, p.float("x", [2, 3], { positive: true })));
    }
    await check("Tanh", (p) => {
      const x = p.float("x", [2, 3]);
      return p.graph.addNode("Tanh", [x], [{ dtype: "float64", shape: x.shape }], { name: "/tanh" })[0];
    });
  });

  it("Sum of three broadcast inputs, and a value used three times (fan-out)", async () => {
    await check("Sum", (p) => sum(p.graph, "/sum", [p.float("a", [2, 3]), p.float("b", [3]), p.float("c", [1, 3])]));
    const report = await check("fan-out", (p) => {
      const x = p.float("x", [2, 3]);
      const g = p.graph;
      return binary(g, "Add", "/add", binary(g, "Mul", "/mul", unary(g, "Sigmoid", "/sigmoid", x), x), x);
    });
    expect(report.backwardNodes.filter((n) => n.name.startsWith("/grad/x/")).map((n) => n.opType)).toEqual(["Sum"]);
    await check("Mul x·x", (p) => {
      const x = p.float("x", [4]);
      return binary(p.graph, "Mul", "/mul", x, x);
    });
  });
});

describe("matrix products", () => {
  it("MatMul [2,3,4]×[4,5] (2-D weight, via Gemm), [2,3,4]×[1,4,5], [3,4]×[2,4,5], [2,2,3,4]×[2,4,5]", async () => {
    const report = await check("MatMul 3-D × 2-D", (p) => matMul(p.graph, "/mm", p.float("a", [2, 3, 4]), p.float("b", [4, 5])));
    expect(report.backwardNodes.filter((n) => n.opType === "Transpose")).toHaveLength(0);
    await check("MatMul batch broadcast", (p) => matMul(p.graph, "/mm", p.float("a", [2, 3, 4]), p.float("b", [1, 4, 5])));
    await check("MatMul 2-D × 3-D", (p) => matMul(p.graph, "/mm", p.float("a", [3, 4]), p.float("b", [2, 4, 5])));
    await check("MatMul rank 4 × 3", (p) => matMul(p.graph, "/mm", p.float("a", [2, 2, 3, 4]), p.float("b", [2, 4, 5])));
    await check("MatMul 2-D × 2-D", (p) => matMul(p.graph, "/mm", p.float("a", [3, 4]), p.float("b", [4, 2])));
  });

  it("MatMul with symbolic batch dims [b,t,4]×[4,5]", async () => {
    await check("MatMul symbolic", (p) => matMul(p.graph, "/mm", p.float("a", ["b", "t", 4]), p.float("w", [4, 5])), { sizes: { b: 2, t: 3 } });
  });

  it("Gemm transB=1 with a bias [n], and every transA/transB with alpha, beta and C [m,1]", async () => {
    await check("Gemm transB bias", (p) => gemmTransB(p.graph, "/gemm", p.float("a", [3, 4]), p.float("b", [5, 4]), p.float("c", [5])));
    for (const transA of [false, true]) {
      for (const transB of [false, true]) {
        await check(`Gemm transA=${+transA} transB=${+transB}`, (p) => {
          const a = p.float("a", transA ? [4, 3] : [3, 4]);
          const b = p.float("b", transB ? [5, 4] : [4, 5]);
          return gemm(p.graph, "/gemm", a, b, p.float("c", [3, 1]), { transA, transB, alpha: 0.5, beta: 2 });
        });
      }
    }
  });
});

describe("reductions and softmax", () => {
  it("ReduceMean over the last axis, over [0, 2] without keepdims, and over a symbolic axis", async () => {
    await check("ReduceMean last", (p) => reduceMean(p.graph, "/mean", p.float("x", [2, 3, 4]), [-1]));
    await check("ReduceMean 0,2", (p) => reduceMean(p.graph, "/mean", p.float("x", [2, 3, 4]), [0, 2], false));
    await check("ReduceMean symbolic", (p) => reduceMean(p.graph, "/mean", p.float("x", ["n", 3]), [0], false), { sizes: { n: 4 } });
  });

  it("ReduceSum with keepdims 0 and 1, and with no axes (all)", async () => {
    await check("ReduceSum keep", (p) => reduceSum(p.graph, "/sum", p.float("x", [2, 3, 4]), [1], true));
    await check("ReduceSum drop", (p) => reduceSum(p.graph, "/sum", p.float("x", [2, 3, 4]), [0, 2], false));
    await check("ReduceSum all", (p) => {
      const x = p.float("x", [2, 3]);
      return p.graph.addNode("ReduceSum", [x], [{ dtype: "float64", shape: [] }], { name: "/sum", attributes: { keepdims: 0 } })[0];
    });
  });

  it("Softmax over the last axis and over axis 1 of a rank-3 tensor", async () => {
    await check("Softmax -1", (p) => softmax(p.graph, "/softmax", p.float("x", [2, 5]), -1));
    await check("Softmax 1", (p) => softmax(p.graph, "/softmax", p.float("x", [2, 3, 4]), 1));
  });
});

describe("shape rules", () => {
  it("Reshape (0/-1 targets), Transpose, Unsqueeze, Squeeze, Flatten, Identity, Expand", async () => {
    await check("Reshape", (p) => reshape(p.graph, "/reshape", p.float("x", [2, 3, 4]), [0, -1]));
    await check("Transpose", (p) => transpose(p.graph, "/transpose", p.float("x", [2, 3, 4]), [2, 0, 1]));
    await check("Unsqueeze", (p) => unsqueeze(p.graph, "/unsqueeze", p.float("x", [2, 3]), [0, 2]));
    await check("Squeeze", (p) => {
      const x = p.float("x", [2, 1, 3]);
      return p.graph.addNode("Squeeze", [x, p.graph.constInt64([1])], [{ dtype: "float64", shape: [2, 3] }], { name: "/squeeze" })[0];
    });
    await check("Flatten", (p) => {
      const x = p.float("x", [2, 3, 4]);
      return p.graph.addNode("Flatten", [x], [{ dtype: "float64", shape: [6, 4] }], { name: "/flatten", attributes: { axis: 2 } })[0];
    });
    await check("Identity", (p) => unary(p.graph, "Identity", "/identity", p.float("x", [3])));
    await check("Expand", (p) => expand(p.graph, "/expand", p.float("x", [3, 1]), p.graph.constInt64([2, 3, 4]), [2, 3, 4]));
  });

  it("Cast float64→float64, and float64→float32→float64 (a linear function, checked with h = 0.25 at 1e-5)", async () => {
    await check("Cast same", (p) => cast(p.graph, "/cast", p.float("x", [3]), "float64"));
    await check("Cast via float32", (p) => cast(p.graph, "/back", cast(p.graph, "/cast", p.float("x", [3]), "float32"), "float64"), {
      step: 0.25,
      tolerance: 1e-5,
    });
  });

  it("Concat of three inputs, and of symbolic sizes", async () => {
    await check("Concat", (p) => concat(p.graph, "/concat", [p.float("a", [2, 1]), p.float("b", [2, 3]), p.float("c", [2, 2])], 1));
    await check(
      "Concat symbolic",
      (p) => concat(p.graph, "/concat", [p.float("a", ["m", 2]), p.float("b", ["n", 2], { frozen: true }), p.float("c", [1, 2])], 0, "total"),
      {
        sizes: { m: 2, n: 3, total: 6 },
      },
    );
  });

  it("Split with an unused output (zeros stand in for its gradient)", async () => {
    await check("Split", (p) => {
      const [first, , third] = split(p.graph, "/split", p.float("x", [2, 6]), [1, 2, 3], 1);
      return concat(p.graph, "/concat", [third, first], 1);
    });
  });

  it("Slice with constant bounds, on two axes, and with runtime bounds (negative start, end past the dim)", async () => {
    await check("Slice static", (p) => slice(p.graph, "/slice", p.float("x", [3, 5]), 1, 1, -1));
    await check("Slice two axes", (p) => {
      const x = p.float("x", [4, 3, 5]);
      const g = p.graph;
      return g.addNode("Slice", [x, g.constInt64([1, -4]), g.constInt64([3, 100]), g.constInt64([0, 2])], [{ dtype: "float64", shape: [2, 3, 4] }], {
        name: "/slice",
      })[0];
    });
    await check(
      "Slice runtime",
      (p) => slice(p.graph, "/slice", p.float("x", [3, 6]), 1, p.int("start", [1], [-4]), p.int("end", [1], [Number.MAX_SAFE_INTEGER]), "k"),
      {
        sizes: { k: 4 },
      },
    );
    await check("Slice runtime symbolic", (p) => slice(p.graph, "/slice", p.float("x", ["n", 2]), 0, p.int("start", [1], [1]), p.int("end", [1], [3]), "k"), {
      sizes: { n: 5, k: 2 },
    });
  });

  it("Gather rows with repeated indices of rank 2 (gradients accumulate), along axis 1, and with a scalar index", async () => {
    const report = await check("Gather repeated", (p) => gather(p.graph, "/gather", p.float("table", [5, 4]), p.int("ids", [2, 3], [1, 3, 1, 0, 1, 3])));
    const table = report.analytic.table;
    expect(Array.from(table.subarray(8, 12)).every((v) => v === 0)).toBe(true); // row 2 was never gathered
    await check("Gather axis 1", (p) => gather(p.graph, "/gather", p.float("x", [2, 4, 3]), p.int("ids", [3], [3, 0, 3]), 1));
    await check("Gather scalar", (p) => gather(p.graph, "/gather", p.float("x", [4, 3]), p.int("id", [], [2])));
    await check("Gather symbolic", (p) => gather(p.graph, "/gather", p.float("x", ["n", 3]), p.int("ids", ["r"], [0, 2, 2, 1]), 0), { sizes: { n: 3, r: 4 } });
  });
});

describe("weighted cross-entropy", () => {
  const labels = [2, 0, 6, 2, 3];
  const weights = [1, 0, 2, 0.5, 0];

  /** Σ w·(logsumexp(row) − row[label]) / Σ w over rows of 7 logits, in plain float64 arithmetic. */
  function directLoss(logits: Float64Array, rowWeights: number[]): number {
    let numerator = 0;
    labels.forEach((label, i) => {
      const row = Array.from(logits.subarray(i * 7, i * 7 + 7));
      const max = Math.max(...row);
      const logSum = max + Math.log(row.reduce((s, v) => s + Math.exp(v - max), 0));
      numerator += rowWeights[i] * (logSum - row[label]);
    });
    return numerator / rowWeights.reduce((s, v) => s + v, 0);
  }

  /** The op's forward value alone: a graph of just weightedCrossEntropy, run on `logits`. */
  async function graphLoss(logits: Float64Array, rowWeights: number[]): Promise<number> {
    const { OnnxSession } = await import("../runtime/onnx-session.ts");
    const p = new ProblemBuilder(0, { n: 5 });
    const input = p.graph.input("logits", "float64", ["n", 7]);
    const w = p.graph.input("w", "float64", ["n"]);
    const loss = p.graph.output(weightedCrossEntropy(p.graph, "/loss", input, p.int("labels", ["n"], labels), w), "loss");
    const session = await OnnxSession.create(p.graph.serialize(), { inputs: p.graph.inputs, outputs: p.graph.outputs }, { optimizationLevel: "basic" });
    try {
      const feeds = {
        ...p.feeds,
        logits: { dtype: "float64" as const, shape: [5, 7], data: logits },
        w: { dtype: "float64" as const, shape: [5], data: Float64Array.from(rowWeights) },
      };
      return (await session.run(feeds))[loss.name].data[0] as number;
    } finally {
      await session.dispose();
    }
  }

  it("matches a direct computation and its gradient matches finite differences, zero weights included", async () => {
    let logits: Float64Array | undefined;
    const report = await check(
      "cross-entropy",
      (p) => {
        const logitsValue = p.float("logits", ["n", 7]);
        logits = p.feeds.logits.data as Float64Array;
        const w = p.graph.input("w", "float64", ["n"]);
        p.feeds.w = { dtype: "float64", shape: [5], data: Float64Array.from(weights) };
        return weightedCrossEntropy(p.graph, "/loss", logitsValue, p.int("labels", ["n"], labels), w);
      },
      { sizes: { n: 5 } },
    );
    // The forward value on the very logits the gradients were checked at.
    const expected = directLoss(logits!, weights);
    expect(expected).toBeGreaterThan(0.5); // random logits over 7 classes: far from a degenerate 0
    expect(Math.abs((await graphLoss(logits!, weights)) - expected)).toBeLessThan(1e-12);
    // Rows with weight 0 get no gradient at all.
    const grad = report.analytic.logits;
    for (const row of [1, 4]) expect(Array.from(grad.subarray(row * 7, row * 7 + 7)).every((v) => v === 0)).toBe(true);
    // The fused rule: one softmax-sized tensor, scattered into; no zeros and no one-hot.
    const ops = report.backwardNodes.map((n) => n.opType);
    expect(ops.filter((op) => op === "ScatterElements")).toHaveLength(1);
    expect(ops).not.toContain("ConstantOfShape");
    expect(ops).not.toContain("OneHot");
  });

  it("computes Σ w·ce / Σ w, and 0 when every weight is 0", async () => {
    const x = new ProblemBuilder(3, { n: 5 });
    const logits = x.feeds[x.float("logits", ["n", 7]).name].data as Float64Array;
    expect(Math.abs((await graphLoss(logits, weights)) - directLoss(logits, weights))).toBeLessThan(1e-12);
    expect(await graphLoss(logits, [0, 0, 0, 0, 0])).toBe(0);
  });
});

describe("onnxruntime's MatMulNBits (float32 only, so checked against the exact product)", () => {
  it.each([4, 8] as const)("%i bits: dA = dY · W with W dequantised from the same codes, through a batch axis", async (bits) => {
    const { OnnxSession } = await import("../runtime/onnx-session.ts");
    const [n, k] = [24, 80]; // 80 = 2.5 blocks of 32: the last block is padded
    const rng = new Rng(bits);
    const q = quantizeMatrix(
      Float32Array.from({ length: n * k }, () => rng.normal()),
      n,
      k,
      bits,
      32,
    );
    const w = dequantizeMatrix(q);
    const probe = Float32Array.from({ length: 2 * 3 * n }, () => rng.normal());
    const g = new GraphBuilder("matmulnbits-gradient");
    const a = g.input("a", "float32", [2, 3, k]);
    const shapes = quantizedShapes(n, k, bits, 32);
    const weight = {
      codes: g.initializer("codes", "uint8", shapes.codes, q.data),
      scales: g.initializer("scales", "float32", shapes.scales, q.scales),
      bits,
      blockSize: 32,
      rows: n,
      cols: k,
    };
    const y = quantizedMatMul(g, "/mm", a, weight, "float");
    const loss = reduceSum(g, "/loss", binary(g, "Mul", "/probe/Mul", y, g.initializer("probe", "float32", [2, 3, n], probe)), [0, 1, 2], false);
    g.output(loss, "loss");
    const dA = appendGradients(g, loss, [a]).get("a")!;
    for (const node of g.nodes) covered.add(node.domain === "" ? node.opType : `${node.domain}.${node.opType}`);
    g.output(dA, "dA");
    const session = await OnnxSession.create(g.serialize(), { inputs: g.inputs, outputs: g.outputs });
    try {
      const out = await session.run({ a: { dtype: "float32", shape: [2, 3, k], data: Float32Array.from({ length: 6 * k }, () => rng.normal()) } });
      const expected = Array.from({ length: 6 * k }, (_, i) => {
        const [row, col] = [Math.floor(i / k), i % k];
        let sum = 0;
        for (let j = 0; j < n; j++) sum += probe[row * n + j] * w[j * k + col];
        return sum;
      });
      expect(out.dA.shape).toEqual([2, 3, k]);
      expect(maxAbsDiff(out.dA.data as Float32Array, expected)).toBeLessThan(1e-5);
    } finally {
      await session.dispose();
    }
  });
});

describe("the table", () => {
  it("every rule in the table was checked above", () => {
    expect(Object.keys(GRADIENT_RULES).filter((op) => !covered.has(op))).toEqual([]);
  });
});
