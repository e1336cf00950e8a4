/**
 * Whether this host has a WebGPU adapter onnxruntime can use (a GPU through Vulkan, or Mesa's
 * software Vulkan driver lavapipe), so the device-cache tests run where they can and say why not
 * elsewhere.
 */
import { GraphBuilder } from "../graph/builder.ts";
import { unary } from "../graph/ops.ts";
import { OnnxSession } from "../runtime/onnx-session.ts";

let probe: Promise<string | null> | null = null;

/** null when WebGPU works here; otherwise why it does not. */
export function webgpuUnavailable(): Promise<string | null> {
  probe ??= (async () => {
    const g = new GraphBuilder("probe");
    g.output(unary(g, "Neg", "/neg", g.input("x", "float32", [1])), "y");
    try {
      const session = await OnnxSession.create(g.serialize(), { inputs: g.inputs, outputs: g.outputs }, { executionProvider: "webgpu" });
      const { y } = await session.run({ x: { dtype: "float32", shape: [1], data: Float32Array.of(2) } });
      await session.dispose();
      return y.data[0] === -2 ? null : "the WebGPU provider computed a wrong value";
    } catch (error) {
      return (error as Error).message.split("\n")[0];
    }
  })();
  return probe;
}
