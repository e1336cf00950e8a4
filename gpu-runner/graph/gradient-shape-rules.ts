/**
 * Gradient rules for ops that move, select or relabel elements without arithmetic: the gradient
 * puts each element back where it came from. Part of the table in gradient-rules.ts.
 */
import type { GraphBuilder, Value } from "./builder.ts";
import type { GradientContext, GradientRule } from "./gradient-rules.ts";
import { binary, cast, concat, gather, pad, reshapeLike, scatterND, shapeOf, slice, split, transpose, unsqueeze, zerosLike, zerosOfShape } from "./ops.ts";

function normaliseAxis(ctx: GradientContext, axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) throw new Error(`${ctx.node.name}: axis ${axis} out of range for rank ${rank}`);
  return a;
}

function inversePermutation(perm: number[]): number[] {
  const inverse: number[] = [];
  perm.forEach((p, i) => (inverse[p] = i));
  return inverse;
}

function int64(ctx: GradientContext, step: string, v: Value): Value {
  return v.dtype === "int64" ? v : cast(ctx.g, ctx.name(step), v, "int64");
}

/** Reshape, Unsqueeze, Squeeze, Flatten: the same elements, so dX is dY given x's shape back. */
const relabel: GradientRule = (ctx) => [reshapeLike(ctx.g, ctx.name("Reshape"), ctx.gradient(), ctx.input(0)), ...ctx.inputs.slice(1).map(() => null)];

const identity: GradientRule = (ctx) => [ctx.gradient()];

/** Broadcasting Expand: dY as is; the walker sums it down to x's shape. */
const expandRule: GradientRule = (ctx) => [ctx.gradient(), null];

/** Cast between float types: the gradient goes back to the input's type. */
const castRule: GradientRule = (ctx) => {
  const dY = ctx.gradient();
  const x = ctx.input(0);
  return [dY.dtype === x.dtype ? dY : cast(ctx.g, ctx.name("Cast"), dY, x.dtype)];
};

const transposeRule: GradientRule = (ctx) => {
  const dY = ctx.gradient();
  const perm = ctx.ints("perm") ?? Array.from({ length: dY.shape.length }, (_, i) => dY.shape.length - 1 - i);
  return [transpose(ctx.g, ctx.name("Transpose"), dY, inversePermutation(perm))];
};

/**
 * Concat: each input's gradient is its own stretch of dY along the axis, one Split when every
 * size is known, else Slices whose bounds add up the inputs' runtime sizes.
 */
const concatRule: GradientRule = (ctx) => {
  const dY = ctx.gradient();
  const g = ctx.g;
  const xs = ctx.inputs.map((_, i) => ctx.input(i));
  const axis = normaliseAxis(ctx, ctx.int("axis", 0), dY.shape.length);
  const sizes = xs.map((x) => x.shape[axis]);
  if (sizes.every((d) => typeof d === "number")) {
    const parts = split(g, ctx.name("Split"), dY, sizes as number[], axis);
    return parts.map((part, i) => (ctx.needsGradient[i] ? part : null));
  }
  const last = ctx.needsGradient.lastIndexOf(true);
  const gradients: (Value | null)[] = xs.map(() => null);
  let start = g.constInt64([0]);
  for (let i = 0; i <= last; i++) {
    const size = sizes[i];
    const length =
      typeof size === "number"
        ? g.constInt64([size])
        : slice(g, ctx.name(`input_${i}/size/Slice`), shapeOf(g, ctx.name(`input_${i}/Shape`), xs[i]), 0, axis, axis + 1);
    const end = i === 0 ? length : binary(g, "Add", ctx.name(`input_${i}/end/Add`), start, length);
    if (ctx.needsGradient[i]) gradients[i] = slice(g, ctx.name(`input_${i}/Slice`), dY, axis, start, end, size);
    start = end;
  }
  return gradients;
};

/** Split: the output gradients joined back along the axis, zeros standing in for outputs off the path. */
const splitRule: GradientRule = (ctx, gradients) => {
  const x = ctx.input(0);
  const axis = normaliseAxis(ctx, ctx.int("axis", 0), x.shape.length);
  const parts = ctx.outputs.map((output, i) => gradients[i] ?? zerosLike(ctx.g, ctx.name(`output_${i}/zeros`), output));
  return [concat(ctx.g, ctx.name("Concat"), parts, axis, x.shape[axis]), null];
};

function intOp(g: GraphBuilder, op: "Less" | "Where" | "Max" | "Min", name: string, inputs: Value[]): Value {
  return g.addNode(op, inputs, [{ dtype: op === "Less" ? "bool" : "int64", shape: [1] }], { name })[0];
}

/** A Slice bound as the op reads it: +dim when negative, then clamped to [0, dim]. */
function clampBound(ctx: GradientContext, step: string, bound: Value, dim: Value): Value {
  const g = ctx.g;
  const zero = g.constInt64([0]);
  const negative = intOp(g, "Less", ctx.name(`${step}/Less`), [bound, zero]);
  const wrapped = intOp(g, "Where", ctx.name(`${step}/Where`), [negative, binary(g, "Add", ctx.name(`${step}/Add`), bound, dim), bound]);
  return intOp(g, "Min", ctx.name(`${step}/Min`), [intOp(g, "Max", ctx.name(`${step}/Max`), [wrapped, zero]), dim]);
}

/**
 * Slice with step 1 (starts/ends constant or computed at run time): dX is dY zero-padded back
 * to x's extent, no zeros tensor and no scatter.
 *
 *   starts, ends ─(+dim if negative, clamp to [0, dim])─ begin, end
 *   dX = Pad(dY, [begin…, dim − max(end, begin)…], axes)
 */
const sliceRule: GradientRule = (ctx) => {
  const dY = ctx.gradient();
  const g = ctx.g;
  const [x, starts, ends] = [ctx.input(0), ctx.input(1), ctx.input(2)];
  const count = starts.shape[0];
  if (starts.shape.length !== 1 || typeof count !== "number") throw new Error(`${ctx.node.name}: the Slice gradient needs 1-D starts of known length`);
  const rawAxes = ctx.inputs[3] ? ctx.constant(3) : Array.from({ length: count }, (_, i) => i);
  if (rawAxes === null) throw new Error(`${ctx.node.name}: the Slice gradient needs constant axes`);
  const axes = rawAxes.map((a) => normaliseAxis(ctx, a, x.shape.length));
  if (ctx.inputs[4]) {
    const steps = ctx.constant(4);
    if (steps === null || steps.some((s) => s !== 1)) throw new Error(`${ctx.node.name}: the Slice gradient supports steps of 1 only`);
  }
  const dims = axes.map((a) => x.shape[a]);
  const [startValues, endValues] = [ctx.constant(1), ctx.constant(2)];
  let pads: Value;
  if (startValues !== null && endValues !== null && dims.every((d) => typeof d === "number")) {
    const clamp = (v: number, d: number) => Math.max(0, Math.min(d, v < 0 ? v + d : v));
    const begins = axes.map((_, j) => clamp(startValues[j], dims[j] as number));
    const padEnds = axes.map((_, j) => (dims[j] as number) - Math.max(begins[j], clamp(endValues[j], dims[j] as number)));
    pads = g.constInt64([...begins, ...padEnds]);
  } else {
    const shape = dims.every((d) => typeof d === "number") ? null : shapeOf(g, ctx.name("Shape"), x);
    const [starts64, ends64] = [int64(ctx, "starts/Cast", starts), int64(ctx, "ends/Cast", ends)];
    const begins: Value[] = [];
    const padEnds: Value[] = [];
    axes.forEach((a, j) => {
      const d = dims[j];
      const dim = typeof d === "number" ? g.constInt64([d]) : slice(g, ctx.name(`axis_${a}/dim/Slice`), shape!, 0, a, a + 1);
      const pick = (v: Value, what: string) => (count === 1 ? v : slice(g, ctx.name(`axis_${a}/${what}/Slice`), v, 0, j, j + 1));
      const begin = clampBound(ctx, `axis_${a}/begin`, pick(starts64, "start"), dim);
      const end = intOp(g, "Max", ctx.name(`axis_${a}/end/Max`), [clampBound(ctx, `axis_${a}/end`, pick(ends64, "end"), dim), begin]);
      begins.push(begin);
      padEnds.push(binary(g, "Sub", ctx.name(`axis_${a}/pad_end/Sub`), dim, end));
    });
    pads = concat(g, ctx.name("pads/Concat"), [...begins, ...padEnds], 0);
  }
  return [pad(g, ctx.name("Pad"), dY, pads, g.constInt64(axes), x.shape), null, null, null, null];
};

/**
 * Gather: each gathered slice's gradient is added back at its index (repeats accumulate), so an
 * embedding table gets a gradient for the rows the batch used.
 *
 *   dY [pre, I…, post] ─Transpose(I first)────────────┐
 *   indices [I…] ─Unsqueeze(-1)───────────────────────┼─ScatterND(add)─ [dim, pre, post] ─Transpose─▶ d data
 *   zeros [dim, pre, post] (see zerosLike) ────────────┘
 *
 * With axis 0 (an embedding) there is nothing to transpose.
 */
const gatherRule: GradientRule = (ctx) => {
  const dY = ctx.gradient();
  const g = ctx.g;
  const [data, indices] = [ctx.input(0), ctx.input(1)];
  const rank = data.shape.length;
  const axis = normaliseAxis(ctx, ctx.int("axis", 0), rank);
  const indexRank = indices.shape.length;
  const index = unsqueeze(g, ctx.name("indices/Unsqueeze"), int64(ctx, "indices/Cast", indices), [indexRank]); // [I…, 1]
  if (axis === 0) return [scatterND(g, ctx.name("ScatterND"), zerosLike(g, ctx.name("zeros"), data), index, dY, "add"), null];

  const dataPerm = [axis, ...Array.from({ length: rank }, (_, i) => i).filter((i) => i !== axis)];
  const gradientPerm = [
    ...Array.from({ length: indexRank }, (_, i) => axis + i),
    ...Array.from({ length: axis }, (_, i) => i),
    ...Array.from({ length: dY.shape.length - axis - indexRank }, (_, i) => axis + indexRank + i),
  ];
  const movedShape = dataPerm.map((p) => data.shape[p]);
  const zeros = movedShape.every((d) => typeof d === "number")
    ? transpose(g, ctx.name("zeros/Transpose"), zerosLike(g, ctx.name("zeros"), data), dataPerm) // see zerosLike: a known shape must not fold
    : zerosOfShape(
        g,
        ctx.name("zeros"),
        gather(g, ctx.name("zeros/Gather"), shapeOf(g, ctx.name("zeros/Shape"), data), g.constInt64(dataPerm)),
        movedShape,
        data.dtype,
      );
  const updates = transpose(g, ctx.name("dY/Transpose"), dY, gradientPerm);
  const scattered = scatterND(g, ctx.name("ScatterND"), zeros, index, updates, "add");
  return [transpose(g, ctx.name("Transpose"), scattered, inversePermutation(dataPerm)), null];
};

/** The shape-moving part of the gradient table. */
export const SHAPE_RULES: Record<string, GradientRule> = {
  Identity: identity,
  Reshape: relabel,
  Unsqueeze: relabel,
  Squeeze: relabel,
  Flatten: relabel,
  Expand: expandRule,
  Cast: castRule,
  Transpose: transposeRule,
  Concat: concatRule,
  Split: splitRule,
  Slice: sliceRule,
  Gather: gatherRule,
};
