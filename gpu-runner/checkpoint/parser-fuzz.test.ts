/**
 * Fuzzing the parsers that read untrusted bytes: safetensors files, adapter files and training
 * JSONL. Truncated, bit-flipped, length-forged and garbage inputs must end in the parser's own
 * readable error (or a valid result), never another exception, a hang or an allocation sized by
 * a forged length.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { parseTrainingJsonl } from "../../src/training-data.ts";
import { AdapterFormatError, parseAdapter, serializeAdapter } from "../pica/adapter-format.ts";
import { computeBasis } from "../pica/basis.ts";
import { randomAdapter } from "../testing/random-adapters.ts";
import { tinyModel } from "../testing/tiny-checkpoints.ts";
import { parseSafetensors, SafetensorsError, serializeSafetensors } from "./safetensors.ts";

/** Byte-level damage to a valid file. */
const damage = (length: number) =>
  fc.oneof(
    fc.record({ kind: fc.constant("truncate" as const), at: fc.nat({ max: length }) }),
    fc.record({ kind: fc.constant("flip" as const), at: fc.nat({ max: length - 1 }), bits: fc.integer({ min: 1, max: 255 }) }),
    fc.record({ kind: fc.constant("header-length" as const), value: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }) }),
    fc.record({ kind: fc.constant("garbage" as const), bytes: fc.uint8Array({ maxLength: 256 }) }),
  );

type Damage = { kind: string; at?: number; bits?: number; value?: bigint; bytes?: Uint8Array };

function apply(bytes: Uint8Array, change: Damage): Uint8Array {
  switch (change.kind) {
    case "truncate":
      return bytes.slice(0, change.at);
    case "flip": {
      const copy = bytes.slice();
      copy[change.at!] ^= change.bits!;
      return copy;
    }
    case "header-length": {
      const copy = bytes.slice();
      new DataView(copy.buffer).setBigUint64(0, change.value!, true);
      return copy;
    }
    default:
      return change.bytes!;
  }
}

describe("parsers under damaged input", () => {
  const valid = serializeSafetensors(
    { a: { shape: [2, 3], data: new Float32Array([1, 2, 3, 4, 5, 6]) }, b: { shape: [4], data: new Float32Array(4) } },
    { note: "x" },
  );

  it("safetensors: every damaged file parses or throws SafetensorsError", () => {
    fc.assert(
      fc.property(damage(valid.length), (change) => {
        try {
          parseSafetensors(apply(valid, change), "fuzz.safetensors");
        } catch (error) {
          expect(error).toBeInstanceOf(SafetensorsError);
          expect((error as Error).message).toContain("fuzz.safetensors");
        }
      }),
      { numRuns: 2000 },
    );
  });

  it("safetensors: forged headers (overlapping and reversed offsets, wrong dtypes, huge shapes, deep nesting) parse only when consistent", () => {
    const entry = fc.record({
      dtype: fc.oneof(fc.constantFrom("F32", "F16", "BF16", "I64", "I32"), fc.constantFrom("F64", "Q4", "f32", ""), fc.integer(), fc.constant(null)),
      shape: fc.oneof(
        fc.array(fc.nat({ max: 8 }), { maxLength: 3 }),
        fc.array(fc.integer({ min: -3, max: 2 ** 31 }), { maxLength: 4 }),
        fc.constant([2 ** 53, 2 ** 53]),
        fc.string(),
      ),
      data_offsets: fc.oneof(
        fc.tuple(fc.nat({ max: 96 }), fc.nat({ max: 96 })),
        fc.tuple(fc.integer(), fc.integer()),
        fc.array(fc.nat(), { maxLength: 3 }),
        fc.constant("0-8"),
      ),
    });
    const header = fc.oneof(
      { weight: 8, arbitrary: fc.dictionary(fc.string({ maxLength: 6 }), entry, { maxKeys: 4 }) },
      { weight: 1, arbitrary: fc.constant("[".repeat(50_000) + "]".repeat(50_000)) },
      { weight: 1, arbitrary: fc.record({ __metadata__: fc.oneof(fc.dictionary(fc.string(), fc.string()), fc.json()) }) },
    );
    fc.assert(
      fc.property(header, fc.nat({ max: 96 }), (forged, dataBytes) => {
        const json = new TextEncoder().encode(typeof forged === "string" ? forged : JSON.stringify(forged));
        const bytes = new Uint8Array(8 + json.length + dataBytes);
        new DataView(bytes.buffer).setBigUint64(0, BigInt(json.length), true);
        bytes.set(json, 8);
        let parsed: ReturnType<typeof parseSafetensors>;
        try {
          parsed = parseSafetensors(bytes, "forged.safetensors");
        } catch (error) {
          expect(error).toBeInstanceOf(SafetensorsError);
          expect((error as Error).message).toContain("forged.safetensors");
          return;
        }
        // Accepted: every tensor has exactly the elements its shape says, inside the file.
        let elements = 0;
        for (const tensor of parsed.tensors.values()) {
          const count = tensor.shape.reduce((product, dimension) => product * dimension, 1);
          expect(tensor.data.length).toBe(count);
          elements += count;
        }
        expect(elements).toBeLessThanOrEqual(dataBytes);
      }),
      { numRuns: 2000 },
    );
  });

  it("adapters: every damaged adapter file is refused with a readable error", async () => {
    const { config, weights } = tinyModel("llama-gqa");
    const basis = await computeBasis(config, weights, { rMax: 8 });
    const adapter = serializeAdapter(randomAdapter(config, basis, { rank: 4, seed: 1 }));
    fc.assert(
      fc.property(damage(adapter.length), (change) => {
        const damaged = apply(adapter, change);
        try {
          parseAdapter(damaged, "fuzz-adapter.safetensors");
        } catch (error) {
          expect(error instanceof AdapterFormatError || error instanceof SafetensorsError, String(error)).toBe(true);
        }
      }),
      { numRuns: 1000 },
    );
  });

  it("training JSONL: any text yields examples and line errors, never an exception", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            fc.json(),
            fc.string(),
            fc.constant('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}'),
            fc.constant("[".repeat(10_000)),
            fc.constant(`{"prompt": "${"x".repeat(2_000_000)}", "completion": "y"}`),
          ),
          { maxLength: 30 },
        ),
        (lines) => {
          const result = parseTrainingJsonl(lines.join("\n"));
          expect(result.examples.length + result.errorCount).toBeLessThanOrEqual(lines.length);
          for (const error of result.errors) expect(error.line).toBeGreaterThanOrEqual(1);
        },
      ),
      { numRuns: 500 },
    );
  });
});
