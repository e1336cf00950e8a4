/**
 * One training graph with its gradients, in one onnxruntime session: a step feeds a padded batch
 * and the current parameter values, and returns the loss and every parameter's gradient. The
 * session has symbolic batch and length, so one serves every (batch, length) bucket.
 */
import { appendGradients } from "../graph/autodiff.ts";
import { slidingWindow, type ModelConfig } from "../model/config.ts";
import { buildTrainingGraph, MASK_VALUE, TRAINING_IO, type TrainableParameter, type TrainingMethod } from "../model/training-graph.ts";
import type { WeightMap } from "../model/weights.ts";
import { fileQuantization, openGraphBeside, weightFileSource, type WeightFile } from "../model/weight-file.ts";
import type { QuantizedProducts, Quantization } from "../quantize/block-format.ts";
import { OnnxSession, type HostTensor, type OnnxSessionOptions } from "../runtime/onnx-session.ts";

/** A padded batch of next-token examples: rows × length, row-major. */
export interface TrainingBatch {
  rows: number;
  length: number;
  inputIds: ArrayLike<number>; // [rows × length]
  labels: ArrayLike<number>; // [rows × length]: the token each position should predict
  lossWeights: ArrayLike<number>; // [rows × length]: 0 on padding and untrained positions
  lengths: ArrayLike<number>; // real tokens per row (the rest is padding)
}

export interface StepResult {
  loss: number;
  gradients: Map<string, Float32Array | Float64Array>;
}

export class TrainingSession {
  private constructor(
    private readonly session: OnnxSession,
    readonly parameters: TrainableParameter[],
    readonly dtype: "float32" | "float64",
    private readonly window: number | null,
  ) {}

  /**
   * Builds the forward graph for `method`, appends the gradients and opens the session. With a
   * weight file (float32 only) the frozen weights are references into it, the file the serving
   * session was built from, so no graph carries the weights (or meets protobuf's 2 GiB cap).
   */
  static async create(
    config: ModelConfig,
    weights: WeightMap,
    method: TrainingMethod,
    options: OnnxSessionOptions & {
      dtype?: "float32" | "float64";
      weightFile?: WeightFile;
      quantization?: Quantization | null;
      quantizedProducts?: QuantizedProducts;
    } = {},
  ): Promise<TrainingSession> {
    const dtype = options.dtype ?? "float32";
    const { weightFile } = options;
    if (weightFile !== undefined && dtype !== "float32") throw new Error("a weight file holds float32 weights; float64 training graphs keep theirs inline");
    const source = weightFile === undefined ? undefined : weightFileSource(weightFile);
    const quantization = weightFile === undefined ? (options.quantization ?? null) : fileQuantization(weightFile, options.quantization);
    const { graph, loss, parameters } = buildTrainingGraph(config, weights, method, { dtype, source, quantization, products: options.quantizedProducts });
    const gradients = appendGradients(
      graph,
      loss,
      parameters.map((p) => p.value),
    );
    for (const parameter of parameters) graph.output(gradients.get(parameter.name)!, gradientName(parameter.name));
    // Float64 graphs are for gradient checks; some fused kernels exist only in float32.
    const optimizationLevel = options.optimizationLevel ?? (dtype === "float64" ? "basic" : "all");
    // Quantized weights are dequantised layer by layer for the input gradients (quantized-graph.ts);
    // folded as constants they would become a float32 copy of every weight.
    const disabledOptimizers = quantization === null ? options.disabledOptimizers : [...(options.disabledOptimizers ?? []), "ConstantFolding"];
    const open = async (model: Uint8Array | string) => {
      const session = await OnnxSession.create(model, { inputs: graph.inputs, outputs: graph.outputs }, { ...options, optimizationLevel, disabledOptimizers });
      return new TrainingSession(session, parameters, dtype, slidingWindow(config));
    };
    return weightFile === undefined ? open(graph.serialize()) : openGraphBeside(weightFile, graph, "training", open);
  }

  /** Forward and backward on one batch with the given parameter values. */
  async step(batch: TrainingBatch, values: Map<string, Float32Array | Float64Array>): Promise<StepResult> {
    const results = await this.session.run(this.feeds(batch, values), [TRAINING_IO.loss, ...this.parameters.map((p) => gradientName(p.name))]);
    const gradients = new Map<string, Float32Array | Float64Array>();
    for (const parameter of this.parameters) gradients.set(parameter.name, results[gradientName(parameter.name)].data as Float32Array | Float64Array);
    return { loss: Number((results[TRAINING_IO.loss].data as Float32Array)[0]), gradients };
  }

  /** The loss alone, through the training graph (gradient checks). */
  async loss(batch: TrainingBatch, values: Map<string, Float32Array | Float64Array>): Promise<number> {
    return (await this.evaluate(batch, values)).loss;
  }

  /**
   * Loss and token accuracy. onnxruntime still runs the whole graph, backward included, so this
   * costs a training step; it serves evaluation once per epoch, where a second forward-only
   * session (a second copy of the frozen weights) would cost more than it saves.
   */
  async evaluate(batch: TrainingBatch, values: Map<string, Float32Array | Float64Array>): Promise<{ loss: number; tokenAccuracy: number }> {
    const results = await this.session.run(this.feeds(batch, values), [TRAINING_IO.loss, TRAINING_IO.tokenAccuracy]);
    return { loss: Number(results[TRAINING_IO.loss].data[0]), tokenAccuracy: Number(results[TRAINING_IO.tokenAccuracy].data[0]) };
  }

  private feeds(batch: TrainingBatch, values: Map<string, Float32Array | Float64Array>): Record<string, HostTensor> {
    const feeds = batchFeeds(batch, this.dtype, this.window);
    for (const parameter of this.parameters) {
      const data = values.get(parameter.name);
      if (data === undefined) throw new Error(`no value for parameter ${parameter.name}`);
      feeds[parameter.name] = { dtype: this.dtype, shape: parameter.shape, data };
    }
    return feeds;
  }

  /** Releases the session. */
  async dispose(): Promise<void> {
    await this.session.dispose();
  }
}

/** Name of a parameter's gradient output. */
export function gradientName(parameter: string): string {
  return `grad.${parameter}`;
}

/**
 * Feeds for a batch: ids, positions, the causal + padding bias (and, for a model with sliding-window
 * layers, the same bias limited to the last `window` positions), labels and loss weights.
 */
export function batchFeeds(batch: TrainingBatch, dtype: "float32" | "float64", window: number | null = null): Record<string, HostTensor> {
  const { rows, length } = batch;
  const size = rows * length;
  for (const [name, data] of [
    ["inputIds", batch.inputIds],
    ["labels", batch.labels],
    ["lossWeights", batch.lossWeights],
  ] as const) {
    if (data.length !== size) throw new Error(`batch ${name} has ${data.length} entries, expected ${rows} × ${length}`);
  }
  const inputIds = new BigInt64Array(size);
  const labels = new BigInt64Array(size);
  const positions = new BigInt64Array(size);
  const weights = dtype === "float64" ? new Float64Array(size) : new Float32Array(size);
  const newBias = () => (dtype === "float64" ? new Float64Array(rows * length * length) : new Float32Array(rows * length * length)).fill(MASK_VALUE);
  const bias = newBias();
  const windowBias = window === null ? null : newBias();
  for (let row = 0; row < rows; row++) {
    const real = batch.lengths[row];
    for (let t = 0; t < length; t++) {
      const at = row * length + t;
      inputIds[at] = BigInt(batch.inputIds[at]);
      labels[at] = BigInt(batch.labels[at]);
      positions[at] = BigInt(Math.min(t, Math.max(real - 1, 0)));
      weights[at] = t < real ? batch.lossWeights[at] : 0;
      // Causal among real tokens; padded queries see the real tokens only (their loss weight is 0).
      const visible = Math.max(Math.min(t, real - 1) + 1, 1);
      bias.fill(0, at * length, at * length + visible);
      // Keys j with 0 ≤ t − j < window, as transformers' sliding-window mask.
      windowBias?.fill(0, at * length + Math.max(0, visible - window!), at * length + visible);
    }
  }
  return {
    [TRAINING_IO.inputIds]: { dtype: "int64", shape: [rows, length], data: inputIds },
    [TRAINING_IO.positionIds]: { dtype: "int64", shape: [rows, length], data: positions },
    [TRAINING_IO.attentionBias]: { dtype, shape: [rows, length, length], data: bias },
    ...(windowBias === null ? {} : { [TRAINING_IO.windowBias]: { dtype, shape: [rows, length, length], data: windowBias } }),
    [TRAINING_IO.labels]: { dtype: "int64", shape: [size], data: labels },
    [TRAINING_IO.lossWeights]: { dtype, shape: [size], data: weights },
  };
}
