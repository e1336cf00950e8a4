/**
 * The one module that imports onnxruntime-node (as transformers.js keeps its runtime behind one
 * door). It checks every feed's name, dtype and shape against the graph's declared inputs
 * before a run, binds symbolic dimensions consistently, and turns a failed run into an error
 * that says which inputs it was given.
 */
import { availableParallelism } from "node:os";
import * as ort from "onnxruntime-node";
import type { DataType, Dim, TypedData, Value } from "../graph/builder.ts";

/** Where a session's kernels run. cuda and webgpu need a host where those providers are installed. */
export type ExecutionProvider = "cpu" | "cuda" | "webgpu";

export interface OnnxSessionOptions {
  executionProvider?: ExecutionProvider;
  intraOpThreads?: number; // absent: one per logical CPU (onnxruntime's own default counts physical cores only)
  optimizationLevel?: "disabled" | "basic" | "extended" | "all";
  allowSpinning?: boolean; // false when several sessions alternate on the same cores
  prepackWeights?: boolean; // CPU: repack constant weights for faster products (a private copy per session); default true
  profileFilePrefix?: string; // write onnxruntime's per-op profile (a JSON trace) with this prefix
  deviceOutputs?: string[]; // outputs left in the provider's memory (WebGPU only), returned as DeviceTensors
  /**
   * onnxruntime graph transformers to leave out, by name. "ConstantFolding" keeps computations on
   * initializers in the graph: a dequantisation of frozen weights would otherwise be folded into
   * a float32 copy of every weight at load.
   */
  disabledOptimizers?: string[];
}

/** A tensor on the host, typed as the graph declares it. */
export interface HostTensor {
  dtype: DataType;
  shape: number[];
  data: TypedData;
}

/**
 * A tensor that stays in the execution provider's memory (a WebGPU buffer): an output of one run
 * fed as an input of the next without crossing to the host. Its contents cannot be read here.
 */
export class DeviceTensor {
  readonly location = "device";
  #tensor: ort.Tensor | null;

  /** Wraps an onnxruntime tensor that lives on the device. */
  constructor(tensor: ort.Tensor) {
    this.#tensor = tensor;
  }

  /** The element type. */
  get dtype(): DataType {
    return this.tensor.type as DataType;
  }

  /** The dimensions. */
  get shape(): number[] {
    return [...this.tensor.dims];
  }

  /** The underlying tensor, for the session that feeds it. */
  get tensor(): ort.Tensor {
    if (this.#tensor === null) throw new Error("this device tensor has been released");
    return this.#tensor;
  }

  /** Returns the buffer to the provider; the tensor cannot be used afterwards. */
  dispose(): void {
    this.#tensor?.dispose();
    this.#tensor = null;
  }
}

/** An input of a run: on the host, or already on the device. */
export type Feed = HostTensor | DeviceTensor;

/** The declared inputs and outputs of a graph, as the builder recorded them. */
export interface GraphSignature {
  inputs: Value[];
  outputs: Value[];
}

const ORT_TYPE: Record<DataType, ort.Tensor.Type> = {
  float32: "float32",
  float64: "float64",
  int64: "int64",
  int32: "int32",
  bool: "bool",
  uint8: "uint8",
};

let sessionsCreated = 0;

/** How many sessions this process has created (tests assert that adapter switches create none). */
export function sessionCreationCount(): number {
  return sessionsCreated;
}

/** Execution providers this onnxruntime-node build reports. */
export function supportedExecutionProviders(): string[] {
  return ort.listSupportedBackends().map((b) => b.name);
}

/** An inference session over one graph, with checked feeds. */
export class OnnxSession {
  private constructor(
    private readonly session: ort.InferenceSession,
    readonly signature: GraphSignature,
    private readonly deviceOutputs: ReadonlySet<string>,
  ) {}

  /** Creates a session from serialised model bytes or a path to an .onnx file. */
  static async create(model: Uint8Array | string, signature: GraphSignature, options: OnnxSessionOptions = {}): Promise<OnnxSession> {
    const provider = options.executionProvider ?? "cpu";
    const available = supportedExecutionProviders();
    if (!available.includes(provider)) {
      throw new Error(`execution provider "${provider}" is not available in this onnxruntime-node build (available: ${available.join(", ")})`);
    }
    const sessionOptions: ort.InferenceSession.SessionOptions = {
      executionProviders: [provider],
      graphOptimizationLevel: options.optimizationLevel ?? "all",
      intraOpNumThreads: options.intraOpThreads ?? availableParallelism(),
      interOpNumThreads: 1,
      executionMode: "sequential",
      ...(options.profileFilePrefix !== undefined ? { enableProfiling: true, profileFilePrefix: options.profileFilePrefix } : {}),
      ...(options.deviceOutputs !== undefined && options.deviceOutputs.length > 0
        ? {
            preferredOutputLocation: Object.fromEntries(signature.outputs.map((o) => [o.name, options.deviceOutputs!.includes(o.name) ? "gpu-buffer" : "cpu"])),
          }
        : {}),
      extra: {
        session: {
          intra_op: { allow_spinning: options.allowSpinning === false ? "0" : "1" },
          disable_prepacking: options.prepackWeights === false ? "1" : "0",
        },
        ...(options.disabledOptimizers !== undefined && options.disabledOptimizers.length > 0
          ? { optimization: { disable_specified_optimizers: options.disabledOptimizers.join(";") } }
          : {}),
      },
    };
    let session: ort.InferenceSession;
    try {
      session = typeof model === "string" ? await ort.InferenceSession.create(model, sessionOptions) : await ort.InferenceSession.create(model, sessionOptions);
    } catch (error) {
      const hint = provider === "cpu" ? "" : ` (is the ${provider} execution provider installed on this host? See the README's GPU section)`;
      throw new Error(`onnxruntime could not load the model on ${provider}: ${(error as Error).message}${hint}`);
    }
    sessionsCreated++;
    if (options.deviceOutputs !== undefined && options.deviceOutputs.length > 0 && provider !== "webgpu") {
      throw new Error(`outputs can stay on the device only with the webgpu provider, not ${provider}`);
    }
    return new OnnxSession(session, signature, new Set(options.deviceOutputs ?? []));
  }

  /** Runs the graph; returns the requested outputs (all by default) as host tensors. */
  async run(feeds: Record<string, Feed>, outputNames?: string[]): Promise<Record<string, HostTensor>> {
    const { host, device } = await this.runMixed(feeds, outputNames);
    if (Object.keys(device).length > 0) throw new Error(`outputs ${Object.keys(device).join(", ")} stay on the device: use runMixed`);
    return host;
  }

  /** Runs the graph; host outputs come back as host tensors, the session's device outputs as DeviceTensors. */
  async runMixed(feeds: Record<string, Feed>, outputNames?: string[]): Promise<{ host: Record<string, HostTensor>; device: Record<string, DeviceTensor> }> {
    this.checkFeeds(feeds);
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const [name, tensor] of Object.entries(feeds)) {
      ortFeeds[name] =
        tensor instanceof DeviceTensor ? tensor.tensor : new ort.Tensor(ORT_TYPE[tensor.dtype], tensor.data as ort.Tensor.DataType, tensor.shape);
    }
    const wanted = outputNames ?? this.signature.outputs.map((o) => o.name);
    for (const name of wanted) {
      if (!this.signature.outputs.some((o) => o.name === name)) throw new Error(`the graph has no output "${name}"`);
    }
    let results: ort.InferenceSession.OnnxValueMapType;
    try {
      results = await this.session.run(ortFeeds, wanted);
    } catch (error) {
      const described = Object.entries(feeds)
        .map(([n, t]) => `${n}:${t.dtype}[${t.shape.join(",")}]`)
        .join(" ");
      throw new Error(`onnxruntime run failed: ${(error as Error).message} (inputs ${described})`);
    }
    const host: Record<string, HostTensor> = {};
    const device: Record<string, DeviceTensor> = {};
    for (const name of wanted) {
      const value = results[name] as ort.Tensor;
      if (this.deviceOutputs.has(name)) device[name] = new DeviceTensor(value);
      else host[name] = { dtype: value.type as DataType, shape: [...value.dims], data: value.data as TypedData };
    }
    return { host, device };
  }

  /** Ends profiling (when enabled) and writes the trace file. */
  endProfiling(): void {
    this.session.endProfiling();
  }

  /** Releases the native session. */
  async dispose(): Promise<void> {
    await this.session.release();
  }

  private checkFeeds(feeds: Record<string, Feed>): void {
    const bound = new Map<string, number>();
    const expected = new Map(this.signature.inputs.map((v) => [v.name, v]));
    for (const name of Object.keys(feeds)) {
      if (!expected.has(name)) throw new Error(`unexpected input "${name}" (the graph takes ${[...expected.keys()].slice(0, 8).join(", ")}…)`);
    }
    for (const input of this.signature.inputs) {
      const feed = feeds[input.name];
      if (feed === undefined) throw new Error(`missing input "${input.name}"`);
      if (feed.dtype !== input.dtype) throw new Error(`input "${input.name}" must be ${input.dtype}, got ${feed.dtype}`);
      if (feed.shape.length !== input.shape.length) {
        throw new Error(`input "${input.name}" must have rank ${input.shape.length} [${input.shape.join(", ")}], got [${feed.shape.join(", ")}]`);
      }
      let elements = 1;
      feed.shape.forEach((size, i) => {
        elements *= size;
        const dim: Dim = input.shape[i];
        if (typeof dim === "number") {
          if (dim !== size) throw new Error(`input "${input.name}" dimension ${i} must be ${dim}, got ${size}`);
        } else if (bound.has(dim) && bound.get(dim) !== size) {
          throw new Error(`input "${input.name}" dimension ${i} (${dim}) is ${size} but another input bound ${dim}=${bound.get(dim)}`);
        } else {
          bound.set(dim, size);
        }
      });
      if (!(feed instanceof DeviceTensor) && feed.data.length !== elements) {
        throw new Error(`input "${input.name}" has ${feed.data.length} elements for shape [${feed.shape.join(", ")}]`);
      }
    }
  }
}
