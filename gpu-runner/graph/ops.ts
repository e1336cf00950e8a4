/**
 * Typed helpers for the ONNX ops our graphs use. Each checks its operands, computes the output
 * shape and emits one node named `name` (a path such as `/model/layers.0/attn/q_proj/MatMul`).
 */
import { DTYPE_TO_ONNX, type DataType, type Dim, type GraphBuilder, type Shape, type Value } from "./builder.ts";

/** Formats a shape for error messages. */
export function formatShape(shape: Shape): string {
  return `[${shape.join(", ")}]`;
}

function fail(name: string, message: string): never {
  throw new Error(`${name}: ${message}`);
}

function sameDtype(name: string, values: Value[]): DataType {
  const dtype = values[0].dtype;
  for (const v of values) if (v.dtype !== dtype) fail(name, `dtype mismatch ${values.map((x) => `${x.name}:${x.dtype}`).join(", ")}`);
  return dtype;
}

function broadcastDim(name: string, a: Dim, b: Dim): Dim {
  if (a === b) return a;
  if (a === 1) return b;
  if (b === 1) return a;
  if (typeof a === "string" && typeof b === "number") return b;
  if (typeof b === "string" && typeof a === "number") return a;
  return fail(name, `cannot broadcast dimensions ${a} and ${b}`);
}

/** Numpy broadcasting of two shapes (symbolic dims must match by name or against 1). */
export function broadcastShapes(name: string, a: Shape, b: Shape): Shape {
  const rank = Math.max(a.length, b.length);
  const out: Shape = [];
  for (let i = 0; i < rank; i++) {
    const da = a[a.length - rank + i] ?? 1;
    const db = b[b.length - rank + i] ?? 1;
    try {
      out.push(broadcastDim(name, da, db));
    } catch {
      fail(name, `cannot broadcast ${formatShape(a)} with ${formatShape(b)} (dimensions ${da} and ${db})`);
    }
  }
  return out;
}

function normaliseAxis(name: string, axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) fail(name, `axis ${axis} out of range for rank ${rank}`);
  return a;
}

/** Elementwise binary op with broadcasting: Add, Sub, Mul, Div, Pow. */
export function binary(g: GraphBuilder, op: "Add" | "Sub" | "Mul" | "Div" | "Pow", name: string, a: Value, b: Value): Value {
  const dtype = op === "Pow" ? a.dtype : sameDtype(name, [a, b]);
  return g.addNode(op, [a, b], [{ dtype, shape: broadcastShapes(name, a.shape, b.shape) }], { name })[0];
}

/** Elementwise sum of several values with broadcasting (one kernel instead of a chain of Adds). */
export function sum(g: GraphBuilder, name: string, xs: Value[]): Value {
  const dtype = sameDtype(name, xs);
  const shape = xs.slice(1).reduce((acc, x) => broadcastShapes(name, acc, x.shape), xs[0].shape);
  return g.addNode("Sum", xs, [{ dtype, shape }], { name })[0];
}

/** Elementwise unary op (same shape and type). */
export function unary(
  g: GraphBuilder,
  op: "Neg" | "Sqrt" | "Reciprocal" | "Cos" | "Sin" | "Sigmoid" | "Exp" | "Log" | "Identity",
  name: string,
  x: Value,
): Value {
  return g.addNode(op, [x], [{ dtype: x.dtype, shape: x.shape }], { name })[0];
}

/** Batched matrix product with numpy semantics: [..., M, K] × [..., K, N] → [..., M, N]. */
export function matMul(g: GraphBuilder, name: string, a: Value, b: Value): Value {
  const dtype = sameDtype(name, [a, b]);
  if (a.shape.length < 2 || b.shape.length < 2) fail(name, `MatMul needs rank ≥ 2, got ${formatShape(a.shape)} × ${formatShape(b.shape)}`);
  const [m, ka] = a.shape.slice(-2);
  const [kb, n] = b.shape.slice(-2);
  if (ka !== kb) fail(name, `inner dimensions differ: ${formatShape(a.shape)} × ${formatShape(b.shape)}`);
  const batch = broadcastShapes(name, a.shape.slice(0, -2), b.shape.slice(0, -2));
  return g.addNode("MatMul", [a, b], [{ dtype, shape: [...batch, m, n] }], { name })[0];
}

/** Gemm on 2-D operands: a [M, K] × bᵀ (b stored [N, K], as nn.Linear weights are) + c. */
export function gemmTransB(g: GraphBuilder, name: string, a: Value, b: Value, c: Value | null = null): Value {
  const dtype = sameDtype(name, c === null ? [a, b] : [a, b, c]);
  if (a.shape.length !== 2 || b.shape.length !== 2) fail(name, `Gemm needs 2-D operands, got ${formatShape(a.shape)} and ${formatShape(b.shape)}`);
  if (a.shape[1] !== b.shape[1]) fail(name, `Gemm inner dimensions differ: ${formatShape(a.shape)} × ${formatShape(b.shape)}ᵀ`);
  const out: Shape = [a.shape[0], b.shape[0]];
  if (c !== null) broadcastShapes(name, out, c.shape);
  return g.addNode("Gemm", c === null ? [a, b] : [a, b, c], [{ dtype, shape: out }], { name, attributes: { transB: 1 } })[0];
}

/**
 * Reshape to `target`: numbers (0 copies the input dim, -1 is inferred) or symbolic names.
 * Symbolic entries need their runtime size, so the caller passes `shapeInput`, an int64 value
 * holding the target; otherwise the numeric target becomes a shared constant. `outShape` names
 * the result's dimensions where the builder cannot work them out (an inferred symbolic size).
 */
export function reshape(g: GraphBuilder, name: string, x: Value, target: Shape, options: { shapeInput?: Value; outShape?: Shape } = {}): Value {
  const out: Shape = options.outShape ?? target.map((d, i) => (d === 0 ? x.shape[i] : d));
  const numericTarget = target.every((d) => typeof d === "number");
  if (options.shapeInput === undefined && !numericTarget) fail(name, `reshape to symbolic ${formatShape(target)} needs a runtime shape input`);
  const inferred = out.indexOf(-1);
  if (inferred >= 0) {
    const known = out.filter((_, i) => i !== inferred);
    if (x.shape.every((d) => typeof d === "number") && known.every((d) => typeof d === "number")) {
      const total = (x.shape as number[]).reduce((p, d) => p * d, 1);
      const rest = (known as number[]).reduce((p, d) => p * d, 1);
      if (total % rest !== 0) fail(name, `cannot reshape ${formatShape(x.shape)} to ${formatShape(target)}`);
      out[inferred] = total / rest;
    } else {
      fail(name, `reshape ${formatShape(x.shape)} to ${formatShape(target)} infers a symbolic size: pass outShape`);
    }
  }
  if (out.every((d) => typeof d === "number") && x.shape.every((d) => typeof d === "number")) {
    const before = (x.shape as number[]).reduce((p, d) => p * d, 1);
    const after = (out as number[]).reduce((p, d) => p * d, 1);
    if (before !== after) fail(name, `cannot reshape ${formatShape(x.shape)} to ${formatShape(out)}`);
  }
  const shapeValue = options.shapeInput ?? g.constInt64(target as number[]);
  return g.addNode("Reshape", [x, shapeValue], [{ dtype: x.dtype, shape: out }], { name })[0];
}

/** Repeats `x` along each axis (`repeats` is a constant). */
export function tile(g: GraphBuilder, name: string, x: Value, repeats: number[], outShape: Shape): Value {
  if (repeats.length !== x.shape.length) fail(name, `repeats [${repeats}] do not match rank of ${formatShape(x.shape)}`);
  return g.addNode("Tile", [x, g.constInt64(repeats)], [{ dtype: x.dtype, shape: outShape }], { name })[0];
}

/** Splits along `axis` into parts of the given sizes. */
export function split(g: GraphBuilder, name: string, x: Value, sizes: number[], axis: number): Value[] {
  const a = normaliseAxis(name, axis, x.shape.length);
  const dim = x.shape[a];
  const total = sizes.reduce((p, d) => p + d, 0);
  if (typeof dim !== "number" || dim !== total) fail(name, `cannot split axis ${a} of ${formatShape(x.shape)} into [${sizes.join(", ")}]`);
  const types = sizes.map((size) => {
    const shape = [...x.shape];
    shape[a] = size;
    return { dtype: x.dtype, shape };
  });
  return g.addNode("Split", [x, g.constInt64(sizes)], types, { name, attributes: { axis: a } });
}

/**
 * Splits along `axis` into parts whose sizes are only known at run time: `sizes` is an int64
 * vector of one size per part (Split's second input), and each part's size is `partDim`. Unlike
 * Split's `num_outputs`, this also splits an empty axis (into empty parts).
 */
export function splitBySizes(g: GraphBuilder, name: string, x: Value, sizes: Value, axis: number, partDim: Dim): Value[] {
  const a = normaliseAxis(name, axis, x.shape.length);
  const [parts] = sizes.shape;
  if (sizes.dtype !== "int64" || sizes.shape.length !== 1 || typeof parts !== "number") fail(name, `split sizes must be an int64 vector of known length`);
  const types = Array.from({ length: parts }, () => {
    const shape = [...x.shape];
    shape[a] = partDim;
    return { dtype: x.dtype, shape };
  });
  return g.addNode("Split", [x, sizes], types, { name, attributes: { axis: a } });
}

/** Splits into equal halves along `axis`. */
export function splitHalves(g: GraphBuilder, name: string, x: Value, axis: number): [Value, Value] {
  const dim = x.shape[normaliseAxis(name, axis, x.shape.length)];
  if (typeof dim !== "number" || dim % 2 !== 0) fail(name, `cannot split axis ${axis} of ${formatShape(x.shape)} in halves`);
  const [first, second] = split(g, name, x, [dim / 2, dim / 2], axis);
  return [first, second];
}

/** Permutes axes. */
export function transpose(g: GraphBuilder, name: string, x: Value, perm: number[]): Value {
  if (perm.length !== x.shape.length) fail(name, `perm [${perm}] does not match rank of ${formatShape(x.shape)}`);
  return g.addNode("Transpose", [x], [{ dtype: x.dtype, shape: perm.map((p) => x.shape[p]) }], { name, attributes: { perm } })[0];
}

/** Concatenates along `axis`; a symbolic size on that axis makes the result's size symbolic. */
export function concat(g: GraphBuilder, name: string, xs: Value[], axis: number, outDim?: Dim): Value {
  const dtype = sameDtype(name, xs);
  const rank = xs[0].shape.length;
  const a = normaliseAxis(name, axis, rank);
  for (const x of xs) {
    if (x.shape.length !== rank) fail(name, `rank mismatch in Concat: ${xs.map((v) => formatShape(v.shape)).join(", ")}`);
    x.shape.forEach((d, i) => {
      if (i !== a && d !== xs[0].shape[i]) fail(name, `Concat shapes differ off axis ${a}: ${xs.map((v) => formatShape(v.shape)).join(", ")}`);
    });
  }
  const dims = xs.map((x) => x.shape[a]);
  const total = dims.every((d) => typeof d === "number") ? (dims as number[]).reduce((p, d) => p + d, 0) : (outDim ?? `${name}/concat`);
  const shape = [...xs[0].shape];
  shape[a] = total;
  return g.addNode("Concat", xs, [{ dtype, shape }], { name, attributes: { axis: a } })[0];
}

/** Static slice [start, end) along one axis; `outDim` names the result's size when it is symbolic. */
export function slice(g: GraphBuilder, name: string, x: Value, axis: number, start: number | Value, end: number | Value, outDim?: Dim): Value {
  const a = normaliseAxis(name, axis, x.shape.length);
  const dim = x.shape[a];
  let size: Dim;
  if (typeof start === "number" && typeof end === "number" && typeof dim === "number") {
    const clamp = (v: number) => Math.max(0, Math.min(dim, v < 0 ? v + dim : v));
    size = Math.max(0, clamp(end) - clamp(start));
  } else {
    size = outDim ?? fail(name, `slice of symbolic axis needs an output dimension`);
  }
  const shape = [...x.shape];
  shape[a] = size;
  const startValue = typeof start === "number" ? g.constInt64([start]) : start;
  const endValue = typeof end === "number" ? g.constInt64([end]) : end;
  return g.addNode("Slice", [x, startValue, endValue, g.constInt64([a])], [{ dtype: x.dtype, shape }], { name })[0];
}

/** Gathers along `axis` with indices of any rank (output rank = rank(x) - 1 + rank(indices)). */
export function gather(g: GraphBuilder, name: string, x: Value, indices: Value, axis = 0): Value {
  if (indices.dtype !== "int64" && indices.dtype !== "int32") fail(name, `Gather indices must be integers, got ${indices.dtype}`);
  const a = normaliseAxis(name, axis, x.shape.length);
  const shape = [...x.shape.slice(0, a), ...indices.shape, ...x.shape.slice(a + 1)];
  return g.addNode("Gather", [x, indices], [{ dtype: x.dtype, shape }], { name, attributes: { axis: a } })[0];
}

/** Softmax along `axis`. */
export function softmax(g: GraphBuilder, name: string, x: Value, axis = -1): Value {
  return g.addNode("Softmax", [x], [{ dtype: x.dtype, shape: x.shape }], { name, attributes: { axis } })[0];
}

/** Mean over the given axes (opset 18 form: axes as an input). */
export function reduceMean(g: GraphBuilder, name: string, x: Value, axes: number[], keepDims = true): Value {
  const norm = axes.map((a) => normaliseAxis(name, a, x.shape.length));
  const shape = keepDims ? x.shape.map((d, i) => (norm.includes(i) ? 1 : d)) : x.shape.filter((_, i) => !norm.includes(i));
  return g.addNode("ReduceMean", [x, g.constInt64(norm)], [{ dtype: x.dtype, shape }], { name, attributes: { keepdims: keepDims ? 1 : 0 } })[0];
}

/** Inserts size-1 axes at the given output positions. */
export function unsqueeze(g: GraphBuilder, name: string, x: Value, axes: number[]): Value {
  const rank = x.shape.length + axes.length;
  const norm = axes.map((a) => normaliseAxis(name, a, rank)).sort((p, q) => p - q);
  const shape: Shape = [];
  let next = 0;
  for (let i = 0; i < rank; i++) shape.push(norm.includes(i) ? 1 : x.shape[next++]);
  return g.addNode("Unsqueeze", [x, g.constInt64(norm)], [{ dtype: x.dtype, shape }], { name })[0];
}

/** Converts element type. */
export function cast(g: GraphBuilder, name: string, x: Value, to: DataType): Value {
  return g.addNode("Cast", [x], [{ dtype: to, shape: x.shape }], { name, attributes: { to: DTYPE_TO_ONNX[to] } })[0];
}

/** The runtime shape of `x` as an int64 vector. */
export function shapeOf(g: GraphBuilder, name: string, x: Value): Value {
  return g.addNode("Shape", [x], [{ dtype: "int64", shape: [x.shape.length] }], { name })[0];
}

// ---- Helpers used by the autodiff's gradient rules (gradient-rules.ts, gradient-shape-rules.ts). ----

/** Sum over the given axes (opset 18 form: axes as an input). */
export function reduceSum(g: GraphBuilder, name: string, x: Value, axes: number[], keepDims = true): Value {
  const norm = axes.map((a) => normaliseAxis(name, a, x.shape.length));
  const shape = keepDims ? x.shape.map((d, i) => (norm.includes(i) ? 1 : d)) : x.shape.filter((_, i) => !norm.includes(i));
  return g.addNode("ReduceSum", [x, g.constInt64(norm)], [{ dtype: x.dtype, shape }], { name, attributes: { keepdims: keepDims ? 1 : 0 } })[0];
}

/** `x`'s shape as an int64 vector: a shared constant when every dim is known, else a `Shape` node named `name`. */
export function shapeVector(g: GraphBuilder, name: string, x: Value): Value {
  if (x.shape.every((d) => typeof d === "number")) return g.constInt64(x.shape as number[]);
  return shapeOf(g, name, x);
}

/** Reshapes `x` to `like`'s shape (a constant target when known, else `like`'s runtime shape via `${name}/Shape`). */
export function reshapeLike(g: GraphBuilder, name: string, x: Value, like: Value): Value {
  if (like.shape.every((d) => typeof d === "number")) return reshape(g, name, x, like.shape);
  return reshape(g, name, x, like.shape, { shapeInput: shapeOf(g, `${name}/Shape`, x === like ? x : like), outShape: like.shape });
}

/** Zeros of the runtime shape `shape` (int64 vector): ConstantOfShape (float32 0), then Cast for other types. */
export function zerosOfShape(g: GraphBuilder, name: string, shape: Value, outShape: Shape, dtype: DataType): Value {
  if (shape.dtype !== "int64" || shape.shape.length !== 1) fail(name, `ConstantOfShape needs a 1-D int64 shape, got ${shape.dtype}${formatShape(shape.shape)}`);
  const zeros = g.addNode("ConstantOfShape", [shape], [{ dtype: "float32", shape: outShape }], { name })[0];
  return dtype === "float32" ? zeros : cast(g, `${name}/Cast`, zeros, dtype);
}

/**
 * Zeros shaped like `x`, never a model-sized initializer. With a symbolic dim: ConstantOfShape of
 * x's runtime shape (`${name}/Shape`). With a fully known shape, onnxruntime's constant folding
 * turns ConstantOfShape, even of Shape(x), into a stored zeros tensor (measured: 512 KiB for a
 * [256, 512] float input), so a computed x gets x·0 instead (−0 where x < 0; NaN only where x is
 * not finite), which it cannot fold. A known-shape initializer keeps ConstantOfShape.
 */
export function zerosLike(g: GraphBuilder, name: string, x: Value): Value {
  const known = x.shape.every((d) => typeof d === "number");
  if (known && !g.isInitializer(x.name) && (x.dtype === "float32" || x.dtype === "float64")) {
    return binary(g, "Mul", name, x, g.constFloat(0, x.dtype));
  }
  return zerosOfShape(g, name, shapeVector(g, `${name}/Shape`, x), x.shape, x.dtype);
}

/** ScatterND: writes (or, with reduction "add", accumulates) `updates` into a copy of `data` at `indices` [..., k]. */
export function scatterND(g: GraphBuilder, name: string, data: Value, indices: Value, updates: Value, reduction: "none" | "add" = "none"): Value {
  sameDtype(name, [data, updates]);
  if (indices.dtype !== "int64") fail(name, `ScatterND indices must be int64, got ${indices.dtype}`);
  const k = indices.shape.at(-1);
  if (typeof k === "number") {
    const expected = [...indices.shape.slice(0, -1), ...data.shape.slice(k)];
    if (expected.length !== updates.shape.length) fail(name, `ScatterND updates ${formatShape(updates.shape)} do not match ${formatShape(expected)}`);
  }
  return g.addNode("ScatterND", [data, indices, updates], [{ dtype: data.dtype, shape: data.shape }], {
    name,
    attributes: reduction === "none" ? {} : { reduction },
  })[0];
}

/** ScatterElements along `axis`: `updates` and `indices` share a shape; reduction "add" accumulates repeats. */
export function scatterElements(
  g: GraphBuilder,
  name: string,
  data: Value,
  indices: Value,
  updates: Value,
  axis: number,
  reduction: "none" | "add" = "none",
): Value {
  sameDtype(name, [data, updates]);
  if (indices.dtype !== "int64") fail(name, `ScatterElements indices must be int64, got ${indices.dtype}`);
  if (indices.shape.length !== data.shape.length || updates.shape.length !== data.shape.length) {
    fail(
      name,
      `ScatterElements needs data, indices and updates of one rank: ${formatShape(data.shape)}, ${formatShape(indices.shape)}, ${formatShape(updates.shape)}`,
    );
  }
  const a = normaliseAxis(name, axis, data.shape.length);
  return g.addNode("ScatterElements", [data, indices, updates], [{ dtype: data.dtype, shape: data.shape }], {
    name,
    attributes: reduction === "none" ? { axis: a } : { axis: a, reduction },
  })[0];
}

/** Broadcasts `x` to the runtime shape `shape` (int64 vector); `outShape` is the result's tracked shape. */
export function expand(g: GraphBuilder, name: string, x: Value, shape: Value, outShape: Shape): Value {
  broadcastShapes(name, x.shape, outShape);
  return g.addNode("Expand", [x, shape], [{ dtype: x.dtype, shape: outShape }], { name })[0];
}

/** Zero-pads `x` (opset 18 Pad): `pads` holds begins then ends for `axes` (all axes when null). */
export function pad(g: GraphBuilder, name: string, x: Value, pads: Value, axes: Value | null, outShape: Shape): Value {
  if (pads.dtype !== "int64") fail(name, `Pad pads must be int64, got ${pads.dtype}`);
  if (outShape.length !== x.shape.length) fail(name, `Pad keeps the rank: ${formatShape(x.shape)} → ${formatShape(outShape)}`);
  const inputs = axes === null ? [x, pads] : [x, pads, null, axes];
  return g.addNode("Pad", inputs, [{ dtype: x.dtype, shape: outShape }], { name })[0];
}

/** General 2-D Gemm: alpha·op(a)·op(b) + beta·c, where op transposes when transA/transB is set. */
export function gemm(
  g: GraphBuilder,
  name: string,
  a: Value,
  b: Value,
  c: Value | null,
  options: { transA?: boolean; transB?: boolean; alpha?: number; beta?: number } = {},
): Value {
  const dtype = sameDtype(name, c === null ? [a, b] : [a, b, c]);
  if (a.shape.length !== 2 || b.shape.length !== 2) fail(name, `Gemm needs 2-D operands, got ${formatShape(a.shape)} and ${formatShape(b.shape)}`);
  const [m, ka] = options.transA ? [a.shape[1], a.shape[0]] : a.shape;
  const [kb, n] = options.transB ? [b.shape[1], b.shape[0]] : b.shape;
  if (typeof ka === "number" && typeof kb === "number" && ka !== kb) {
    fail(name, `Gemm inner dimensions differ: ${formatShape(a.shape)}${options.transA ? "ᵀ" : ""} × ${formatShape(b.shape)}${options.transB ? "ᵀ" : ""}`);
  }
  if (c !== null) broadcastShapes(name, [m, n], c.shape);
  const attributes: Record<string, number | { float: number }> = {};
  if (options.transA) attributes.transA = 1;
  if (options.transB) attributes.transB = 1;
  if (options.alpha !== undefined && options.alpha !== 1) attributes.alpha = { float: options.alpha };
  if (options.beta !== undefined && options.beta !== 1) attributes.beta = { float: options.beta };
  return g.addNode("Gemm", c === null ? [a, b] : [a, b, c], [{ dtype, shape: [m, n] }], { name, attributes })[0];
}

/** Index of the largest value along `axis` (int64; ties take the first). */
export function argMax(g: GraphBuilder, name: string, x: Value, axis: number, keepDims = false): Value {
  const a = normaliseAxis(name, axis, x.shape.length);
  const shape = keepDims ? x.shape.map((d, i) => (i === a ? 1 : d)) : x.shape.filter((_, i) => i !== a);
  return g.addNode("ArgMax", [x], [{ dtype: "int64", shape }], { name, attributes: { axis: a, keepdims: keepDims ? 1 : 0 } })[0];
}

/** Elementwise equality with broadcasting (bool). */
export function equal(g: GraphBuilder, name: string, a: Value, b: Value): Value {
  sameDtype(name, [a, b]);
  return g.addNode("Equal", [a, b], [{ dtype: "bool", shape: broadcastShapes(name, a.shape, b.shape) }], { name })[0];
}
