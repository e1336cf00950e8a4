/**
 * The autodiff's gradient rules (autodiff.ts walks the graph; this file says how each op passes
 * gradients back), one entry per primitive op as in tinygrad's `gradient.py`. The arithmetic,
 * matrix, reduction and loss rules live here; rules that only move or select elements (Reshape,
 * Transpose, Concat, Split, Slice, Gather, …) live in gradient-shape-rules.ts.
 *
 * A rule receives the gradients of its node's outputs (null for an output that does not reach
 * the loss) and returns one gradient per input (null where none is needed). An input's gradient
 * may keep the broadcast shape of the output: the walker sums it down to the input's shape, so
 * elementwise rules never think about broadcasting. Rules emit only what `needsGradient` asks
 * for, so a frozen operand costs no backward ops.
 */
import type { GraphBuilder, GraphNode, Value } from "./builder.ts";
import {
  binary,
  cast,
  expand,
  gather,
  gemm,
  matMul,
  reduceSum,
  reshape,
  reshapeLike,
  scatterElements,
  shapeOf,
  shapeVector,
  softmax,
  transpose,
  unary,
  unsqueeze,
} from "./ops.ts";
import { dequantizeRows, scalesByRow } from "../quantize/quantized-graph.ts";
import { SHAPE_RULES } from "./gradient-shape-rules.ts";

/** What a rule sees of one forward node, and how it names and emits its backward ops. */
export interface GradientContext {
  readonly g: GraphBuilder;
  readonly node: GraphNode;
  readonly inputs: (Value | null)[]; // null for a missing optional input
  readonly outputs: Value[];
  readonly needsGradient: boolean[]; // per input: does it lie on a path from a parameter?
  /** A fresh backward node name, `${prefix}${node.name}/${step}`. */
  name(step: string): string;
  /** An integer attribute of the node, or `fallback` when absent. */
  int(attribute: string, fallback: number): number;
  /** A float attribute of the node, or `fallback` when absent. */
  float(attribute: string, fallback: number): number;
  /** A string attribute of the node, or `fallback` when absent. */
  string(attribute: string, fallback: string): string;
  /** An integer-list attribute of the node, or undefined when absent. */
  ints(attribute: string): number[] | undefined;
  /** The values of an input that is an initializer; null when absent or computed at run time. */
  constant(input: number): number[] | null;
  /** Input `i`, which the op requires (an error names the node when it is missing). */
  input(i: number): Value;
  /** The gradient of output `i` (default 0); an error when that output has none. */
  gradient(i?: number): Value;
}

/** Maps the gradients of a node's outputs to the gradients of its inputs. */
export type GradientRule = (ctx: GradientContext, outputGradients: (Value | null)[]) => (Value | null)[];

function floatType(ctx: GradientContext, v: Value): "float32" | "float64" {
  if (v.dtype !== "float32" && v.dtype !== "float64") throw new Error(`${ctx.node.name}: gradients need a float tensor, ${v.name} is ${v.dtype}`);
  return v.dtype;
}

/** A shared scalar constant of `like`'s float type. */
function scalar(ctx: GradientContext, value: number, like: Value): Value {
  return ctx.g.constFloat(value, floatType(ctx, like));
}

function mul(ctx: GradientContext, step: string, a: Value, b: Value): Value {
  return binary(ctx.g, "Mul", ctx.name(step), a, b);
}

function want<T>(ctx: GradientContext, i: number, make: () => T): T | null {
  return ctx.needsGradient[i] ? make() : null;
}

// ---- Elementwise arithmetic: results keep the output's broadcast shape; the walker reduces them. ----

const add: GradientRule = (ctx) => {
  const dY = ctx.gradient();
  return [dY, dY];
};

const subtract: GradientRule = (ctx) => {
  const dY = ctx.gradient();
  return [dY, want(ctx, 1, () => unary(ctx.g, "Neg", ctx.name("Neg"), dY))];
};

const multiply: GradientRule = (ctx) => {
  const dY = ctx.gradient();
  const [a, b] = [ctx.input(0), ctx.input(1)];
  return [want(ctx, 0, () => mul(ctx, "dA/Mul", dY, b)), want(ctx, 1, () => mul(ctx, "dB/Mul", dY, a))];
};

/** y = a / b:  da = dy / b,  db = −dy·y / b. */
const divide: GradientRule = (ctx) => {
  const dY = ctx.gradient();
  const b = ctx.input(1);
  const y = ctx.outputs[0];
  return [
    want(ctx, 0, () => binary(ctx.g, "Div", ctx.name("dA/Div"), dY, b)),
    want(ctx, 1, () => unary(ctx.g, "Neg", ctx.name("dB/Neg"), binary(ctx.g, "Div", ctx.name("dB/Div"), mul(ctx, "dB/Mul", dY, y), b))),
  ];
};

/** y = aᵖ with p a constant scalar:  da = dy·p·aᵖ⁻¹ (p = 2 needs no Pow). */
const power: GradientRule = (ctx) => {
  const dY = ctx.gradient();
  const a = ctx.input(0);
  const exponent = ctx.constant(1);
  if (exponent === null || exponent.length !== 1) {
    throw new Error(`${ctx.node.name}: the Pow gradient needs a constant scalar exponent (got ${ctx.inputs[1]?.name ?? "none"})`);
  }
  if (ctx.needsGradient[1]) throw new Error(`${ctx.node.name}: no gradient for a Pow exponent`);
  const p = exponent[0];
  if (p === 1) return [dY, null];
  const slope =
    p === 2
      ? mul(ctx, "slope/Mul", a, scalar(ctx, 2, a))
      : mul(ctx, "slope/Mul", binary(ctx.g, "Pow", ctx.name("Pow"), a, scalar(ctx, p - 1, a)), scalar(ctx, p, a));
  return [mul(ctx, "Mul", dY, slope), null];
};

const negate: GradientRule = (ctx) => [unary(ctx.g, "Neg", ctx.name("Neg"), ctx.gradient())];

/** y = √x:  dx = dy·½ / y. */
const squareRoot: GradientRule = (ctx) => {
  const dY = ctx.gradient();
  const half = mul(ctx, "Mul", dY, scalar(ctx, 0.5, dY));
  return [binary(ctx.g, "Div", ctx.name("Div"), half, ctx.outputs[0])];
};

/** y = 1/x:  dx = −dy·y². */
const reciprocal: GradientRule = (ctx) => {
  const dY = ctx.gradient();
  const y = ctx.outputs[0];
  return [unary(ctx.g, "Neg", ctx.name("Neg"), mul(ctx, "Mul", dY, mul(ctx, "square/Mul", y, y)))];
};

const exponential: GradientRule = (ctx) => [mul(ctx, "Mul", ctx.gradient(), ctx.outputs[0])];

const logarithm: GradientRule = (ctx) => [binary(ctx.g, "Div", ctx.name("Div"), ctx.gradient(), ctx.input(0))];

/** y = σ(x):  dx = dy·y·(1 − y). */
const sigmoid: GradientRule = (ctx) => {
  const dY = ctx.gradient();
  const y = ctx.outputs[0];
  const slope = mul(ctx, "slope/Mul", y, binary(ctx.g, "Sub", ctx.name("slope/Sub"), scalar(ctx, 1, y), y));
  return [mul(ctx, "Mul", dY, slope)];
};

/** y = tanh(x):  dx = dy·(1 − y²). */
const tanh: GradientRule = (ctx) => {
  const dY = ctx.gradient();
  const y = ctx.outputs[0];
  const slope = binary(ctx.g, "Sub", ctx.name("slope/Sub"), scalar(ctx, 1, y), mul(ctx, "square/Mul", y, y));
  return [mul(ctx, "Mul", dY, slope)];
};

const sine: GradientRule = (ctx) => [mul(ctx, "Mul", ctx.gradient(), unary(ctx.g, "Cos", ctx.name("Cos"), ctx.input(0)))];

const cosine: GradientRule = (ctx) => {
  const slope = unary(ctx.g, "Sin", ctx.name("Sin"), ctx.input(0));
  return [unary(ctx.g, "Neg", ctx.name("Neg"), mul(ctx, "Mul", ctx.gradient(), slope))];
};

const variadicSum: GradientRule = (ctx) => {
  const dY = ctx.gradient();
  return ctx.inputs.map(() => dY);
};

// ---- Matrix products ----

/** [..., last] → [rows, last] (rows named by the leading dims when any is symbolic). */
function flatten2d(ctx: GradientContext, step: string, v: Value): Value {
  if (v.shape.length === 2) return v;
  const leading = v.shape.slice(0, -1);
  const last = v.shape[v.shape.length - 1];
  const rows = leading.every((d) => typeof d === "number") ? (leading as number[]).reduce((p, d) => p * d, 1) : leading.join("*");
  return reshape(ctx.g, ctx.name(step), v, [-1, last], { outShape: [rows, last] });
}

/**
 * MatMul, numpy broadcasting. With a 2-D right operand B (a weight, stored [K, N]):
 *
 *   dY [.., N] ─Reshape─ dY₂ [R, N] ─Gemm(B, transB=1)─ [R, K] ─Reshape─▶ dA [.., K]
 *   A  [.., K] ─Reshape─ A₂  [R, K] ─Gemm(dY₂, transA=1)────────────────▶ dB [K, N]
 *
 * Never MatMul(dY, Transpose(B)): with B an initializer, onnxruntime's constant folding would
 * store a transposed copy of every frozen weight. Otherwise dA = dY·Bᵀ and dB = Aᵀ·dY on the
 * broadcast batch, which the walker sums down to each operand's own batch dims.
 */
const matrixProduct: GradientRule = (ctx) => {
  const dY = ctx.gradient();
  const [a, b] = [ctx.input(0), ctx.input(1)];
  if (a.shape.length < 2 || b.shape.length < 2) throw new Error(`${ctx.node.name}: no MatMul gradient for 1-D operands`);
  const [k, n] = b.shape;
  if (b.shape.length === 2 && typeof k === "number" && typeof n === "number") {
    const dY2 = flatten2d(ctx, "dY/Reshape", dY);
    const dA = want(ctx, 0, () => {
      const product = gemm(ctx.g, ctx.name("dA/Gemm"), dY2, b, null, { transB: true });
      return a.shape.length === 2 ? product : reshapeLike(ctx.g, ctx.name("dA/Reshape"), product, a);
    });
    const dB = want(ctx, 1, () => gemm(ctx.g, ctx.name("dB/Gemm"), flatten2d(ctx, "A/Reshape", a), dY2, null, { transA: true }));
    return [dA, dB];
  }
  const swapLast = (rank: number) => [...Array.from({ length: rank - 2 }, (_, i) => i), rank - 1, rank - 2];
  return [
    want(ctx, 0, () => matMul(ctx.g, ctx.name("dA/MatMul"), dY, transpose(ctx.g, ctx.name("dA/Transpose"), b, swapLast(b.shape.length)))),
    want(ctx, 1, () => matMul(ctx.g, ctx.name("dB/MatMul"), transpose(ctx.g, ctx.name("dB/Transpose"), a, swapLast(a.shape.length)), dY)),
  ];
};

/**
 * onnxruntime's MatMulNBits: Y = A · Wᵀ with W [N, K] a frozen weight held as blockwise codes and
 * scales. The input gradient dA = dY · W reads W as stored, rebuilt from its codes by standard ops
 * (quantized-graph.ts) just for this product: one layer's float weight at a time, never a float
 * copy of the model. The codes and scales are constants and get no gradient.
 *
 *   dY [.., N] ─Reshape─ [R, N] ─Gemm(dequantize(codes, scales) [N, K])─ [R, K] ─Reshape─▶ dA [.., K]
 */
const quantizedMatrixProduct: GradientRule = (ctx) => {
  if (ctx.needsGradient[1] || ctx.needsGradient[2]) throw new Error(`${ctx.node.name}: quantized weights are frozen; they take no gradient`);
  const [a, codes, flatScales] = [ctx.input(0), ctx.input(1), ctx.input(2)];
  const bits = ctx.int("bits", 4);
  if (bits !== 4 && bits !== 8) throw new Error(`${ctx.node.name}: no gradient for ${bits}-bit weights`);
  const scales = scalesByRow(ctx.g, ctx.name("scales/Reshape"), codes, flatScales);
  const weight = dequantizeRows(ctx.g, ctx.name("dequantize"), codes, scales, { bits, blockSize: ctx.int("block_size", 0), cols: ctx.int("K", 0) }, "float32");
  const dA = want(ctx, 0, () => {
    const product = gemm(ctx.g, ctx.name("dA/Gemm"), flatten2d(ctx, "dY/Reshape", ctx.gradient()), weight, null);
    return a.shape.length === 2 ? product : reshapeLike(ctx.g, ctx.name("dA/Reshape"), product, a);
  });
  return [dA, null, null];
};

/**
 * Gemm: Y = α·op(A)·op(B) + β·C. Each operand's gradient is one Gemm whose transpose flags
 * absorb op(), so a frozen B (transB=1, an nn.Linear weight) is read as stored: dA = α·dY·B.
 */
const generalMatrixProduct: GradientRule = (ctx) => {
  const dY = ctx.gradient();
  const [a, b] = [ctx.input(0), ctx.input(1)];
  const transA = ctx.int("transA", 0) === 1;
  const transB = ctx.int("transB", 0) === 1;
  const alpha = ctx.float("alpha", 1);
  const beta = ctx.float("beta", 1);
  const g = ctx.g;
  const dA = want(ctx, 0, () =>
    transA
      ? gemm(g, ctx.name("dA/Gemm"), b, dY, null, { transA: transB, transB: true, alpha })
      : gemm(g, ctx.name("dA/Gemm"), dY, b, null, { transB: !transB, alpha }),
  );
  const dB = want(ctx, 1, () =>
    transB
      ? gemm(g, ctx.name("dB/Gemm"), dY, a, null, { transA: true, transB: transA, alpha })
      : gemm(g, ctx.name("dB/Gemm"), a, dY, null, { transA: !transA, alpha }),
  );
  const dC = ctx.inputs[2] ? want(ctx, 2, () => (beta === 1 ? dY : mul(ctx, "dC/Mul", dY, scalar(ctx, beta, dY)))) : null;
  return [dA, dB, dC];
};

// ---- Reductions and normalisations ----

/** The axes a ReduceSum/ReduceMean reduces (opset 18: an optional constant input), or null for a no-op. */
function reducedAxes(ctx: GradientContext, x: Value): number[] | null {
  const rank = x.shape.length;
  const all = Array.from({ length: rank }, (_, i) => i);
  const noop = ctx.int("noop_with_empty_axes", 0) === 1;
  if (!ctx.inputs[1]) return noop ? null : all;
  const axes = ctx.constant(1);
  if (axes === null) throw new Error(`${ctx.node.name}: the ${ctx.node.opType} gradient needs constant axes (got ${ctx.inputs[1].name})`);
  if (axes.length === 0) return noop ? null : all;
  return axes.map((a) => (a < 0 ? a + rank : a)).sort((p, q) => p - q);
}

/**
 * ReduceSum / ReduceMean: dY (re-given its reduced axes when keepdims=0) broadcast back over x,
 * scaled by 1/count for the mean (the count read at run time when a reduced dim is symbolic).
 */
function reductionGradient(ctx: GradientContext, mean: boolean): (Value | null)[] {
  const dY = ctx.gradient();
  const x = ctx.input(0);
  const axes = reducedAxes(ctx, x);
  if (axes === null) return [dY, null];
  const g = ctx.g;
  let kept = ctx.int("keepdims", 1) === 1 ? dY : unsqueeze(g, ctx.name("Unsqueeze"), dY, axes);
  if (mean) {
    const dims = axes.map((a) => x.shape[a]);
    if (dims.every((d) => typeof d === "number")) {
      kept = mul(ctx, "Mul", kept, scalar(ctx, 1 / (dims as number[]).reduce((p, d) => p * d, 1), dY));
    } else {
      const reducedDims = gather(g, ctx.name("count/Gather"), shapeOf(g, ctx.name("count/Shape"), x), g.constInt64(axes));
      const count = g.addNode("ReduceProd", [reducedDims], [{ dtype: "int64", shape: [] }], {
        name: ctx.name("count/ReduceProd"),
        attributes: { keepdims: 0 },
      })[0];
      kept = binary(g, "Div", ctx.name("Div"), kept, cast(g, ctx.name("count/Cast"), count, dY.dtype));
    }
  }
  return [expand(g, ctx.name("Expand"), kept, shapeVector(g, ctx.name("Shape"), x), x.shape), null];
}

/** y = softmax(x):  dx = y·(dy − Σ(dy·y)) along the softmax axis. */
const softmaxRule: GradientRule = (ctx) => {
  const dY = ctx.gradient();
  const y = ctx.outputs[0];
  const axis = ctx.int("axis", -1);
  const projected = reduceSum(ctx.g, ctx.name("ReduceSum"), mul(ctx, "dot/Mul", dY, y), [axis], true);
  return [mul(ctx, "Mul", y, binary(ctx.g, "Sub", ctx.name("Sub"), dY, projected))];
};

/**
 * SoftmaxCrossEntropyLoss (reduction "none", as loss.ts emits it): per row i, with gᵢ = dL/dceᵢ,
 *
 *   logits [N, V] ─Softmax─Mul(g [N, 1])─ScatterElements(labels [N, 1], −g, add)─▶ dlogits
 *
 * so the only [N, V] tensor is the softmax itself: no one-hot, no zeros.
 */
const softmaxCrossEntropy: GradientRule = (ctx, gradients) => {
  const node = ctx.node;
  if (ctx.string("reduction", "mean") !== "none") throw new Error(`${node.name}: the SoftmaxCrossEntropyLoss gradient supports reduction "none" only`);
  if (ctx.inputs[2] || node.attributes.ignore_index !== undefined)
    throw new Error(`${node.name}: no SoftmaxCrossEntropyLoss gradient with class weights or ignore_index`);
  if (gradients[1]) throw new Error(`${node.name}: no gradient through SoftmaxCrossEntropyLoss's log_prob output`);
  const dLoss = ctx.gradient(); // [N]
  const [logits, labels] = [ctx.input(0), ctx.input(1)];
  if (logits.shape.length !== 2) throw new Error(`${node.name}: the SoftmaxCrossEntropyLoss gradient needs [N, V] logits, got [${logits.shape.join(", ")}]`);
  const g = ctx.g;
  const column = unsqueeze(g, ctx.name("g/Unsqueeze"), dLoss, [1]); // [N, 1]
  const scaled = mul(ctx, "Mul", softmax(g, ctx.name("Softmax"), logits, 1), column); // [N, V]
  const labelColumn = unsqueeze(g, ctx.name("labels/Unsqueeze"), labels.dtype === "int64" ? labels : cast(g, ctx.name("labels/Cast"), labels, "int64"), [1]);
  return [scatterElements(g, ctx.name("ScatterElements"), scaled, labelColumn, unary(g, "Neg", ctx.name("g/Neg"), column), 1, "add"), null, null];
};

/** One rule per op (default ONNX domain); an op missing here stops the walker with its name. */
export const GRADIENT_RULES: Record<string, GradientRule> = {
  Add: add,
  Sub: subtract,
  Mul: multiply,
  Div: divide,
  Pow: power,
  Neg: negate,
  Sqrt: squareRoot,
  Reciprocal: reciprocal,
  Exp: exponential,
  Log: logarithm,
  Sigmoid: sigmoid,
  Tanh: tanh,
  Sin: sine,
  Cos: cosine,
  Sum: variadicSum,
  MatMul: matrixProduct,
  Gemm: generalMatrixProduct,
  "com.microsoft.MatMulNBits": quantizedMatrixProduct,
  ReduceSum: (ctx) => reductionGradient(ctx, false),
  ReduceMean: (ctx) => reductionGradient(ctx, true),
  Softmax: softmaxRule,
  SoftmaxCrossEntropyLoss: softmaxCrossEntropy,
  ...SHAPE_RULES,
};
