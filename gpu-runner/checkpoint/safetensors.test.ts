import { describe, it, expect, afterEach } from "vitest";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  MAX_HEADER_BYTES,
  SafetensorsError,
  parseSafetensors,
  readCheckpointTensors,
  readSafetensorsFile,
  serializeSafetensors,
  writeSafetensorsFile,
  type StoredTensor,
} from "./safetensors.ts";

const FILE = "broken.safetensors";
const encoder = new TextEncoder();

/** A safetensors file built by hand, so the header can be anything at all. */
function handMade(header: unknown, data: Uint8Array | number = 0, headerLength?: bigint): Uint8Array {
  const headerBytes = header instanceof Uint8Array ? header : encoder.encode(typeof header === "string" ? header : JSON.stringify(header));
  const dataBytes = typeof data === "number" ? new Uint8Array(data) : data;
  const out = new Uint8Array(8 + headerBytes.length + dataBytes.length);
  new DataView(out.buffer).setBigUint64(0, headerLength ?? BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  out.set(dataBytes, 8 + headerBytes.length);
  return out;
}

/** Asserts parsing fails with a SafetensorsError naming the file, the phrase and (if given) the tensor. */
function expectRejected(bytes: Uint8Array, phrase: string, tensor?: string): void {
  let caught: unknown;
  try {
    parseSafetensors(bytes, FILE);
  } catch (error) {
    caught = error;
  }
  expect(caught).toBeInstanceOf(SafetensorsError);
  const message = (caught as Error).message;
  expect(message).toContain(FILE);
  expect(message).toContain(phrase);
  if (tensor !== undefined) expect(message).toContain(`"${tensor}"`);
}

/** Splits written bytes into the parsed header, its raw text and the data buffer. */
function sections(bytes: Uint8Array): { header: Record<string, any>; headerText: string; data: Uint8Array } {
  const length = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  const headerText = new TextDecoder().decode(bytes.subarray(8, 8 + length));
  return { header: JSON.parse(headerText), headerText, data: bytes.subarray(8 + length) };
}

const littleEndianU16s = (bytes: Uint8Array) => Array.from({ length: bytes.length / 2 }, (_, i) => bytes[2 * i] | (bytes[2 * i + 1] << 8));
const bitsOf = (values: Float32Array) => Array.from(new Uint32Array(values.buffer, values.byteOffset, values.length));
const roundTrip = (bytes: Uint8Array) => parseSafetensors(bytes, "round-trip.safetensors");

describe("serialize and parse", () => {
  it("round-trips F32 bit-exactly, NaN payloads, -0 and subnormals included", () => {
    const data = new Float32Array(8);
    new Uint32Array(data.buffer).set([0x3f800000, 0x80000000, 0x00000001, 0x7f800000, 0x7fc12345, 0xff800001, 0x7f7fffff, 0xbdcccccd]);
    const file = roundTrip(serializeSafetensors({ w: { shape: [2, 4], data } }));
    const w = file.tensors.get("w")!;
    expect(w.dtype).toBe("F32");
    expect(w.shape).toEqual([2, 4]);
    expect(bitsOf(w.data as Float32Array)).toEqual(bitsOf(data));
  });

  it("writes F16 with the known encodings and reads exact values back", () => {
    const values = new Float32Array([1, -0, 2 ** -24, Infinity, -Infinity, 65504, -2, 0.5]);
    const bytes = serializeSafetensors({ h: { shape: [8], data: values } }, undefined, { floatDtype: "F16" });
    const { header, data } = sections(bytes);
    expect(header.h).toEqual({ dtype: "F16", shape: [8], data_offsets: [0, 16] });
    expect(littleEndianU16s(data)).toEqual([0x3c00, 0x8000, 0x0001, 0x7c00, 0xfc00, 0x7bff, 0xc000, 0x3800]);
    const h = roundTrip(bytes).tensors.get("h")!;
    expect(h.dtype).toBe("F16");
    expect(bitsOf(h.data as Float32Array)).toEqual(bitsOf(values));
  });

  it("rounds F16 to nearest even and keeps NaN", () => {
    const values = new Float32Array([0.1, 1 + 2 ** -11, 70000, NaN]);
    const bytes = serializeSafetensors({ h: { shape: [4], data: values } }, undefined, { floatDtype: "F16" });
    expect(littleEndianU16s(sections(bytes).data).slice(0, 3)).toEqual([0x2e66, 0x3c00, 0x7c00]);
    const back = roundTrip(bytes).tensors.get("h")!.data as Float32Array;
    expect(back[0]).toBeCloseTo(0.1, 3);
    expect(back[1]).toBe(1);
    expect(back[2]).toBe(Infinity);
    expect(back[3]).toBeNaN();
  });

  it("writes BF16 with the known encodings and reads exact values back", () => {
    const values = new Float32Array([1, -0, 2 ** -133, Infinity, 3.140625, -2]);
    const bytes = serializeSafetensors({ b: { shape: [3, 2], data: values } }, undefined, { floatDtype: "BF16" });
    expect(littleEndianU16s(sections(bytes).data)).toEqual([0x3f80, 0x8000, 0x0001, 0x7f80, 0x4049, 0xc000]);
    const b = roundTrip(bytes).tensors.get("b")!;
    expect(b.dtype).toBe("BF16");
    expect(bitsOf(b.data as Float32Array)).toEqual(bitsOf(values));
  });

  it("keeps a stored tensor's float dtype unless floatDtype overrides it", () => {
    const stored: StoredTensor = { dtype: "BF16", shape: [1], data: new Float32Array([1.5]) };
    expect(roundTrip(serializeSafetensors({ s: stored })).tensors.get("s")!.dtype).toBe("BF16");
    expect(roundTrip(serializeSafetensors({ s: stored }, {}, { floatDtype: "F16" })).tensors.get("s")!.dtype).toBe("F16");
  });

  it("round-trips I32 and I64, extremes included", () => {
    const ints = new Int32Array([0, -1, 2147483647, -2147483648]);
    const longs = new BigInt64Array([0n, -1n, 9223372036854775807n, -9223372036854775808n, 1n << 40n]);
    const file = roundTrip(
      serializeSafetensors(
        new Map<string, StoredTensor>([
          ["ids", { dtype: "I32", shape: [4], data: ints }],
          ["positions", { dtype: "I64", shape: [5, 1], data: longs }],
        ]),
      ),
    );
    expect(file.tensors.get("ids")).toEqual({ dtype: "I32", shape: [4], data: ints });
    expect(file.tensors.get("positions")).toEqual({ dtype: "I64", shape: [5, 1], data: longs });
  });

  it("round-trips metadata, and reads no metadata as an empty map", () => {
    const metadata = { format: "pt", "0": "zero", note: 'naïve ✓ "quoted"' };
    const tensors = { x: { shape: [1], data: new Float32Array([2]) } };
    expect(roundTrip(serializeSafetensors(tensors, metadata)).metadata).toEqual(metadata);
    expect(roundTrip(serializeSafetensors(tensors)).metadata).toEqual({});
    expect(sections(serializeSafetensors(tensors)).header).not.toHaveProperty("__metadata__");
  });

  it("lays out a space-padded, 8-byte aligned header with tensors in sorted, contiguous order", () => {
    const t = (n: number) => ({ shape: [n], data: new Float32Array(n).fill(n) });
    const bytes = serializeSafetensors({ b: t(3), "10": t(1), a: t(2), "2": t(5) }, { k: "v" });
    const { header, headerText } = sections(bytes);
    expect((8 + headerText.length) % 8).toBe(0);
    expect(headerText).toMatch(/^\{.*\} *$/);
    const names = Object.keys(header).filter((k) => k !== "__metadata__");
    expect(headerText.indexOf('"10"')).toBeLessThan(headerText.indexOf('"2"')); // code-unit order in the text
    expect(names.sort()).toEqual(["10", "2", "a", "b"]);
    const order = ["10", "2", "a", "b"].map((name) => header[name].data_offsets as number[]);
    expect(order).toEqual([
      [0, 4],
      [4, 24],
      [24, 32],
      [32, 44],
    ]);
    expect(bytes.length).toBe(8 + headerText.length + 44);
  });

  it("round-trips scalars and empty tensors", () => {
    const file = roundTrip(serializeSafetensors({ scalar: { shape: [], data: new Float32Array([7]) }, empty: { shape: [0, 3], data: new Float32Array(0) } }));
    expect(file.tensors.get("scalar")).toEqual({ dtype: "F32", shape: [], data: new Float32Array([7]) });
    expect(file.tensors.get("empty")).toEqual({ dtype: "F32", shape: [0, 3], data: new Float32Array(0) });
  });

  it("reads a data buffer that starts unaligned, from an unaligned view", () => {
    const values = new Float32Array([1.25, -3, 1e-40]);
    const raw = new Uint8Array(values.buffer);
    let headerText = JSON.stringify({ w: { dtype: "F32", shape: [3], data_offsets: [1, 13] } });
    while ((8 + headerText.length + 1) % 4 === 0) headerText += " "; // make sure the tensor really is unaligned
    const file = handMade(headerText, new Uint8Array([0xaa, ...raw]));
    const shifted = new Uint8Array(file.length + 3);
    shifted.set(file, 3);
    const w = parseSafetensors(shifted.subarray(3), FILE).tensors.get("w")!;
    expect(bitsOf(w.data as Float32Array)).toEqual(bitsOf(values));
  });

  it("parses a Node Buffer that is a view into a larger shared pool", () => {
    const bytes = serializeSafetensors({ a: { shape: [2], data: new Float32Array([1, 2]) }, b: { shape: [1], data: new Float32Array([3]) } });
    const pooled = Buffer.from(bytes); // small Buffers share one pooled ArrayBuffer, and Buffer#slice does not copy
    expect(pooled.buffer.byteLength).toBeGreaterThan(pooled.length);
    const file = parseSafetensors(pooled, FILE);
    expect(file.tensors.get("a")!.data).toEqual(new Float32Array([1, 2]));
    expect(file.tensors.get("b")!.data).toEqual(new Float32Array([3]));
  });

  it("refuses to write tensors whose data does not match, naming the tensor", () => {
    expect(() => serializeSafetensors({ w: { shape: [2, 2], data: new Float32Array(3) } })).toThrow(/"w".*3 elements.*needs 4/);
    const wrongArray = { dtype: "I32", shape: [1], data: new Float32Array(1) } as unknown as StoredTensor;
    expect(() => serializeSafetensors({ ids: wrongArray })).toThrow(/"ids".*Int32Array/);
    expect(() => serializeSafetensors({ __metadata__: { shape: [0], data: new Float32Array(0) } })).toThrow(SafetensorsError);
  });
});

describe("malformed files", () => {
  const ok = { dtype: "F32", shape: [2], data_offsets: [0, 8] };

  it("rejects a file shorter than 8 bytes", () => {
    expectRejected(new Uint8Array(5), "shorter than the 8-byte header length");
    expectRejected(new Uint8Array(0), "shorter than the 8-byte header length");
  });

  it("rejects a header length of 0", () => {
    expectRejected(handMade("", 8), "header length is 0");
  });

  it("rejects a header length larger than the file", () => {
    expectRejected(handMade({ w: ok }, 8, 4096n), "header length 4096 is larger than the file");
  });

  it("rejects a header length above the 100 MB bound", () => {
    expectRejected(handMade({}, 0, BigInt(MAX_HEADER_BYTES) + 1n), "exceeds the bound");
    expectRejected(handMade({}, 0, 0xffffffffffffffffn), "exceeds the bound");
  });

  it("rejects a header that is not UTF-8", () => {
    expectRejected(handMade(new Uint8Array([0x7b, 0xff, 0xfe, 0x7d])), "header is not valid UTF-8");
  });

  it("rejects a header that is not JSON", () => {
    expectRejected(handMade('{"w": {"dtype": '), "header is not valid JSON");
  });

  it("rejects a header that is not a JSON object", () => {
    expectRejected(handMade([ok]), "header is not a JSON object");
    expectRejected(handMade("null"), "header is not a JSON object");
  });

  it("rejects an entry that is not an object with dtype, shape and data_offsets", () => {
    expectRejected(handMade({ w: 3 }), "is not an object with dtype, shape and data_offsets", "w");
    expectRejected(handMade({ w: { dtype: "F32", shape: [2] } }, 8), "is not an object with dtype", "w");
  });

  it("rejects an unsupported dtype, naming it", () => {
    expectRejected(handMade({ q: { ...ok, dtype: "F8_E4M3" } }, 8), 'unsupported dtype "F8_E4M3"', "q");
    expectRejected(handMade({ q: { ...ok, dtype: 4 } }, 8), "unsupported dtype 4", "q");
  });

  it("rejects a shape that is not an array of non-negative safe integers", () => {
    for (const shape of [[-2], [1.5], "2", [2 ** 53], null]) {
      expectRejected(handMade({ w: { ...ok, shape } }, 8), "shape must be an array of non-negative safe integers", "w");
    }
  });

  it("rejects data_offsets that are not two ordered integers", () => {
    for (const data_offsets of [[8, 0], [0], [0, 8, 16], [0, 7.5], ["0", "8"], [-8, 0]]) {
      expectRejected(handMade({ w: { ...ok, data_offsets } }, 8), "data_offsets must be two integers [begin, end] with begin <= end", "w");
    }
  });

  it("rejects a byte range that does not match shape times dtype size", () => {
    expectRejected(handMade({ w: { ...ok, data_offsets: [0, 6] } }, 8), "data_offsets span 6 bytes but F32 shape [2] needs 8", "w");
    expectRejected(handMade({ w: { dtype: "I64", shape: [2], data_offsets: [0, 8] } }, 8), "needs 16", "w");
  });

  it("rejects a byte range ending beyond the data buffer", () => {
    expectRejected(handMade({ w: ok }, 7), "data_offsets end 8 is beyond the data buffer (7 bytes)", "w");
  });

  it("rejects overlapping byte ranges, but not empty tensors sharing an offset", () => {
    const header = { a: ok, b: { ...ok, data_offsets: [4, 12] } };
    expectRejected(handMade(header, 12), 'byte ranges overlap: "a" [0, 8) and "b" [4, 12)');
    const empty = { dtype: "F32", shape: [0], data_offsets: [4, 4] };
    expect(parseSafetensors(handMade({ a: ok, e: empty }, 8), FILE).tensors.get("e")!.data.length).toBe(0);
  });

  it("rejects __metadata__ that is not a string to string map", () => {
    expectRejected(handMade({ __metadata__: { epoch: 3 } }), '__metadata__ must be a map of string to string, but "epoch" is 3');
    expectRejected(handMade({ __metadata__: ["pt"] }), "__metadata__ must be a map of string to string");
    expectRejected(handMade({ __metadata__: null }), "__metadata__ must be a map of string to string");
  });
});

describe("files and checkpoint directories", () => {
  const made: string[] = [];
  const temporaryDirectory = async () => {
    const dir = await mkdtemp(join(tmpdir(), "safetensors-test-"));
    made.push(dir);
    return dir;
  };
  afterEach(async () => {
    await Promise.all(made.splice(0).map((dir) => rm(dir, { recursive: true, force: true })));
  });
  const tensor = (...values: number[]) => ({ shape: [values.length], data: new Float32Array(values) });

  it("writes atomically, leaving only the target file, and overwrites", async () => {
    const dir = await temporaryDirectory();
    const path = join(dir, "model.safetensors");
    await writeSafetensorsFile(path, { w: tensor(1, 2) }, { format: "pt" });
    await writeSafetensorsFile(path, { w: tensor(3, 4, 5) }, { format: "pt" }, { floatDtype: "BF16" });
    expect(await readdir(dir)).toEqual(["model.safetensors"]);
    const file = await readSafetensorsFile(path);
    expect(file.metadata).toEqual({ format: "pt" });
    expect(file.tensors.get("w")).toEqual({ dtype: "BF16", shape: [3], data: new Float32Array([3, 4, 5]) });
  });

  it("leaves the old file and no temporary file behind when a write fails", async () => {
    const dir = await temporaryDirectory();
    const path = join(dir, "model.safetensors");
    await writeSafetensorsFile(path, { w: tensor(1) });
    const before = await readFile(path);
    const bad = writeSafetensorsFile(path, { w: { shape: [2], data: new Float32Array(1) } });
    await expect(bad).rejects.toThrow(path);
    await expect(writeSafetensorsFile(join(dir, "missing", "x.safetensors"), { w: tensor(1) })).rejects.toThrow();
    expect(await readdir(dir)).toEqual(["model.safetensors"]);
    expect(await readFile(path)).toEqual(before);
  });

  it("reads a file from disk with the same checks, naming its path", async () => {
    const dir = await temporaryDirectory();
    const path = join(dir, "truncated.safetensors");
    await writeFile(path, serializeSafetensors({ w: tensor(1, 2, 3) }).subarray(0, -4));
    await expect(readSafetensorsFile(path)).rejects.toThrow(`${path}: tensor "w": data_offsets end 12 is beyond the data buffer (8 bytes)`);
    await writeFile(path, new Uint8Array(3));
    await expect(readSafetensorsFile(path)).rejects.toThrow(`${path}: file is 3 bytes, shorter than the 8-byte header length`);
  });

  it("reads a single-file checkpoint", async () => {
    const dir = await temporaryDirectory();
    await writeSafetensorsFile(join(dir, "model.safetensors"), { a: tensor(1), b: tensor(2, 3) });
    const tensors = await readCheckpointTensors(dir);
    expect([...tensors.keys()]).toEqual(["a", "b"]);
    expect(tensors.get("b")!.data).toEqual(new Float32Array([2, 3]));
  });

  it("reads a sharded checkpoint through its index, preferring the index", async () => {
    const dir = await temporaryDirectory();
    await writeSafetensorsFile(join(dir, "model-00001-of-00002.safetensors"), { embed: tensor(1, 2), norm: tensor(3) });
    const ids: StoredTensor = { dtype: "I64", shape: [2], data: new BigInt64Array([5n, 6n]) };
    await writeSafetensorsFile(join(dir, "model-00002-of-00002.safetensors"), { head: tensor(4), ids });
    await writeSafetensorsFile(join(dir, "model.safetensors"), { stale: tensor(0) });
    const weight_map = {
      embed: "model-00001-of-00002.safetensors",
      norm: "model-00001-of-00002.safetensors",
      head: "model-00002-of-00002.safetensors",
      ids: "model-00002-of-00002.safetensors",
    };
    await writeFile(join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: { total_size: 32 }, weight_map }));
    const tensors = await readCheckpointTensors(dir);
    expect([...tensors.keys()].sort()).toEqual(["embed", "head", "ids", "norm"]);
    expect(tensors.get("head")!.data).toEqual(new Float32Array([4]));
    expect(tensors.get("ids")).toEqual(ids);
  });

  it("rejects a tensor the index lists but its shard lacks, naming shard and tensor", async () => {
    const dir = await temporaryDirectory();
    await writeSafetensorsFile(join(dir, "shard-1.safetensors"), { a: tensor(1) });
    const weight_map = { a: "shard-1.safetensors", b: "shard-1.safetensors" };
    await writeFile(join(dir, "model.safetensors.index.json"), JSON.stringify({ weight_map }));
    await expect(readCheckpointTensors(dir)).rejects.toThrow(
      `${join(dir, "shard-1.safetensors")}: tensor "b": model.safetensors.index.json maps this tensor here but the shard lacks it`,
    );
  });

  it("rejects a tensor stored in two shards", async () => {
    const dir = await temporaryDirectory();
    await writeSafetensorsFile(join(dir, "shard-1.safetensors"), { a: tensor(1), b: tensor(2) });
    await writeSafetensorsFile(join(dir, "shard-2.safetensors"), { b: tensor(3) });
    const weight_map = { a: "shard-1.safetensors", b: "shard-2.safetensors" };
    await writeFile(join(dir, "model.safetensors.index.json"), JSON.stringify({ weight_map }));
    await expect(readCheckpointTensors(dir)).rejects.toThrow(/tensor "b": tensor is also stored in shard shard-1\.safetensors/);
  });

  it("rejects a malformed index and a directory with no checkpoint, naming them", async () => {
    const dir = await temporaryDirectory();
    await expect(readCheckpointTensors(dir)).rejects.toThrow(`${dir}: checkpoint has neither`);
    const indexPath = join(dir, "model.safetensors.index.json");
    await writeFile(indexPath, JSON.stringify({ weight_map: { a: "../outside.safetensors" } }));
    await expect(readCheckpointTensors(dir)).rejects.toThrow(`${indexPath}: tensor "a": weight_map entry is not a shard file name`);
    await writeFile(indexPath, JSON.stringify({ weight_map: { a: "gone.safetensors" } }));
    await expect(readCheckpointTensors(dir)).rejects.toThrow(`${join(dir, "gone.safetensors")}: shard named by`);
    await writeFile(indexPath, JSON.stringify({ metadata: {} }));
    await expect(readCheckpointTensors(dir)).rejects.toThrow(`${indexPath}: index has no weight_map object`);
    await writeFile(indexPath, "{");
    await expect(readCheckpointTensors(dir)).rejects.toThrow(`${indexPath}: index is not valid JSON`);
  });
});
