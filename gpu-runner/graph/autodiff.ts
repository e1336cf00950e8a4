/**
 * Reverse-mode autodiff over our own graph builder: the backward ops go into the same ONNX
 * graph, so one onnxruntime session computes the loss and every parameter's gradient.
 * Written by hand because onnxruntime-node has no training API.
 *
 * As in tinygrad: the gradient rules are a table (gradient-rules.ts), one per primitive op; the
 * walk visits only nodes that lie on a path from a parameter to the loss; a value used several
 * times sums its gradients (one Add, or one Sum for more); each contribution is summed down to
 * the shape of the value it flows into (unbroadcast); and an op on the path without a rule is
 * an error that names it. Gradients never flow into integer tensors, shapes or initializers
 * (only the given parameters start a path). Backward nodes are named `/grad${forwardNode}/…`.
 */
import type { AttributeValue, DataType, GraphBuilder, GraphNode, Value } from "./builder.ts";
import { GRADIENT_RULES, type GradientContext } from "./gradient-rules.ts";
import { binary, formatShape, reduceSum, reshapeLike, sum, zerosLike } from "./ops.ts";

/**
 * Appends the backward pass of scalar `loss` with respect to `parameters` to `g` and returns each
 * parameter's gradient by name (its shape; parameters the loss does not depend on get zeros that
 * onnxruntime cannot fold into a stored tensor, see `zerosLike`). Marks nothing as an output. `name` prefixes the backward nodes ("/grad").
 */
export function appendGradients(g: GraphBuilder, loss: Value, parameters: Value[], options: { name?: string } = {}): Map<string, Value> {
  const prefix = options.name ?? "/grad";
  checkArguments(g, loss, parameters);
  const forward = [...g.nodes];

  // Values computed from a parameter (float only: integer tensors and shapes carry no gradient)…
  const fromParameters = new Set(parameters.map((p) => p.name));
  for (const node of forward) {
    if (!node.inputs.some((input) => fromParameters.has(input))) continue;
    for (const output of node.outputs) if (isDifferentiable(g.values.get(output)!.dtype)) fromParameters.add(output);
  }
  // …and values the loss is computed from: the walk visits what lies on both.
  const toLoss = new Set([loss.name]);
  for (let i = forward.length - 1; i >= 0; i--) {
    if (forward[i].outputs.some((output) => toLoss.has(output))) for (const input of forward[i].inputs) if (input !== "") toLoss.add(input);
  }
  const onPath = (name: string) => name !== "" && fromParameters.has(name) && toLoss.has(name);

  const taken = new Set(g.nodes.map((n) => n.name));
  const fresh = (base: string) => {
    let name = base;
    for (let k = 1; taken.has(name); k++) name = `${base}_${k}`;
    taken.add(name);
    return name;
  };

  const contributions = new Map<string, Value[]>();
  const accumulate = (value: Value, base: string): Value | null => {
    const terms = contributions.get(value.name) ?? [];
    if (terms.length <= 1) return terms[0] ?? null;
    return terms.length === 2 ? binary(g, "Add", fresh(`${base}/Add`), terms[0], terms[1]) : sum(g, fresh(`${base}/Sum`), terms);
  };
  if (onPath(loss.name)) {
    const dtype = loss.dtype as "float32" | "float64";
    contributions.set(loss.name, [loss.shape.length === 0 ? g.constFloat(1, dtype) : g.constFloat([1], dtype)]);
  }

  for (let n = forward.length - 1; n >= 0; n--) {
    const node = forward[n];
    if (!node.outputs.some(onPath)) continue;
    const op = node.domain === "" ? node.opType : `${node.domain}.${node.opType}`;
    const rule = Object.hasOwn(GRADIENT_RULES, op) ? GRADIENT_RULES[op] : undefined;
    if (rule === undefined) {
      throw new Error(`autodiff: no gradient rule for op ${op} (node ${node.name}), which lies between the parameters and the loss`);
    }
    const outputGradients = node.outputs.map((output, i) => (onPath(output) ? accumulate(g.values.get(output)!, `${prefix}${node.name}/output_${i}`) : null));
    if (outputGradients.every((gradient) => gradient === null)) continue;
    const inputs = node.inputs.map((input) => (input === "" ? null : g.values.get(input)!));
    const needsGradient = node.inputs.map(onPath);
    const ctx = gradientContext(g, node, inputs, needsGradient, outputGradients, (step) => fresh(`${prefix}${node.name}/${step}`));
    rule(ctx, outputGradients).forEach((gradient, i) => {
      if (!needsGradient[i] || gradient === null || gradient === undefined) return;
      const source = inputs[i]!;
      if (gradient.dtype !== source.dtype)
        throw new Error(`autodiff: the ${node.opType} rule gave ${node.name} input ${i} a ${gradient.dtype} gradient for ${source.dtype}`);
      const terms = contributions.get(source.name) ?? [];
      terms.push(unbroadcast(g, fresh, `${prefix}${node.name}/input_${i}`, gradient, source));
      contributions.set(source.name, terms);
    });
  }

  const gradients = new Map<string, Value>();
  for (const parameter of parameters) {
    const base = `${prefix}/${parameter.name}`;
    gradients.set(parameter.name, accumulate(parameter, base) ?? zerosLike(g, fresh(`${base}/zeros`), parameter));
  }
  return gradients;
}

/** The float types a gradient can have (integer tensors, shapes and indices get none). */
export function isDifferentiable(dtype: DataType): boolean {
  return dtype === "float32" || dtype === "float64";
}

/**
 * Sums `gradient` (shaped like an op's broadcast output) down to `source`'s shape: ReduceSum over
 * the leading axes and the axes where the source has size 1, then Reshape (to the source's
 * runtime shape when it has symbolic dims). A symbolic dim facing the same name, or facing any
 * other size, is taken as not broadcast: broadcasting only ever stretches a 1.
 */
function unbroadcast(g: GraphBuilder, fresh: (base: string) => string, base: string, gradient: Value, source: Value): Value {
  const same = (a: Value["shape"], b: Value["shape"]) => a.length === b.length && a.every((d, i) => d === b[i]);
  if (same(gradient.shape, source.shape)) return gradient;
  const lead = gradient.shape.length - source.shape.length;
  const mismatch = () =>
    new Error(`autodiff: ${base}: gradient ${formatShape(gradient.shape)} cannot be summed to ${source.name} ${formatShape(source.shape)}`);
  if (lead < 0) throw mismatch();
  const axes: number[] = [];
  gradient.shape.forEach((d, i) => {
    if (i < lead) return void axes.push(i);
    const s = source.shape[i - lead];
    if (s === d) return;
    if (s === 1) return void axes.push(i);
    if (d === 1 || (typeof s === "number" && typeof d === "number")) throw mismatch();
  });
  if (axes.length > 0 && source.shape.length === 0) return reduceSum(g, fresh(`${base}/ReduceSum`), gradient, axes, false);
  const reduced = axes.length > 0 ? reduceSum(g, fresh(`${base}/ReduceSum`), gradient, axes, true) : gradient;
  return same(reduced.shape, source.shape) ? reduced : reshapeLike(g, fresh(`${base}/Reshape`), reduced, source);
}

function checkArguments(g: GraphBuilder, loss: Value, parameters: Value[]): void {
  if (g.values.get(loss.name) !== loss) throw new Error(`autodiff: the loss ${loss.name} is not a value of graph ${g.graphName}`);
  if (!isDifferentiable(loss.dtype)) throw new Error(`autodiff: the loss ${loss.name} must be float, got ${loss.dtype}`);
  if (!(loss.shape.length === 0 || (loss.shape.length === 1 && loss.shape[0] === 1))) {
    throw new Error(`autodiff: the loss ${loss.name} must be a scalar ([] or [1]), got ${formatShape(loss.shape)}`);
  }
  const seen = new Set<string>();
  for (const p of parameters) {
    if (g.values.get(p.name) !== p) throw new Error(`autodiff: parameter ${p.name} is not a value of graph ${g.graphName}`);
    if (!isDifferentiable(p.dtype)) throw new Error(`autodiff: parameter ${p.name} must be float, got ${p.dtype}`);
    if (g.isInitializer(p.name)) throw new Error(`autodiff: parameter ${p.name} is an initializer; trainable parameters are graph inputs`);
    if (seen.has(p.name)) throw new Error(`autodiff: parameter ${p.name} is listed twice`);
    seen.add(p.name);
  }
}

function gradientContext(
  g: GraphBuilder,
  node: GraphNode,
  inputs: (Value | null)[],
  needsGradient: boolean[],
  outputGradients: (Value | null)[],
  name: (step: string) => string,
): GradientContext {
  const attribute = (key: string, kind: string, check: (v: AttributeValue) => boolean): AttributeValue | undefined => {
    const value = node.attributes[key];
    if (value !== undefined && !check(value))
      throw new Error(`autodiff: attribute ${key} of ${node.name} (${node.opType}) is not ${kind}: ${JSON.stringify(value)}`);
    return value;
  };
  return {
    g,
    node,
    inputs,
    outputs: node.outputs.map((output) => g.values.get(output)!),
    needsGradient,
    name,
    int: (key, fallback) => (attribute(key, "an int", (v) => typeof v === "number") as number | undefined) ?? fallback,
    float: (key, fallback) => {
      const value = attribute(key, "a float", (v) => typeof v === "number" || (typeof v === "object" && "float" in v));
      return value === undefined ? fallback : typeof value === "number" ? value : (value as { float: number }).float;
    },
    string: (key, fallback) => (attribute(key, "a string", (v) => typeof v === "string") as string | undefined) ?? fallback,
    ints: (key) => attribute(key, "a list of ints", Array.isArray) as number[] | undefined,
    constant: (i) => {
      const input = inputs[i];
      const data = input ? g.initializerData(input.name) : undefined;
      return data === undefined ? null : Array.from(data as ArrayLike<number | bigint>, (x) => Number(x));
    },
    input: (i) => inputs[i] ?? fail(`${node.name}: ${node.opType} has no input ${i}`),
    gradient: (i = 0) => outputGradients[i] ?? fail(`${node.name}: the ${node.opType} rule needs the gradient of output ${i}, which has none`),
  };
}

function fail(message: string): never {
  throw new Error(`autodiff: ${message}`);
}
