/**
 * IEEE half (F16) and bfloat16 (BF16) <-> float32 conversion, bit-exact.
 *
 * Hand-written because no npm package does both formats with round-to-nearest-even and exact
 * NaN/subnormal handling on plain typed arrays. Everything works on bit patterns (Uint16 halves,
 * Uint32 views of Float32Arrays) so NaN payloads are never canonicalised by a trip through a
 * JavaScript number.
 */

/** Rounds a float32 bit pattern to the nearest F16 bit pattern, ties to even; NaN stays NaN. */
export function f32BitsToF16Bits(bits: number): number {
  const sign = (bits >>> 16) & 0x8000;
  const exponent = (bits >>> 23) & 0xff;
  const mantissa = bits & 0x7fffff;
  if (exponent === 0xff) {
    if (mantissa === 0) return sign | 0x7c00;
    // Keep the payload's top bits, so F16 -> F32 -> F16 is the identity even for NaNs; a payload
    // living only in the dropped bits gets the quiet bit, or the NaN would turn into infinity.
    const payload = mantissa >>> 13;
    return sign | 0x7c00 | (payload === 0 ? 0x200 : payload);
  }
  const halfExponent = exponent - 127 + 15;
  if (halfExponent >= 31) return sign | 0x7c00; // at least 2^16, beyond rounding to 65504
  if (halfExponent <= 0) {
    // Subnormal half: the value is significand * 2^(halfExponent - 14) in units of 2^-24.
    const shift = 14 - halfExponent;
    if (shift > 24) return sign; // below half of the smallest subnormal: rounds to zero
    const significand = mantissa | 0x800000;
    let result = significand >>> shift;
    const remainder = significand & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (remainder > halfway || (remainder === halfway && (result & 1) === 1)) result += 1;
    return sign | result; // a carry into bit 10 is exactly the smallest normal
  }
  let result = (halfExponent << 10) | (mantissa >>> 13);
  const remainder = mantissa & 0x1fff;
  if (remainder > 0x1000 || (remainder === 0x1000 && (result & 1) === 1)) result += 1;
  return sign | result; // a carry out of the top exponent is exactly infinity
}

/** Widens an F16 bit pattern to the float32 bit pattern of the same value (always exact). */
export function f16BitsToF32Bits(half: number): number {
  const sign = (half & 0x8000) << 16;
  const exponent = (half >>> 10) & 0x1f;
  let mantissa = half & 0x3ff;
  if (exponent === 0x1f) return (sign | 0x7f800000 | (mantissa << 13)) >>> 0;
  if (exponent !== 0) return (sign | ((exponent + 112) << 23) | (mantissa << 13)) >>> 0;
  if (mantissa === 0) return sign >>> 0;
  // Subnormal half: normalise, since every F16 subnormal is a normal float32.
  let floatExponent = 113;
  while ((mantissa & 0x400) === 0) {
    mantissa <<= 1;
    floatExponent -= 1;
  }
  return (sign | (floatExponent << 23) | ((mantissa & 0x3ff) << 13)) >>> 0;
}

/** Rounds a float32 bit pattern to the nearest BF16 bit pattern, ties to even; NaN stays NaN. */
export function f32BitsToBf16Bits(bits: number): number {
  if ((bits & 0x7fffffff) > 0x7f800000) {
    // As for F16: keep the payload's top bits, quieten only a payload that would be dropped whole.
    const top = bits >>> 16;
    return (top & 0x7f) === 0 ? top | 0x40 : top;
  }
  return ((bits >>> 0) + 0x7fff + ((bits >>> 16) & 1)) >>> 16;
}

/** Widens a BF16 bit pattern to float32: BF16 is the top half of a float32. */
export function bf16BitsToF32Bits(bf16: number): number {
  return (bf16 << 16) >>> 0;
}

let f16ToF32Table: Uint32Array | undefined;

// A 256 KiB table makes decoding multi-gigabyte checkpoints a single lookup per element.
function f16Table(): Uint32Array {
  if (f16ToF32Table === undefined) {
    f16ToF32Table = new Uint32Array(0x10000);
    for (let half = 0; half < 0x10000; half++) f16ToF32Table[half] = f16BitsToF32Bits(half);
  }
  return f16ToF32Table;
}

/** Widens an array of F16 bit patterns to float32 values. */
export function f16ArrayToF32(halves: Uint16Array): Float32Array {
  const table = f16Table();
  const out = new Float32Array(halves.length);
  const outBits = new Uint32Array(out.buffer);
  for (let i = 0; i < halves.length; i++) outBits[i] = table[halves[i]];
  return out;
}

/**
 * Widens half-precision bit patterns stored in the upper half of `values`' bytes into `values`
 * itself, so a tensor read from disk needs one buffer, not a raw copy plus the result. Front to
 * back is safe: element i's four bytes end at or before pattern i + 1, the next one still unread.
 */
export function widenUpperHalfInPlace(values: Float32Array, format: "F16" | "BF16"): void {
  const count = values.length;
  const bits = new Uint32Array(values.buffer, values.byteOffset, count);
  const halves = new Uint16Array(values.buffer, values.byteOffset + 2 * count, count);
  if (format === "BF16") {
    for (let i = 0; i < count; i++) bits[i] = (halves[i] << 16) >>> 0; // >>> 0 keeps the value a uint32 (5× faster than a negative int32)
  } else {
    const table = f16Table();
    for (let i = 0; i < count; i++) bits[i] = table[halves[i]];
  }
}

/** Rounds float32 values to F16 bit patterns (round-to-nearest-even). */
export function f32ArrayToF16(values: Float32Array): Uint16Array {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < bits.length; i++) out[i] = f32BitsToF16Bits(bits[i]);
  return out;
}

/** Widens an array of BF16 bit patterns to float32 values. */
export function bf16ArrayToF32(bf16s: Uint16Array): Float32Array {
  const out = new Float32Array(bf16s.length);
  const outBits = new Uint32Array(out.buffer);
  for (let i = 0; i < bf16s.length; i++) outBits[i] = (bf16s[i] << 16) >>> 0;
  return out;
}

/** Rounds float32 values to BF16 bit patterns (round-to-nearest-even). */
export function f32ArrayToBf16(values: Float32Array): Uint16Array {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < bits.length; i++) out[i] = f32BitsToBf16Bits(bits[i]);
  return out;
}
