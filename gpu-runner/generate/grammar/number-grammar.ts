/**
 * Grammar for JSON numbers and integers within bounds, built digit by digit.
 *
 * Written here because xgrammar 0.1.27's JSON-schema converter gets bounds wrong: with only a
 * minimum or only a maximum its integer grammar admits values beyond it, its number ranges admit
 * stray characters, and it treats exclusive bounds as inclusive. The texts generated here are
 * chosen so that JSON.parse returns a value that satisfies the bounds exactly:
 * - integers have at most 15 digits, so every one is an exact double;
 * - bounded numbers are written without exponent, with at most 9 integer and 6 fraction digits.
 *   Such a decimal has at most 15 significant digits, so no two of them parse to the same double,
 *   and a text that is above a bound's shortest decimal as a real parses above the bound.
 * Unbounded numbers keep JSON's exponent, with at most 2 exponent digits so values stay finite.
 *
 * Every choice is deterministic (its options start with different characters): xgrammar 0.1.27
 * merges overlapping options of a rule into a wrong automaton, so that for instance
 * `[5-8] [0-9] [0-9] | "9" [0-9] [0-9] | "9" [0-9] [0-9] [0-9]` admits any number of digits.
 * The integer digits are therefore read as an automaton whose state compares the digits so far
 * with each bound's.
 */
import { choice, type GrammarBuilder, literal, repeat, sequence } from "./ebnf.ts";

export const INTEGER_DIGITS = 15;
export const BOUNDED_INTEGER_PART_DIGITS = 9;
export const FRACTION_DIGITS = 6;

const INTEGER_LIMIT = 10n ** BigInt(INTEGER_DIGITS) - 1n;

/** Any JSON integer of at most 15 digits. */
export const ANY_INTEGER = `"-"? ("0" | [1-9] [0-9]{0,${INTEGER_DIGITS - 1}})`;

/** Any JSON number with an integer part of at most 15 digits and an exponent of at most 2. */
export const ANY_NUMBER = `"-"? ("0" | [1-9] [0-9]{0,${INTEGER_DIGITS - 1}}) ("." [0-9]+)? ([eE] [+-]? [0-9]{1,2})?`;

/** A finite decimal: sign, integer part, fraction digits without trailing zeros. */
interface Decimal {
  negative: boolean;
  integer: bigint;
  fraction: string;
}

/** One side of a range. */
export interface NumberBound {
  value: number;
  inclusive: boolean;
}

/** Integers in [min, max] (null: unbounded on that side, within 15 digits); null when none. */
export function integerRange(builder: GrammarBuilder, min: bigint | null, max: bigint | null): string | null {
  const low = min === null || min < -INTEGER_LIMIT ? -INTEGER_LIMIT : min;
  const high = max === null || max > INTEGER_LIMIT ? INTEGER_LIMIT : max;
  if (low > high) return null;
  const parts: (string | null)[] = [];
  const end = () => '""';
  if (low < 0n) {
    const negative = digitsBetween(builder, high < 0n ? -high : 1n, -low, "integer", end);
    if (negative !== null) parts.push(sequence(['"-"', negative]));
  }
  if (high >= 0n) parts.push(digitsBetween(builder, low > 0n ? low : 0n, high, "integer", end));
  return choice(parts);
}

/** Numbers within the bounds (null: unbounded on that side, within ±999999999.999999); null when none. */
export function numberRange(builder: GrammarBuilder, min: NumberBound | null, max: NumberBound | null): string | null {
  const cap: Decimal = { negative: false, integer: 10n ** BigInt(BOUNDED_INTEGER_PART_DIGITS) - 1n, fraction: "9".repeat(FRACTION_DIGITS) };
  let lower = { decimal: { ...cap, negative: true }, inclusive: true };
  let upper = { decimal: cap, inclusive: true };
  if (min !== null && compareDecimals(decimalOf(min.value), lower.decimal) > 0) lower = { decimal: decimalOf(min.value), inclusive: min.inclusive };
  if (max !== null && compareDecimals(decimalOf(max.value), upper.decimal) < 0) upper = { decimal: decimalOf(max.value), inclusive: max.inclusive };
  const order = compareDecimals(lower.decimal, upper.decimal);
  if (order > 0 || (order === 0 && !(lower.inclusive && upper.inclusive))) return null;
  const parts: (string | null)[] = [];
  const zero: Decimal = { negative: false, integer: 0n, fraction: "" };
  if (!isNegative(upper.decimal) && !(isZero(upper.decimal) && !upper.inclusive)) {
    const low = isNegative(lower.decimal) ? { decimal: zero, inclusive: true } : lower;
    parts.push(magnitudeRange(builder, low.decimal, low.inclusive, upper.decimal, upper.inclusive));
  }
  if (isNegative(lower.decimal)) {
    // A negative value is "-" and a magnitude above zero, so "-0" is never written.
    const low = isNegative(upper.decimal) ? { decimal: negate(upper.decimal), inclusive: upper.inclusive } : { decimal: zero, inclusive: false };
    const magnitude = magnitudeRange(builder, low.decimal, low.inclusive, negate(lower.decimal), lower.inclusive);
    if (magnitude !== null) parts.push(sequence(['"-"', magnitude]));
  }
  return choice(parts);
}

/** The exact decimal of a double's shortest representation. */
export function decimalOf(value: number): Decimal {
  const match = /^(-?)(\d+)(?:\.(\d+))?(?:e([+-]\d+))?$/.exec(String(value));
  if (match === null) throw new RangeError(`not a finite number: ${value}`);
  let digits = match[2] + (match[3] ?? "");
  let point = match[2].length + Number(match[4] ?? 0);
  if (point <= 0) {
    digits = "0".repeat(1 - point) + digits;
    point = 1;
  }
  if (point > digits.length) digits += "0".repeat(point - digits.length);
  return { negative: match[1] === "-", integer: BigInt(digits.slice(0, point)), fraction: digits.slice(point).replace(/0+$/, "") };
}

function isZero(decimal: Decimal): boolean {
  return decimal.integer === 0n && decimal.fraction === "";
}

function isNegative(decimal: Decimal): boolean {
  return decimal.negative && !isZero(decimal);
}

function negate(decimal: Decimal): Decimal {
  return { ...decimal, negative: !decimal.negative };
}

function compareDecimals(a: Decimal, b: Decimal): number {
  const signA = isNegative(a) ? -1 : 1;
  const signB = isNegative(b) ? -1 : 1;
  if (signA !== signB) return signA - signB;
  return signA * compareMagnitudes(a, b);
}

function compareMagnitudes(a: Decimal, b: Decimal): number {
  if (a.integer !== b.integer) return a.integer < b.integer ? -1 : 1;
  const length = Math.max(a.fraction.length, b.fraction.length);
  const fractionA = a.fraction.padEnd(length, "0");
  const fractionB = b.fraction.padEnd(length, "0");
  return fractionA < fractionB ? -1 : fractionA > fractionB ? 1 : 0;
}

// Non-negative decimals between two magnitudes: the integer digits, then a fraction that
// depends on whether the integer part equals a bound's.
function magnitudeRange(builder: GrammarBuilder, low: Decimal, lowInclusive: boolean, high: Decimal, highInclusive: boolean): string | null {
  const lowFraction = { digits: low.fraction, inclusive: lowInclusive };
  const highFraction = { digits: high.fraction, inclusive: highInclusive };
  const key = `number ${low.integer}.${low.fraction}/${lowInclusive} ${high.integer}.${high.fraction}/${highInclusive}`;
  return digitsBetween(builder, low.integer, high.integer, key, (atLow, atHigh) => fraction(atLow ? lowFraction : null, atHigh ? highFraction : null));
}

interface FractionBound {
  digits: string;
  inclusive: boolean;
}

// The optional "." and fraction digits f (at most FRACTION_DIGITS) with 0.f within the bounds.
function fraction(low: FractionBound | null, high: FractionBound | null): string | null {
  const digitAt = (bound: FractionBound, position: number) => Number(bound.digits[position] ?? "0");
  const restIsZero = (bound: FractionBound, position: number) => /^0*$/.test(bound.digits.slice(position));
  // Whether the digits so far (equal to a bound's where tight) may end here.
  const canStop = (position: number, lowTight: boolean, highTight: boolean) =>
    (!lowTight || (low!.inclusive && restIsZero(low!, position))) && (!highTight || high!.inclusive || !restIsZero(high!, position));
  const memo = new Map<string, string | null>();
  const digits = (position: number, lowTight: boolean, highTight: boolean): string | null => {
    if (position === FRACTION_DIGITS) return null;
    const key = `${position}/${lowTight}/${highTight}`;
    if (memo.has(key)) return memo.get(key)!;
    const first = lowTight ? digitAt(low!, position) : 0;
    const last = highTight ? digitAt(high!, position) : 9;
    const branches: (string | null)[] = [];
    let groupStart = first;
    for (let digit = first; digit <= last; digit++) {
      const state = (d: number) => `${lowTight && d === first}/${highTight && d === last}`;
      if (digit === last || state(digit + 1) !== state(digit)) {
        const next = rest(position + 1, lowTight && digit === first, highTight && digit === last);
        if (next !== null) branches.push(sequence([digitClass(groupStart, digit), next]));
        groupStart = digit + 1;
      }
    }
    const result = choice(branches);
    memo.set(key, result);
    return result;
  };
  const rest = (position: number, lowTight: boolean, highTight: boolean): string | null => {
    if (!lowTight && !highTight) return repeat("[0-9]", 0, FRACTION_DIGITS - position);
    return choice([canStop(position, lowTight, highTight) ? '""' : null, digits(position, lowTight, highTight)]);
  };
  const lowTight = low !== null;
  const highTight = high !== null;
  const afterPoint = digits(0, lowTight, highTight);
  return choice([canStop(0, lowTight, highTight) ? '""' : null, afterPoint === null ? null : sequence(['"."', afterPoint])]);
}

type Relation = -1 | 0 | 1;

/**
 * Digit strings without leading zeros for the integers in [low, high] (both ≥ 0), each followed
 * by `tail(equalsLow, equalsHigh)` (null: that ending is not allowed). A state is the number of
 * digits written and how they compare with the same leading digits of each bound; from each
 * state the next digits are split into classes with different successor states, so the choice
 * is deterministic. States become rules of `builder`, shared through `key`.
 */
function digitsBetween(
  builder: GrammarBuilder,
  low: bigint,
  high: bigint,
  key: string,
  tail: (equalsLow: boolean, equalsHigh: boolean) => string | null,
): string | null {
  if (low > high) return null;
  const lo = String(low);
  const hi = String(high);
  const compare = (digit: number, bound: string, position: number): Relation => Math.sign(digit - Number(bound[position])) as Relation;
  const states = new Map<string, string | null>();
  const ending = (written: number, versusLow: Relation, versusHigh: Relation): string | null => {
    const belowLow = written < lo.length || (written === lo.length && versusLow < 0);
    const aboveHigh = written > hi.length || (written === hi.length && versusHigh > 0);
    if (belowLow || aboveHigh) return null;
    return tail(written === lo.length && versusLow === 0, written === hi.length && versusHigh === 0);
  };
  // What may follow once `written` digits are down.
  const state = (written: number, versusLow: Relation, versusHigh: Relation): string | null => {
    const id = `${written} ${versusLow} ${versusHigh}`;
    if (states.has(id)) return states.get(id)!;
    const options: (string | null)[] = [ending(written, versusLow, versusHigh), ...continuations(written, versusLow, versusHigh, 0)];
    const body = choice(options);
    const result = body === null ? null : builder.memo(`${key} ${lo} ${hi} ${id}`, "digits", () => body);
    states.set(id, result);
    return result;
  };
  const continuations = (written: number, versusLow: Relation, versusHigh: Relation, first: number): (string | null)[] => {
    if (written >= hi.length) return [];
    const next = (digit: number): [Relation, Relation] => [
      written < lo.length && versusLow === 0 ? compare(digit, lo, written) : written < lo.length ? versusLow : 1,
      versusHigh === 0 ? compare(digit, hi, written) : versusHigh,
    ];
    const options: (string | null)[] = [];
    let groupStart = first;
    for (let digit = first; digit <= 9; digit++) {
      const [relationLow, relationHigh] = next(digit);
      const following = digit < 9 ? next(digit + 1) : null;
      if (following !== null && following[0] === relationLow && following[1] === relationHigh) continue;
      const successor = state(written + 1, relationLow, relationHigh);
      if (successor !== null) options.push(sequence([digitClass(groupStart, digit), successor]));
      groupStart = digit + 1;
    }
    return options;
  };
  // A leading zero only as the number 0 itself.
  const zero = low === 0n ? sequence(['"0"', tail(true, high === 0n)]) : null;
  return choice([zero, ...continuations(0, 0, 0, 1)]);
}

function digitClass(from: number, to: number): string {
  return from === to ? literal(String(from)) : `[${from}-${to}]`;
}
