import { describe, expect, it } from "vitest";
import { mkdir, open, readdir, truncate, unlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { readCheckpointTensorsLazily, readFloatTensorSync } from "./lazy-tensors.ts";
import {
  encodeSafetensorsHeader,
  readSafetensorsFile,
  readSafetensorsHeader,
  SafetensorsError,
  writeSafetensorsFile,
  type StoredTensor,
} from "./safetensors.ts";
import { scratchDirectories } from "../testing/scratch-directories.ts";

const scratch = scratchDirectories("lazy-tensors-test");

const bitsOf = (values: Float32Array) => Array.from(new Uint32Array(values.buffer, values.byteOffset, values.length));

/** A checkpoint directory holding one model.safetensors with the given tensors. */
async function checkpoint(tensors: Record<string, StoredTensor | { shape: number[]; data: Float32Array }>): Promise<string> {
  const dir = scratch("ckpt");
  await mkdir(dir);
  await writeSafetensorsFile(join(dir, "model.safetensors"), tensors);
  return dir;
}

/** Overwrites bytes of a file in place, keeping its size. */
async function overwrite(path: string, position: number, bytes: Uint8Array): Promise<void> {
  const handle = await open(path, "r+");
  try {
    await handle.write(bytes, 0, bytes.length, position);
  } finally {
    await handle.close();
  }
}

/** Where a tensor's bytes start in its file. */
async function offsetOf(path: string, name: string): Promise<number> {
  const header = await readSafetensorsHeader(path);
  return header.dataStart + header.entries.find((e) => e.name === name)!.begin;
}

const errorOf = (read: () => unknown): Error => {
  try {
    read();
  } catch (error) {
    return error as Error;
  }
  throw new Error("expected the read to fail");
};

describe("lazy tensors", () => {
  it("read the same bits as the eager reader for F32, F16 and BF16, NaN payloads and subnormals included", async () => {
    const values = new Float32Array(6);
    new Uint32Array(values.buffer).set([0x3f800000, 0x80000000, 0x00000001, 0x7fc12345, 0xc0490fdb, 0x387fc000]);
    for (const dtype of ["F32", "F16", "BF16"] as const) {
      const dir = await checkpoint({ w: { dtype, shape: [2, 3], data: values } });
      const eager = (await readSafetensorsFile(join(dir, "model.safetensors"))).tensors.get("w")!;
      const lazy = (await readCheckpointTensorsLazily(dir)).get("w")!;
      expect(lazy.shape).toEqual([2, 3]);
      expect(lazy.dtype).toBe(dtype);
      expect(lazy.file).toBe(join(dir, "model.safetensors"));
      expect(bitsOf(lazy.data), dtype).toEqual(bitsOf(eager.data as Float32Array));
    }
  });

  it("leave integer tensors out and refuse to read one as floats", async () => {
    const dir = await checkpoint({
      ids: { dtype: "I64", shape: [2], data: new BigInt64Array([1n, 2n]) },
      w: { shape: [1], data: new Float32Array([0.5]) },
    });
    const lazy = await readCheckpointTensorsLazily(dir);
    expect([...lazy.keys()]).toEqual(["w"]);
    const header = await readSafetensorsHeader(join(dir, "model.safetensors"));
    const ids = header.entries.find((e) => e.name === "ids")!;
    expect(() => readFloatTensorSync(header, ids)).toThrow(`${header.path}: tensor "ids": dtype I64 is not a float type`);
  });

  it("read an empty tensor and a scalar", async () => {
    const dir = await checkpoint({ empty: { shape: [0, 4], data: new Float32Array(0) }, scalar: { shape: [], data: new Float32Array([3.25]) } });
    const lazy = await readCheckpointTensorsLazily(dir);
    expect(lazy.get("empty")!.data).toEqual(new Float32Array(0));
    expect(Array.from(lazy.get("scalar")!.data)).toEqual([3.25]);
  });

  it("look like plain FloatTensors: shape and data are own enumerable properties", async () => {
    const dir = await checkpoint({ w: { shape: [3], data: new Float32Array([1, 2, 3]) } });
    const w = (await readCheckpointTensorsLazily(dir)).get("w")!;
    expect(Object.keys(w)).toEqual(["shape", "data"]);
    expect(w).toEqual({ shape: [3], data: new Float32Array([1, 2, 3]) });
    expect({ ...w }).toEqual({ shape: [3], data: new Float32Array([1, 2, 3]) });
  });

  it("read nothing up front: bytes changed in place after opening are what a first access sees", async () => {
    const dir = await checkpoint({ a: { shape: [2], data: new Float32Array([1, 2]) }, b: { shape: [2], data: new Float32Array([3, 4]) } });
    const path = join(dir, "model.safetensors");
    const lazy = await readCheckpointTensorsLazily(dir);
    await overwrite(path, await offsetOf(path, "b"), new Uint8Array(new Float32Array([-7, 9]).buffer));
    expect(Array.from(lazy.get("a")!.data)).toEqual([1, 2]);
    expect(Array.from(lazy.get("b")!.data)).toEqual([-7, 9]);
  });

  it("hand out one array while it is referenced, and read again once it has been collected", async () => {
    setFlagsFromString("--expose-gc");
    const collect = runInNewContext("gc") as () => void;
    const dir = await checkpoint({ w: { shape: [1024], data: new Float32Array(1024).fill(1) } });
    const path = join(dir, "model.safetensors");
    const w = (await readCheckpointTensorsLazily(dir)).get("w")!;
    // In a function of its own, so no strong reference to the array outlives it.
    const firstRead = async (): Promise<WeakRef<Float32Array>> => {
      const first = w.data;
      expect(w.data).toBe(first); // cached while held
      await overwrite(path, await offsetOf(path, "w"), new Uint8Array(new Float32Array(1024).fill(2).buffer));
      expect(w.data[0]).toBe(1); // still the cached array, not a re-read
      return new WeakRef(first);
    };
    const weak = await firstRead();
    await releaseAndCollect(collect, () => weak.deref() === undefined);
    expect(w.data[0]).toBe(2);
  });

  it("fail naming file and tensor when the file changed size since its header was read", async () => {
    const dir = await checkpoint({ a: { shape: [4], data: new Float32Array(4) }, b: { shape: [4], data: new Float32Array(4) } });
    const path = join(dir, "model.safetensors");
    const lazy = await readCheckpointTensorsLazily(dir);
    const header = await readSafetensorsHeader(path);
    await truncate(path, header.fileSize - 4);
    expect(errorOf(() => lazy.get("b")!.data)).toBeInstanceOf(SafetensorsError);
    expect(() => lazy.get("b")!.data).toThrow(
      `${path}: tensor "b": file is now ${header.fileSize - 4} bytes but was ${header.fileSize} when its header was read`,
    );
  });

  it("fail naming file and tensor on a short read", async () => {
    const dir = await checkpoint({ w: { shape: [4], data: new Float32Array(4) } });
    const path = join(dir, "model.safetensors");
    const header = await readSafetensorsHeader(path);
    // A header claiming more data than the file holds, with the recorded size matching the file:
    // what a reader sees when the file shrinks between its size check and its read.
    const entry = { ...header.entries[0], begin: 8, end: 24 };
    expect(() => readFloatTensorSync(header, entry)).toThrow(`${path}: tensor "w": short read: got 8 of 16 bytes`);
  });

  it("fail naming file and tensor when the file is gone", async () => {
    const dir = await checkpoint({ w: { shape: [1], data: new Float32Array(1) } });
    const lazy = await readCheckpointTensorsLazily(dir);
    await unlink(join(dir, "model.safetensors"));
    expect(() => lazy.get("w")!.data).toThrow(`${join(dir, "model.safetensors")}: tensor "w": cannot reopen the file to read the tensor: ENOENT`);
  });

  it("keep no file descriptors open between reads", async () => {
    const tensors: Record<string, { shape: number[]; data: Float32Array }> = {};
    for (let i = 0; i < 200; i++) tensors[`t${i}`] = { shape: [4], data: new Float32Array(4).fill(i) };
    const dir = await checkpoint(tensors);
    const before = (await readdir("/proc/self/fd")).length;
    const lazy = await readCheckpointTensorsLazily(dir);
    let total = 0;
    for (const tensor of lazy.values()) total += tensor.data[0];
    expect(total).toBe((199 * 200) / 2);
    expect((await readdir("/proc/self/fd")).length).toBe(before);
  });
});

describe("encodeSafetensorsHeader", () => {
  it("lays out a header the reader accepts, tensors contiguous in the given order", async () => {
    const prefix = encodeSafetensorsHeader(
      [
        { name: "b", dtype: "BF16", shape: [3] },
        { name: "a", dtype: "F32", shape: [2] },
      ],
      { format: "pt" },
    );
    expect(prefix.length % 8).toBe(0);
    const data = new Uint8Array([0x80, 0x3f, 0x00, 0xc0, 0x00, 0x00, ...new Uint8Array(new Float32Array([5, 6]).buffer)]);
    const dir = scratch("header");
    await mkdir(dir);
    await writeFile(join(dir, "model.safetensors"), new Uint8Array([...prefix, ...data]));
    const file = await readSafetensorsFile(join(dir, "model.safetensors"));
    expect(file.metadata).toEqual({ format: "pt" });
    expect(file.tensors.get("b")).toEqual({ dtype: "BF16", shape: [3], data: new Float32Array([1, -2, 0]) });
    expect(file.tensors.get("a")).toEqual({ dtype: "F32", shape: [2], data: new Float32Array([5, 6]) });
  });
});

/** Lets the current job end, then collects until `done()` or gives up after a few rounds. */
async function releaseAndCollect(collect: () => void, done: () => boolean): Promise<void> {
  for (let round = 0; round < 10 && !done(); round++) {
    await new Promise((resolve) => setTimeout(resolve, 0));
    collect();
  }
  expect(done()).toBe(true);
}
