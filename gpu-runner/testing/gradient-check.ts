/**
 * Finite-difference checks of the autodiff, for tests: build a small graph on random inputs,
 * append its gradients, run it with onnxruntime and compare every gradient element with a
 * central difference of the loss. float64 throughout; the session runs at optimisation level
 * "basic" because some fusions (QuickGelu) have no float64 kernel.
 */
import { appendGradients } from "../graph/autodiff.ts";
import { GraphBuilder, type Shape, type Value } from "../graph/builder.ts";
import { binary, reduceSum } from "../graph/ops.ts";
import { OnnxSession, type HostTensor } from "../runtime/onnx-session.ts";
import { Rng } from "../random.ts";

/** A graph under test: `output` is any float tensor computed from the inputs fed in `feeds`. */
export interface GradientProblem {
  graph: GraphBuilder;
  output: Value;
  parameters: Value[]; // float64 graph inputs to differentiate
  feeds: Record<string, HostTensor>;
  sizes: Record<string, number>; // symbolic dims' sizes (those of the output included)
}

/** What a check measured. */
export interface GradientReport {
  loss: number;
  maxRelativeError: number; // max over parameters of max|analytic − numeric| / max(max|numeric|, 1e-3)
  errors: Record<string, number>; // the same per parameter
  analytic: Record<string, Float64Array>;
  backwardNodes: GraphBuilder["nodes"];
}

/** Declares random float64 inputs (and fixed integer ones) with their feeds. */
export class ProblemBuilder {
  readonly graph = new GraphBuilder("gradient-check");
  readonly feeds: Record<string, HostTensor> = {};
  readonly parameters: Value[] = [];
  private readonly rng: Rng;

  constructor(
    seed: number,
    readonly sizes: Record<string, number> = {},
  ) {
    this.rng = new Rng(seed);
  }

  /** A float64 input of random values (normal, or uniform in [0.5, 1.5] if positive); a parameter unless frozen. */
  float(name: string, shape: Shape, options: { positive?: boolean; frozen?: boolean } = {}): Value {
    const value = this.graph.input(name, "float64", shape);
    const concrete = this.concrete(shape);
    const data = Float64Array.from({ length: concrete.reduce((p, d) => p * d, 1) }, () => (options.positive ? 0.5 + this.rng.uniform() : this.rng.normal()));
    this.feeds[name] = { dtype: "float64", shape: concrete, data };
    if (!options.frozen) this.parameters.push(value);
    return value;
  }

  /** An int64 input holding `values`. */
  int(name: string, shape: Shape, values: number[]): Value {
    const value = this.graph.input(name, "int64", shape);
    this.feeds[name] = { dtype: "int64", shape: this.concrete(shape), data: BigInt64Array.from(values.map(BigInt)) };
    return value;
  }

  /** The problem whose output is `output`. */
  problem(output: Value): GradientProblem {
    return { graph: this.graph, output, parameters: this.parameters, feeds: this.feeds, sizes: this.sizes };
  }

  /** A shape with its symbolic dims replaced by their sizes. */
  concrete(shape: Shape): number[] {
    return shape.map((d) => {
      if (typeof d === "number") return d;
      const size = this.sizes[d];
      if (size === undefined) throw new Error(`gradient check: no size given for symbolic dim ${d}`);
      return size;
    });
  }
}

/**
 * Appends the loss Σ output ⊙ probe (a fixed random probe, so no symmetry hides an error) and its
 * gradients, then compares each gradient with (L(x + h) − L(x − h)) / 2h.
 */
export async function checkGradients(problem: GradientProblem, options: { seed?: number; step?: number } = {}): Promise<GradientReport> {
  const { graph: g, output, parameters, feeds, sizes } = problem;
  const step = options.step ?? 1e-6;
  const rng = new Rng(options.seed ?? 7);
  const probeShape = output.shape.map((d) => (typeof d === "number" ? d : (sizes[d] ?? fail(`no size given for the output's dim ${d}`))));
  const probe = g.input("gradient_check.probe", output.dtype, output.shape);
  const probeData = Float64Array.from({ length: probeShape.reduce((p, d) => p * d, 1) }, () => 2 * rng.uniform() - 1);
  const weighted = binary(g, "Mul", "/gradient_check/Mul", output, probe);
  const loss = reduceSum(
    g,
    "/gradient_check/ReduceSum",
    weighted,
    weighted.shape.map((_, i) => i),
    false,
  );
  const lossOutput = g.output(loss, "gradient_check.loss");

  const before = g.nodes.length;
  const gradients = appendGradients(g, lossOutput, parameters);
  const backwardNodes = g.nodes.slice(before);
  for (const p of parameters) {
    if (!g.inputs.includes(p)) fail(`parameter ${p.name} must be a graph input`);
    g.output(gradients.get(p.name)!, `gradient_check.grad.${p.name}`);
  }

  const session = await OnnxSession.create(g.serialize(), { inputs: g.inputs, outputs: g.outputs }, { optimizationLevel: "basic", intraOpThreads: 1 });
  try {
    const allFeeds: Record<string, HostTensor> = { ...feeds, [probe.name]: { dtype: "float64", shape: probeShape, data: probeData } };
    const results = await session.run(allFeeds);
    const lossAt = async (name: string, index: number, delta: number) => {
      const data = allFeeds[name].data as Float64Array;
      const saved = data[index];
      data[index] = saved + delta;
      const value = (await session.run(allFeeds, ["gradient_check.loss"]))["gradient_check.loss"].data[0] as number;
      data[index] = saved;
      return value;
    };
    const errors: Record<string, number> = {};
    const analytic: Record<string, Float64Array> = {};
    for (const p of parameters) {
      const computed = results[`gradient_check.grad.${p.name}`];
      const expectedShape = allFeeds[p.name].shape;
      if (computed.shape.join(",") !== expectedShape.join(",")) fail(`gradient of ${p.name} has shape [${computed.shape}], expected [${expectedShape}]`);
      const values = computed.data as Float64Array;
      let maxDiff = 0;
      let maxNumeric = 0;
      for (let i = 0; i < values.length; i++) {
        const numeric = ((await lossAt(p.name, i, step)) - (await lossAt(p.name, i, -step))) / (2 * step);
        maxDiff = Math.max(maxDiff, Math.abs(values[i] - numeric));
        maxNumeric = Math.max(maxNumeric, Math.abs(numeric));
      }
      errors[p.name] = maxDiff / Math.max(maxNumeric, 1e-3);
      analytic[p.name] = Float64Array.from(values);
    }
    return {
      loss: results["gradient_check.loss"].data[0] as number,
      maxRelativeError: Math.max(0, ...Object.values(errors)),
      errors,
      analytic,
      backwardNodes,
    };
  } finally {
    await session.dispose();
  }
}

function fail(message: string): never {
  throw new Error(`gradient check: ${message}`);
}
