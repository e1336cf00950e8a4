/**
 * A small ONNX graph builder with tracked shapes.
 *
 * Written by hand because nothing on npm builds ONNX graphs from TypeScript with shape tracking,
 * and the autodiff (training) needs to walk exactly the nodes we emitted. Every op method checks
 * its operands' shapes and returns a `Value` whose shape is known at build time; a dimension is a
 * number, or a string naming a symbolic size ("batch", "tokens") bound when the session runs.
 * Node names follow onnxruntime-genai's builder: `/model/layers.0/attn/q_proj/MatMul`, outputs
 * `${node}/output_0`, shared constants `/model/constants/INT64/...`.
 */
import onnxProto from "onnx-proto";
import type { onnx as OnnxTypes } from "onnx-proto";
import { sizeOf } from "../tensor.ts";

const { onnx } = onnxProto;

export type Dim = number | string;
export type Shape = Dim[];
export type DataType = "float32" | "float64" | "int64" | "int32" | "bool" | "uint8";

/** A named tensor in the graph with its element type and (possibly symbolic) shape. */
export interface Value {
  name: string;
  dtype: DataType;
  shape: Shape;
}

export type AttributeValue = number | number[] | string | { float: number } | { floats: number[] };

/** One emitted node, kept in our own form so later passes (autodiff) can read the graph. */
export interface GraphNode {
  name: string;
  opType: string;
  domain: string;
  inputs: string[];
  outputs: string[];
  attributes: Record<string, AttributeValue>;
}

export type TypedData = Float32Array | Float64Array | BigInt64Array | Int32Array | Uint8Array;

/** Where an initializer's bytes lie in an external-data file (relative to the model file's directory). */
export interface ExternalLocation {
  location: string;
  offset: number;
  length: number;
}

type Initializer = { value: Value; data: TypedData; external?: undefined } | { value: Value; data?: undefined; external: ExternalLocation };

const DTYPE_BYTES: Record<DataType, number> = { float32: 4, float64: 8, int64: 8, int32: 4, bool: 1, uint8: 1 };

/** ONNX TensorProto element type codes. */
export const DTYPE_TO_ONNX: Readonly<Record<DataType, number>> = {
  float32: 1,
  float64: 11,
  int64: 7,
  int32: 6,
  bool: 9,
  uint8: 2,
};

/** The opset our graphs target, and the Microsoft contrib domain for ORT-only ops. */
export const DEFAULT_OPSET = 18;
export const MICROSOFT_DOMAIN = "com.microsoft";

/** Builds one ONNX graph; op helpers live in `ops.ts` and call `addNode`. */
export class GraphBuilder {
  readonly inputs: Value[] = [];
  readonly outputs: Value[] = [];
  readonly nodes: GraphNode[] = [];
  readonly values = new Map<string, Value>();
  private readonly initializers = new Map<string, Initializer>();
  private readonly nodeNames = new Set<string>();

  constructor(
    readonly graphName: string,
    readonly opset: number = DEFAULT_OPSET,
  ) {}

  /** Declares a graph input. */
  input(name: string, dtype: DataType, shape: Shape): Value {
    const value = this.define({ name, dtype, shape: [...shape] });
    this.inputs.push(value);
    return value;
  }

  /** Marks a value as a graph output, renaming it through Identity when a name is given. */
  output(value: Value, name?: string): Value {
    let out = value;
    if (name !== undefined && name !== value.name) {
      [out] = this.addNode("Identity", [value], [{ dtype: value.dtype, shape: value.shape }], { name, outputNames: [name] });
    }
    this.outputs.push(out);
    return out;
  }

  /** Adds a constant tensor stored in the model (a weight, a table). */
  initializer(name: string, dtype: DataType, shape: number[], data: TypedData): Value {
    const expected = sizeOf(shape);
    if (data.length !== expected) {
      throw new Error(`initializer ${name}: ${data.length} elements for shape [${shape.join(", ")}] (needs ${expected})`);
    }
    const value = this.define({ name, dtype, shape: [...shape] });
    this.initializers.set(name, { value, data });
    return value;
  }

  /** Adds a constant whose bytes stay in an external-data file that other graphs may share. */
  externalInitializer(name: string, dtype: DataType, shape: number[], external: ExternalLocation): Value {
    const bytes = sizeOf(shape) * DTYPE_BYTES[dtype];
    if (external.length !== bytes)
      throw new Error(`initializer ${name}: ${external.length} external bytes for shape [${shape.join(", ")}] of ${dtype} (needs ${bytes})`);
    const value = this.define({ name, dtype, shape: [...shape] });
    this.initializers.set(name, { value, external: { ...external } });
    return value;
  }

  /** A shared int64 constant, emitted once per distinct content. */
  constInt64(values: number[], shape: number[] = [values.length]): Value {
    const name = `/model/constants/INT64/${shape.length === 0 ? "" : `[${shape.join("x")}]`}${values.join("_")}`;
    return this.values.get(name) ?? this.initializer(name, "int64", shape, BigInt64Array.from(values.map(BigInt)));
  }

  /** A shared scalar (or 1-D) float constant of the given type. */
  constFloat(values: number | number[], dtype: "float32" | "float64" = "float32"): Value {
    const list = typeof values === "number" ? [values] : values;
    const shape = typeof values === "number" ? [] : [list.length];
    const tag = dtype === "float32" ? "FLOAT" : "DOUBLE";
    const name = `/model/constants/${tag}/${shape.length === 0 ? "" : "[]"}${list.map((v) => String(v)).join("_")}`;
    const data = dtype === "float32" ? Float32Array.from(list) : Float64Array.from(list);
    return this.values.get(name) ?? this.initializer(name, dtype, shape, data);
  }

  /** True when `name` is an initializer (a constant of the model rather than a computed value). */
  isInitializer(name: string): boolean {
    return this.initializers.has(name);
  }

  /** The data of an initializer held in memory, for passes that fold or inspect constants. */
  initializerData(name: string): TypedData | undefined {
    return this.initializers.get(name)?.data;
  }

  /**
   * Emits one node. `outputTypes` gives each output's dtype and shape (the op helpers compute
   * them); outputs are named `${name}/output_${i}` unless `outputNames` says otherwise.
   */
  addNode(
    opType: string,
    inputs: (Value | null)[],
    outputTypes: { dtype: DataType; shape: Shape }[],
    options: { name: string; attributes?: Record<string, AttributeValue>; domain?: string; outputNames?: string[] },
  ): Value[] {
    const { name } = options;
    if (this.nodeNames.has(name)) throw new Error(`duplicate node name ${name}`);
    for (const input of inputs) {
      if (input !== null && this.values.get(input.name) !== input) {
        throw new Error(`node ${name}: input ${input.name} is not a value of this graph`);
      }
    }
    this.nodeNames.add(name);
    const outputs = outputTypes.map((type, i) =>
      this.define({ name: options.outputNames?.[i] ?? `${name}/output_${i}`, dtype: type.dtype, shape: [...type.shape] }),
    );
    this.nodes.push({
      name,
      opType,
      domain: options.domain ?? "",
      inputs: inputs.map((v) => (v === null ? "" : v.name)),
      outputs: outputs.map((v) => v.name),
      attributes: options.attributes ?? {},
    });
    return outputs;
  }

  /** Bytes of the initializers held in memory (external ones count nothing). */
  initializerBytes(): number {
    let total = 0;
    for (const { data } of this.initializers.values()) total += data?.byteLength ?? 0;
    return total;
  }

  /**
   * The graph as an ONNX ModelProto: initializers inline, except those placed in an external file
   * (`externalInitializer`; protobuf caps a model at 2 GiB, so real models keep their weights there).
   */
  toModelProto(): OnnxTypes.ModelProto {
    const usesContrib = this.nodes.some((n) => n.domain === MICROSOFT_DOMAIN);
    return onnx.ModelProto.create({
      irVersion: 8,
      producerName: "pica-platform",
      opsetImport: [{ domain: "", version: this.opset }, ...(usesContrib ? [{ domain: MICROSOFT_DOMAIN, version: 1 }] : [])],
      graph: {
        name: this.graphName,
        input: this.inputs.map(valueInfo),
        output: this.outputs.map(valueInfo),
        initializer: [...this.initializers.values()].map(({ value, data, external: placed }) => {
          const base = { name: value.name, dataType: DTYPE_TO_ONNX[value.dtype], dims: value.shape as number[] };
          if (placed === undefined) return { ...base, rawData: new Uint8Array(data!.buffer, data!.byteOffset, data!.byteLength) };
          return {
            ...base,
            dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
            externalData: [
              { key: "location", value: placed.location },
              { key: "offset", value: String(placed.offset) },
              { key: "length", value: String(placed.length) },
            ],
          };
        }),
        node: this.nodes.map((n) => ({
          name: n.name,
          opType: n.opType,
          domain: n.domain,
          input: n.inputs,
          output: n.outputs,
          attribute: Object.entries(n.attributes).map(([key, value]) => attribute(key, value)),
        })),
      },
    });
  }

  /** Serialises the model to protobuf bytes with every weight inline. */
  serialize(): Uint8Array {
    return onnx.ModelProto.encode(this.toModelProto()).finish();
  }

  private define(value: Value): Value {
    if (this.values.has(value.name)) throw new Error(`duplicate value name ${value.name}`);
    for (const dim of value.shape) {
      if (typeof dim === "number" && (!Number.isInteger(dim) || dim < 0)) {
        throw new Error(`value ${value.name}: invalid dimension ${dim} in [${value.shape.join(", ")}]`);
      }
    }
    this.values.set(value.name, value);
    return value;
  }
}

function valueInfo(value: Value): OnnxTypes.IValueInfoProto {
  return {
    name: value.name,
    type: {
      tensorType: {
        elemType: DTYPE_TO_ONNX[value.dtype],
        shape: { dim: value.shape.map((d) => (typeof d === "number" ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

function attribute(name: string, value: AttributeValue): OnnxTypes.IAttributeProto {
  const type = onnx.AttributeProto.AttributeType;
  if (typeof value === "number") {
    if (!Number.isInteger(value)) throw new Error(`attribute ${name}: ${value} is not an integer; use {float}`);
    return { name, type: type.INT, i: value };
  }
  if (typeof value === "string") return { name, type: type.STRING, s: new TextEncoder().encode(value) };
  if (Array.isArray(value)) return { name, type: type.INTS, ints: value };
  if ("float" in value) return { name, type: type.FLOAT, f: value.float };
  return { name, type: type.FLOATS, floats: value.floats };
}
