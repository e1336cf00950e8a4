import { describe, it, expect } from "vitest";
import {
  bf16ArrayToF32,
  bf16BitsToF32Bits,
  f16ArrayToF32,
  f16BitsToF32Bits,
  f32ArrayToBf16,
  f32ArrayToF16,
  f32BitsToBf16Bits,
  f32BitsToF16Bits,
  widenUpperHalfInPlace,
} from "./half-precision.ts";

const scratch = new Float32Array(1);
const scratchBits = new Uint32Array(scratch.buffer);

function bitsOf(value: number): number {
  scratch[0] = value;
  return scratchBits[0];
}

function floatOf(bits: number): number {
  scratchBits[0] = bits;
  return scratch[0];
}

const toF16 = (value: number) => f32BitsToF16Bits(bitsOf(value));
const toBf16 = (value: number) => f32BitsToBf16Bits(bitsOf(value));

/** The F16 value by its textbook definition, independent of the bit-twiddling code. */
function f16Reference(half: number): number {
  const sign = half & 0x8000 ? -1 : 1;
  const exponent = (half >>> 10) & 0x1f;
  const mantissa = half & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 31) return mantissa === 0 ? sign * Infinity : NaN;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

describe("F16", () => {
  it("encodes known values", () => {
    expect(toF16(1)).toBe(0x3c00);
    expect(toF16(-2)).toBe(0xc000);
    expect(toF16(0.5)).toBe(0x3800);
    expect(toF16(65504)).toBe(0x7bff);
    expect(toF16(2 ** -14)).toBe(0x0400); // smallest normal
    expect(toF16(2 ** -24)).toBe(0x0001); // smallest subnormal
    expect(toF16(1023 * 2 ** -24)).toBe(0x03ff); // largest subnormal
    expect(toF16(Infinity)).toBe(0x7c00);
    expect(toF16(-Infinity)).toBe(0xfc00);
    expect(toF16(0)).toBe(0x0000);
    expect(toF16(-0)).toBe(0x8000);
  });

  it("rounds to nearest, ties to even", () => {
    expect(toF16(1 + 2 ** -11)).toBe(0x3c00); // tie, 0x3c00 is even
    expect(toF16(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie, 0x3c02 is even
    expect(toF16(1 + 2 ** -11 + 2 ** -20)).toBe(0x3c01); // just above the tie
    expect(toF16(65519)).toBe(0x7bff);
    expect(toF16(65520)).toBe(0x7c00); // halfway to 2^16 rounds to infinity
    expect(toF16(1e10)).toBe(0x7c00);
    expect(toF16(2 ** -25)).toBe(0x0000); // tie between 0 and the smallest subnormal
    expect(toF16(-(2 ** -25))).toBe(0x8000);
    expect(toF16(1.5 * 2 ** -25)).toBe(0x0001);
    expect(toF16(3 * 2 ** -25)).toBe(0x0002); // tie between subnormals 1 and 2
    expect(toF16(2 ** -26)).toBe(0x0000);
    for (const tiny of [2 ** -33, 2 ** -34, 1e-30, 2 ** -149]) expect(toF16(-tiny)).toBe(0x8000); // far below: signed zero
    expect(toF16(2 ** -14 - 2 ** -26)).toBe(0x0400); // subnormal rounding carries into the smallest normal
  });

  it("keeps NaN a NaN, including payloads only in the dropped bits", () => {
    for (const bits of [0x7fc00000, 0xffc00000, 0x7f800001, 0x7fa00000]) {
      const half = f32BitsToF16Bits(bits);
      expect((half & 0x7c00) === 0x7c00 && (half & 0x3ff) !== 0).toBe(true);
      expect(half & 0x8000).toBe((bits >>> 16) & 0x8000);
    }
    expect(f32BitsToF16Bits(0x7f800001)).toBe(0x7e00); // payload only in dropped bits: quietened
    expect(f32BitsToF16Bits(0x7fa00000)).toBe(0x7d00); // signalling payload that fits is kept
    expect(f16BitsToF32Bits(0x7e00)).toBe(0x7fc00000);
    expect(f16BitsToF32Bits(0xfc01)).toBe(0xff802000); // signalling payload survives widening
  });

  it("decodes every F16 pattern to its exact value and back", () => {
    const wrong: string[] = [];
    for (let half = 0; half < 0x10000; half++) {
      const value = floatOf(f16BitsToF32Bits(half));
      const expected = f16Reference(half);
      const decodedRight = Number.isNaN(expected) ? Number.isNaN(value) : Object.is(value, expected);
      const reencoded = f32BitsToF16Bits(f16BitsToF32Bits(half));
      if (!decodedRight || reencoded !== half) wrong.push(`0x${half.toString(16)} -> ${value} -> 0x${reencoded.toString(16)}`);
    }
    expect(wrong).toEqual([]);
  });

  it("converts arrays, sharing the scalar rules", () => {
    const values = new Float32Array([1, -0, 2 ** -24, Infinity, 65504, 0.1]);
    const halves = f32ArrayToF16(values);
    expect(Array.from(halves)).toEqual([0x3c00, 0x8000, 0x0001, 0x7c00, 0x7bff, 0x2e66]);
    const back = f16ArrayToF32(halves);
    expect(Array.from(back.subarray(0, 5))).toEqual([1, -0, 2 ** -24, Infinity, 65504]);
    expect(Object.is(back[1], -0)).toBe(true);
    expect(back[5]).toBe(floatOf(f16BitsToF32Bits(0x2e66)));
  });
});

describe("BF16", () => {
  it("encodes known values", () => {
    expect(toBf16(1)).toBe(0x3f80);
    expect(toBf16(-2)).toBe(0xc000);
    expect(toBf16(Infinity)).toBe(0x7f80);
    expect(toBf16(-0)).toBe(0x8000);
    expect(toBf16(2 ** -133)).toBe(0x0001); // smallest BF16 subnormal
    expect(bf16BitsToF32Bits(0x3f80)).toBe(0x3f800000);
  });

  it("rounds to nearest, ties to even", () => {
    expect(toBf16(1 + 2 ** -8)).toBe(0x3f80); // tie, 0x3f80 is even
    expect(toBf16(1 + 3 * 2 ** -8)).toBe(0x3f82); // tie, 0x3f82 is even
    expect(toBf16(1 + 2 ** -8 + 2 ** -20)).toBe(0x3f81);
    expect(f32BitsToBf16Bits(0x7f7fffff)).toBe(0x7f80); // max float32 rounds to infinity
  });

  it("keeps NaN a NaN", () => {
    for (const bits of [0x7fc00000, 0xff800001, 0x7f800100, 0x7fffffff]) {
      const bf16 = f32BitsToBf16Bits(bits);
      expect((bf16 & 0x7f80) === 0x7f80 && (bf16 & 0x7f) !== 0).toBe(true);
    }
    expect(f32BitsToBf16Bits(0xff800001)).toBe(0xffc0); // payload only in dropped bits: quietened
    expect(f32BitsToBf16Bits(0x7fa10000)).toBe(0x7fa1); // payload that fits is kept
  });

  it("round-trips every BF16 pattern, NaNs included", () => {
    const wrong: number[] = [];
    for (let bf16 = 0; bf16 < 0x10000; bf16++) {
      if (f32BitsToBf16Bits(bf16BitsToF32Bits(bf16)) !== bf16) wrong.push(bf16);
    }
    expect(wrong).toEqual([]);
  });

  it("converts arrays", () => {
    const values = new Float32Array([1, -0, 3.140625, -Infinity]);
    const bf16s = f32ArrayToBf16(values);
    expect(Array.from(bf16s)).toEqual([0x3f80, 0x8000, 0x4049, 0xff80]);
    expect(Array.from(bf16ArrayToF32(bf16s))).toEqual([1, -0, 3.140625, -Infinity]);
  });
});

describe("widenUpperHalfInPlace", () => {
  it.each([
    ["F16", f16ArrayToF32],
    ["BF16", bf16ArrayToF32],
  ] as const)("widens every %s pattern in place exactly as the copying conversion does", (format, widen) => {
    const patterns = new Uint16Array(0x10000).map((_, i) => i);
    const values = new Float32Array(patterns.length);
    new Uint16Array(values.buffer, 2 * patterns.length, patterns.length).set(patterns);
    widenUpperHalfInPlace(values, format);
    expect(new Uint32Array(values.buffer)).toEqual(new Uint32Array(widen(patterns).buffer));
  });

  it("works on a view that does not start at the beginning of its buffer", () => {
    const buffer = new ArrayBuffer(4 * 5);
    const values = new Float32Array(buffer, 4, 3);
    new Uint16Array(buffer, 4 + 6, 3).set([0x3f80, 0xc000, 0x7f80]);
    new Float32Array(buffer)[0] = 42;
    widenUpperHalfInPlace(values, "BF16");
    expect(Array.from(new Float32Array(buffer))).toEqual([42, 1, -2, Infinity, 0]);
  });
});
