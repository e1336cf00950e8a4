/**
 * Host tensors copied to the device once, to be fed to many runs without crossing again (the PiCa
 * projections; each batch's adapter rows until a row joins or leaves). A copy is an output of an
 * identity graph left on the device; such outputs belong to the session that made them, so the
 * uploader keeps one session per number of tensors for as long as it lives.
 */
import { GraphBuilder } from "../graph/builder.ts";
import { unary } from "../graph/ops.ts";
import { OnnxSession, type DeviceTensor, type HostTensor, type OnnxSessionOptions } from "../runtime/onnx-session.ts";

export class DeviceUploader {
  private readonly sessions = new Map<string, Promise<OnnxSession>>();

  constructor(private readonly options: OnnxSessionOptions) {}

  /** Copies each tensor to the device (one run for all of them). */
  async upload(tensors: HostTensor[]): Promise<DeviceTensor[]> {
    if (tensors.length === 0) return [];
    const key = tensors.map((t) => `${t.dtype}:${t.shape.length}`).join(",");
    let session = this.sessions.get(key);
    if (session === undefined) {
      const g = new GraphBuilder("upload");
      tensors.forEach((t, i) =>
        g.output(
          unary(
            g,
            "Identity",
            `/upload.${i}`,
            g.input(
              `in.${i}`,
              t.dtype,
              t.shape.map((_, d) => `d${i}_${d}`),
            ),
          ),
          `out.${i}`,
        ),
      );
      session = OnnxSession.create(g.serialize(), { inputs: g.inputs, outputs: g.outputs }, { ...this.options, deviceOutputs: g.outputs.map((o) => o.name) });
      this.sessions.set(key, session);
    }
    const { device } = await (await session).runMixed(Object.fromEntries(tensors.map((t, i) => [`in.${i}`, t])));
    return tensors.map((_, i) => device[`out.${i}`]);
  }

  /** Releases the sessions (every tensor they made must be released first). */
  async dispose(): Promise<void> {
    for (const session of this.sessions.values()) await (await session).dispose();
    this.sessions.clear();
  }
}
