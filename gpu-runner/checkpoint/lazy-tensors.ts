/**
 * Checkpoint tensors that are read from disk when used, not when the checkpoint is opened.
 *
 * A real base (0.5B–8B) is gigabytes as float32; the engine streams each weight once into an ONNX
 * external-data file and drops it. So opening reads and validates only the safetensors headers,
 * and each tensor's `data` getter reads its bytes with positional reads and widens them to float32.
 * The result is cached through a WeakRef: repeated access between collections costs nothing, yet
 * nothing here keeps the model alive.
 */
import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import type { FloatTensor } from "../tensor.ts";
import { widenUpperHalfInPlace } from "./half-precision.ts";
import {
  collectCheckpointTensors,
  littleEndianToHostOrder,
  readSafetensorsHeader,
  SafetensorsError,
  type SafetensorsHeader,
  type TensorEntry,
} from "./safetensors.ts";

/** A float tensor whose data stays on disk until read; treat `data` as read-only. */
export interface LazyFloatTensor extends FloatTensor {
  /** How the tensor is stored; `data` is always float32. */
  readonly dtype: "F32" | "F16" | "BF16";
  /** The safetensors file holding it. */
  readonly file: string;
}

type FloatEntry = TensorEntry & { dtype: LazyFloatTensor["dtype"] };

// One read call is capped below 2 GiB by Node; a bigger tensor takes several.
const MAX_READ_BYTES = 1 << 30;

/** Every float tensor of a checkpoint directory, lazily; integer tensors are left out. */
export async function readCheckpointTensorsLazily(dir: string): Promise<Map<string, LazyFloatTensor>> {
  return collectCheckpointTensors(dir, async (path) => lazyFloatTensors(await readSafetensorsHeader(path)));
}

/** The float tensors of one validated header, each read from its file on access. */
export function lazyFloatTensors(header: SafetensorsHeader): Map<string, LazyFloatTensor> {
  const tensors = new Map<string, LazyFloatTensor>();
  for (const entry of header.entries) {
    if (entry.dtype === "F32" || entry.dtype === "F16" || entry.dtype === "BF16") {
      tensors.set(entry.name, lazyFloatTensor(header, entry as FloatEntry));
    }
  }
  return tensors;
}

function lazyFloatTensor(header: SafetensorsHeader, entry: FloatEntry): LazyFloatTensor {
  let cached: WeakRef<Float32Array> | undefined;
  const tensor = {} as LazyFloatTensor;
  // shape and data are own enumerable properties, so the object compares, prints and spreads like
  // a plain FloatTensor (spreading reads the data); dtype and file are extra, hence hidden.
  Object.defineProperties(tensor, {
    shape: { value: entry.shape, enumerable: true },
    data: {
      enumerable: true,
      get(): Float32Array {
        const hit = cached?.deref();
        if (hit !== undefined) return hit;
        const data = readFloatTensorSync(header, entry);
        cached = new WeakRef(data);
        return data;
      },
    },
    dtype: { value: entry.dtype },
    file: { value: header.path },
  });
  return tensor;
}

/**
 * Reads one float tensor of a file whose header was read earlier, widening it to float32. The
 * file is opened for this read only, so a model of thousands of tensors never holds their fds.
 */
export function readFloatTensorSync(header: SafetensorsHeader, entry: TensorEntry): Float32Array {
  const fail = (detail: string) => new SafetensorsError(header.path, detail, entry.name);
  if (entry.dtype !== "F32" && entry.dtype !== "F16" && entry.dtype !== "BF16") {
    throw fail(`dtype ${entry.dtype} is not a float type`);
  }
  let fd: number;
  try {
    fd = openSync(header.path, "r");
  } catch (error) {
    throw fail(`cannot reopen the file to read the tensor: ${(error as NodeJS.ErrnoException).code ?? error}`);
  }
  try {
    const { size } = fstatSync(fd);
    if (size !== header.fileSize) {
      throw fail(`file is now ${size} bytes but was ${header.fileSize} when its header was read; it changed on disk`);
    }
    const byteLength = entry.end - entry.begin;
    const count = entry.dtype === "F32" ? byteLength / 4 : byteLength / 2;
    const values = new Float32Array(count);
    // F32 lands in its final buffer; F16/BF16 land in the upper half and are widened in place.
    const target = new Uint8Array(values.buffer, entry.dtype === "F32" ? 0 : 2 * count, byteLength);
    const start = header.dataStart + entry.begin;
    for (let done = 0; done < byteLength; ) {
      const bytesRead = readSync(fd, target, done, Math.min(MAX_READ_BYTES, byteLength - done), start + done);
      if (bytesRead === 0) {
        throw fail(`short read: got ${done} of ${byteLength} bytes at offset ${start}; the file ended early`);
      }
      done += bytesRead;
    }
    littleEndianToHostOrder(target, entry.dtype === "F32" ? 4 : 2);
    if (entry.dtype !== "F32") widenUpperHalfInPlace(values, entry.dtype);
    return values;
  } finally {
    closeSync(fd);
  }
}
