/**
 * The training loss. Cross-entropy is one ONNX `SoftmaxCrossEntropyLoss` node, so the autodiff
 * differentiates it as a whole (gradient-rules.ts): softmax minus the label, scattered in place,
 * with no [N, V] one-hot or zeros tensor.
 */
import type { GraphBuilder, Value } from "./builder.ts";
import { binary, formatShape, reduceSum } from "./ops.ts";

/**
 * Weighted mean token cross-entropy, a scalar:
 *
 *   loss = Σᵢ wᵢ·ceᵢ / max(Σᵢ wᵢ, 1e-9),   ceᵢ = −log softmax(logitsᵢ)[labelᵢ]
 *
 * The weights are per position (0 on padding and prompt tokens, 1 on trained tokens), so the
 * loss is the mean over trained tokens; when every weight is 0 it is 0, not NaN.
 *
 *   logits [N, V], labels [N] ─SoftmaxCrossEntropyLoss(none)─ ce [N] ─Mul(w)─ReduceSum─┐
 *   weights [N] ─ReduceSum─Max(1e-9)───────────────────────────────────────────────────Div─▶ loss []
 */
export function weightedCrossEntropy(g: GraphBuilder, name: string, logits: Value, labels: Value, weights: Value): Value {
  if (logits.dtype !== "float32" && logits.dtype !== "float64") throw new Error(`${name}: logits must be float, got ${logits.dtype}`);
  if (logits.shape.length !== 2) throw new Error(`${name}: logits must be [N, V], got ${formatShape(logits.shape)}`);
  if (labels.dtype !== "int64" || labels.shape.length !== 1)
    throw new Error(`${name}: labels must be int64 [N], got ${labels.dtype}${formatShape(labels.shape)}`);
  if (weights.dtype !== logits.dtype || weights.shape.length !== 1) {
    throw new Error(`${name}: weights must be ${logits.dtype} [N], got ${weights.dtype}${formatShape(weights.shape)}`);
  }
  const rows = [logits.shape[0], labels.shape[0], weights.shape[0]];
  const known = rows.filter((d) => typeof d === "number");
  if (known.some((d) => d !== known[0])) throw new Error(`${name}: logits, labels and weights disagree on N: ${rows.join(", ")}`);

  const perRow = g.addNode("SoftmaxCrossEntropyLoss", [logits, labels], [{ dtype: logits.dtype, shape: [logits.shape[0]] }], {
    name: `${name}/SoftmaxCrossEntropyLoss`,
    attributes: { reduction: "none" },
  })[0]; // [N]
  const total = reduceSum(g, `${name}/ReduceSum`, binary(g, "Mul", `${name}/Mul`, perRow, weights), [0], false); // []
  const weightSum = reduceSum(g, `${name}/weights/ReduceSum`, weights, [0], false); // []
  const denominator = g.addNode("Max", [weightSum, g.constFloat(1e-9, logits.dtype)], [{ dtype: logits.dtype, shape: [] }], { name: `${name}/weights/Max` })[0];
  return binary(g, "Div", `${name}/Div`, total, denominator);
}
