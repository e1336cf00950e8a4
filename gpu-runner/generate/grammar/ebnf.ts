/**
 * Writing xgrammar EBNF: named rules, literals, repetition, sets of code points, and JSON strings.
 *
 * Why every character class here has ASCII endpoints: in @mlc-ai/web-xgrammar 0.1.27 a class keeps
 * only the low byte of each endpoint (xgrammar issues #138/#491, #848), and whether it is then
 * matched against bytes (rules compiled to automata) or against characters (the Earley parser)
 * depends on the rule. Only ASCII classes mean the same on both paths; a negated ASCII class also
 * admits any non-ASCII byte sequence shaped like UTF-8, invalid ones included. So non-ASCII text
 * is written either as literal strings (exact UTF-8), or as JSON \u escapes, which are ASCII and
 * stand for exactly one character each, so lengths and patterns are counted exactly.
 */

/** Inclusive code point ranges, sorted and non-overlapping. */
export type CodePointRanges = readonly (readonly [number, number])[];

const MAX_CODE_POINT = 0x10ffff;
const SURROGATES: readonly [number, number] = [0xd800, 0xdfff];

/** Every Unicode scalar value (all code points but the surrogates). */
export const ANY_CHARACTER: CodePointRanges = [
  [0, SURROGATES[0] - 1],
  [SURROGATES[1] + 1, MAX_CODE_POINT],
];

/** Sorts and merges ranges, dropping surrogates, which no UTF-8 text can hold. */
export function normalizeRanges(ranges: Iterable<readonly [number, number]>): CodePointRanges {
  const sorted = [...ranges].filter(([low, high]) => low <= high).sort((a, b) => a[0] - b[0]);
  const merged: [number, number][] = [];
  for (const [low, high] of sorted) {
    const last = merged.at(-1);
    if (last !== undefined && low <= last[1] + 1) last[1] = Math.max(last[1], high);
    else merged.push([low, high]);
  }
  return intersectRanges(merged, ANY_CHARACTER);
}

/** Code points outside `ranges` (within the scalar values). */
export function complementRanges(ranges: CodePointRanges): CodePointRanges {
  const result: [number, number][] = [];
  let next = 0;
  for (const [low, high] of ranges) {
    if (low > next) result.push([next, low - 1]);
    next = Math.max(next, high + 1);
  }
  if (next <= MAX_CODE_POINT) result.push([next, MAX_CODE_POINT]);
  return intersectRanges(result, ANY_CHARACTER);
}

/** Code points in both. */
export function intersectRanges(a: CodePointRanges, b: CodePointRanges): CodePointRanges {
  const result: [number, number][] = [];
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    const low = Math.max(a[i][0], b[j][0]);
    const high = Math.min(a[i][1], b[j][1]);
    if (low <= high) result.push([low, high]);
    if (a[i][1] < b[j][1]) i++;
    else j++;
  }
  return result;
}

/** An EBNF string literal matching `text` exactly (as UTF-8). */
export function literal(text: string): string {
  let body = "";
  for (const character of text) {
    const code = character.codePointAt(0)!;
    if (character === '"' || character === "\\") body += `\\${character}`;
    else if (code < 0x20 || code === 0x7f) body += `\\x${hex2(code)}`;
    else body += character;
  }
  return `"${body}"`;
}

/** One class over ASCII code points, every member as \xHH so none can read as `^` or `-` syntax. */
export function asciiClass(ranges: CodePointRanges): string {
  return `[${ranges.map(([low, high]) => (low === high ? `\\x${hex2(low)}` : `\\x${hex2(low)}-\\x${hex2(high)}`)).join("")}]`;
}

function hex2(value: number): string {
  return value.toString(16).padStart(2, "0");
}

/** What may follow a string in the grammar's layout: ":" after a key, "," "}" "]" after a value. */
export const AFTER_STRING = "(= [,:\\]}])";

/**
 * A rule for any JSON string: non-ASCII as the UTF-8 bytes themselves, or any escape. Written as
 * xgrammar writes its own (a right-recursive rule with a lookahead after the closing quote), which
 * lets it settle most tokens when it compiles rather than at every step.
 */
export function anyJsonString(builder: GrammarBuilder): string {
  return builder.shared("json_string", () => {
    const escapeRule = builder.shared("json_escape", () => `["\\\\/bfnrt] | "u" [0-9A-Fa-f] [0-9A-Fa-f] [0-9A-Fa-f] [0-9A-Fa-f]`);
    // A negated class of ASCII endpoints also admits malformed UTF-8; read back, that becomes U+FFFD
    // characters, which an unconstrained string accepts just the same.
    const rest = builder.shared("json_string_rest", (self) => `("\\"" | [^\\x22\\x5c\\x00-\\x1f] ${self} | "\\\\" ${escapeRule} ${self}) ${AFTER_STRING}`);
    return `"\\"" ${rest}`;
  });
}

// The rule for the rest of a free string, up to and including its closing quote.
function anyJsonStringRest(builder: GrammarBuilder): string {
  anyJsonString(builder);
  return builder.shared("json_string_rest", () => "");
}

/**
 * Most characters a length-bounded string may count: every counted position is a rule of its
 * own, and xgrammar computes each rule's token masks over the whole vocabulary when it compiles
 * (about 80 ms per rule for a 128k vocabulary).
 */
export const MAX_COUNTED_CHARACTERS = 32;

/**
 * A rule for a JSON string of `min` to `max` characters (max null: unbounded). The counted
 * characters are printable ASCII or escapes (\u escapes stand for every other character, one
 * each), one rule per position with the closing quote and its lookahead inside, so that xgrammar
 * settles most tokens when it compiles.
 */
export function countedJsonString(builder: GrammarBuilder, min: number, max: number | null): string {
  return builder.memo(`${min}-${max}`, "counted_string", (self) => {
    // Left-factored so that no two options start alike (see string-automaton.ts for why).
    const escapeRule = builder.shared("counted_escape", () => {
      const hex = "[0-9A-Fa-f]";
      const surrogatePair = `[89ABab] ${hex} ${hex} "\\\\u" [Dd] [C-Fc-f] ${hex} ${hex}`;
      return `["\\\\/bfnrt] | "u" ([0-9A-Ca-c] ${hex} ${hex} ${hex} | [Dd] ([0-7] ${hex} ${hex} | ${surrogatePair}) | [E-Fe-f] ${hex} ${hex} ${hex})`;
    });
    // states[c]: the rest of the string once c characters are written.
    const last = max ?? min;
    const states = Array.from({ length: last + 1 }, (_, count) =>
      max === null && count === last ? anyJsonStringRest(builder) : builder.reserve(`${self}_${count}`),
    );
    for (let count = 0; count <= last; count++) {
      if (max === null && count === last) continue;
      const alternatives: string[] = [];
      if (count >= min) alternatives.push('"\\""');
      if (count < last) alternatives.push(`[\\x20-\\x21\\x23-\\x5b\\x5d-\\x7e] ${states[count + 1]}`, `"\\\\" ${escapeRule} ${states[count + 1]}`);
      builder.define(states[count], `(${alternatives.join(" | ")}) ${AFTER_STRING}`);
    }
    return `"\\"" ${states[0]}`;
  });
}

/** `expression` repeated min..max times (max null: unbounded), in xgrammar's EBNF. */
export function repeat(expression: string, min: number, max: number | null): string {
  const item = /^[A-Za-z_][A-Za-z0-9_]*$|^\[[^\]]*\]$|^"(?:[^"\\]|\\.)*"$/.test(expression) ? expression : `(${expression})`;
  if (max === 0) return '""';
  if (min === 0 && max === null) return `${item}*`;
  if (min === 1 && max === null) return `${item}+`;
  if (min === 0 && max === 1) return `${item}?`;
  if (min === 1 && max === 1) return item;
  if (max === null) return `${item}{${min},}`;
  return min === max ? `${item}{${min}}` : `${item}{${min},${max}}`;
}

/** The parts one after another; null (nothing matches) if any part is null. */
export function sequence(parts: (string | null)[]): string | null {
  if (parts.some((part) => part === null)) return null;
  const kept = (parts as string[]).filter((part) => part !== '""');
  return kept.length === 0 ? '""' : kept.length === 1 ? kept[0] : `(${kept.join(" ")})`;
}

/** Any one of the parts that match something; null when none does. */
export function choice(parts: (string | null)[]): string | null {
  const kept = [...new Set(parts.filter((part): part is string => part !== null))];
  return kept.length === 0 ? null : kept.length === 1 ? kept[0] : `(${kept.join(" | ")})`;
}

/** Collects named rules; names are made unique, so callers pick readable hints. */
export class GrammarBuilder {
  readonly #rules = new Map<string, string>();
  readonly #shared = new Map<string, string>();

  /** Reserves a fresh rule name from a hint, to be defined later (for recursive rules). */
  reserve(hint: string): string {
    const base =
      hint
        .split("\u0000")[0]
        .replace(/[^A-Za-z0-9_]/g, "_")
        .replace(/^([^A-Za-z_])/, "_$1") || "rule";
    let name = base;
    for (let suffix = 1; name === "root" || this.#rules.has(name); suffix++) name = `${base}_${suffix}`;
    this.#rules.set(name, "");
    return name;
  }

  /** Sets the body of a reserved rule. */
  define(name: string, body: string): void {
    this.#rules.set(name, body);
  }

  /** A new rule with this body; returns its name. */
  rule(hint: string, body: string): string {
    const name = this.reserve(hint);
    this.define(name, body);
    return name;
  }

  /** A rule defined once per grammar and shared by every use (the JSON basics); `body` gets the rule's own name. */
  shared(name: string, body: (self: string) => string): string {
    const existing = this.#shared.get(name);
    if (existing !== undefined) return existing;
    const reserved = this.reserve(name);
    this.#shared.set(name, reserved);
    this.define(reserved, body(reserved));
    return reserved;
  }

  /** A rule defined once per distinct `key` (hint only names it); returns its name. */
  memo(key: string, hint: string, body: (self: string) => string): string {
    return this.shared(`${hint}\u0000${key}`, body);
  }

  /** Number of rules so far. */
  get size(): number {
    return this.#rules.size;
  }

  /** The grammar text with `root` as its root rule. */
  build(rootExpression: string): string {
    const lines = [`root ::= ${rootExpression}`];
    for (const [name, body] of this.#rules) lines.push(`${name} ::= ${body}`);
    return `${lines.join("\n")}\n`;
  }
}
