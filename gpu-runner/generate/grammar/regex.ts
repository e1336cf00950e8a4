/**
 * JSON Schema `pattern`s (ECMAScript regular expressions, read as with the `u` flag), parsed into
 * sets of characters, sequences, choices and repetitions; string-automaton.ts turns them into
 * grammar.
 *
 * Parsed here rather than handed to xgrammar's regex converter because that converter emits the
 * raw characters a pattern matches: `.` or `[^a]` then admit `"`, `\` and control characters
 * unescaped, which ends or breaks the JSON string. The grammar matches the whole string (a
 * pattern in JSON Schema may match anywhere), so what it admits is a subset of what the pattern
 * accepts; anchors are therefore only allowed where they change nothing: `^` at the start and `$`
 * at the end of a top-level alternative. Anything else the grammar cannot express exactly
 * (lookaround, backreferences, word boundaries, property escapes) is refused by name.
 */
import { type CodePointRanges, complementRanges, MAX_COUNTED_CHARACTERS, normalizeRanges } from "./ebnf.ts";

/** A parsed pattern: sets of characters, sequences, choices and repetitions. */
export type RegexNode =
  | { kind: "characters"; ranges: CodePointRanges }
  | { kind: "sequence"; items: RegexNode[] }
  | { kind: "choice"; options: RegexNode[] }
  | { kind: "repeat"; item: RegexNode; min: number; max: number | null };

/** A pattern feature outside what can be turned into grammar, or a malformed pattern. */
export class UnsupportedPatternError extends Error {}

const DIGIT: CodePointRanges = [[0x30, 0x39]];
const WORD: CodePointRanges = normalizeRanges([
  [0x30, 0x39],
  [0x41, 0x5a],
  [0x5f, 0x5f],
  [0x61, 0x7a],
]);
// ECMAScript's WhiteSpace and LineTerminator.
const SPACE: CodePointRanges = normalizeRanges([
  [0x09, 0x0d],
  [0x20, 0x20],
  [0xa0, 0xa0],
  [0x1680, 0x1680],
  [0x2000, 0x200a],
  [0x2028, 0x2029],
  [0x202f, 0x202f],
  [0x205f, 0x205f],
  [0x3000, 0x3000],
  [0xfeff, 0xfeff],
]);
const DOT: CodePointRanges = complementRanges(
  normalizeRanges([
    [0x0a, 0x0a],
    [0x0d, 0x0d],
    [0x2028, 0x2029],
  ]),
);
const CLASS_ESCAPES: Record<string, CodePointRanges> = {
  d: DIGIT,
  D: complementRanges(DIGIT),
  w: WORD,
  W: complementRanges(WORD),
  s: SPACE,
  S: complementRanges(SPACE),
};
const CONTROL_ESCAPES: Record<string, number> = { t: 0x09, n: 0x0a, v: 0x0b, f: 0x0c, r: 0x0d };
const SYNTAX_CHARACTERS = new Set("^$\\.*+?()[]{}|/");

/** Parses a pattern; throws UnsupportedPatternError naming the feature and its position. */
export function parseRegex(pattern: string): RegexNode {
  return new RegexParser(pattern).parse();
}

class RegexParser {
  readonly #characters: string[];
  #position = 0;

  constructor(pattern: string) {
    this.#characters = [...pattern];
  }

  parse(): RegexNode {
    const node = this.#disjunction(true);
    if (this.#position < this.#characters.length) this.#fail(`unmatched "${this.#peek()}"`);
    return node;
  }

  #disjunction(topLevel: boolean): RegexNode {
    const options = [this.#alternative(topLevel)];
    while (this.#peek() === "|") {
      this.#position++;
      options.push(this.#alternative(topLevel));
    }
    return options.length === 1 ? options[0] : { kind: "choice", options };
  }

  #alternative(topLevel: boolean): RegexNode {
    const items: RegexNode[] = [];
    if (topLevel && this.#peek() === "^") this.#position++;
    for (;;) {
      const next = this.#peek();
      if (next === undefined || next === "|" || next === ")") break;
      if (next === "^") this.#fail('"^" is only supported at the start of the pattern');
      if (next === "$") {
        this.#position++;
        const after = this.#peek();
        if (topLevel && (after === undefined || after === "|")) break;
        this.#fail('"$" is only supported at the end of the pattern');
      }
      items.push(this.#quantified(this.#atom()));
    }
    return items.length === 1 ? items[0] : { kind: "sequence", items };
  }

  #quantified(item: RegexNode): RegexNode {
    const next = this.#peek();
    let min: number;
    let max: number | null;
    if (next === "*" || next === "+" || next === "?") {
      this.#position++;
      [min, max] = next === "*" ? [0, null] : next === "+" ? [1, null] : [0, 1];
    } else if (next === "{") {
      [min, max] = this.#braces();
    } else {
      return item;
    }
    if (this.#peek() === "?") this.#position++; // lazy or greedy matches the same strings
    const after = this.#peek();
    if (after === "*" || after === "+" || after === "?" || after === "{") this.#fail("a quantifier cannot follow a quantifier");
    return { kind: "repeat", item, min, max };
  }

  #braces(): [number, number | null] {
    const match = /^\{(\d+)(,(\d*))?\}/.exec(this.#characters.slice(this.#position, this.#position + 24).join(""));
    if (match === null) this.#fail('"{" must start a quantifier {n}, {n,} or {n,m}');
    this.#position += [...match[0]].length;
    const min = Number(match[1]);
    const max = match[2] === undefined ? min : match[3] === "" ? null : Number(match[3]);
    if (max !== null && max < min) this.#fail(`quantifier {${min},${max}} has its numbers out of order`);
    if (min > MAX_COUNTED_CHARACTERS || (max ?? 0) > MAX_COUNTED_CHARACTERS) this.#fail(`repetition counts above ${MAX_COUNTED_CHARACTERS} are not supported`);
    return [min, max];
  }

  #atom(): RegexNode {
    const character = this.#next();
    if (character === undefined) return this.#fail("the pattern ends early");
    switch (character) {
      case "(":
        return this.#group();
      case "[":
        return { kind: "characters", ranges: this.#class() };
      case ".":
        return { kind: "characters", ranges: DOT };
      case "\\":
        return this.#atomEscape();
      case "*":
      case "+":
      case "?":
        return this.#fail(`"${character}" has nothing to repeat`);
      case "{":
      case "}":
      case "]":
        return this.#fail(`a lone "${character}" must be escaped`);
      default:
        return single(character.codePointAt(0)!);
    }
  }

  #group(): RegexNode {
    if (this.#peek() === "?") {
      this.#position++;
      const kind = this.#next();
      if (kind === "=" || kind === "!") this.#fail("lookahead is not supported");
      if (kind === "<") {
        if (this.#peek() === "=" || this.#peek() === "!") this.#fail("lookbehind is not supported");
        while (this.#peek() !== undefined && /[A-Za-z0-9_$]/.test(this.#peek()!)) this.#position++;
        if (this.#next() !== ">") this.#fail("malformed group name");
      } else if (kind !== ":") {
        this.#fail("group modifiers are not supported");
      }
    }
    const node = this.#disjunction(false);
    if (this.#next() !== ")") this.#fail('missing ")"');
    return node;
  }

  #atomEscape(): RegexNode {
    const character = this.#next();
    if (character === undefined) this.#fail("the pattern ends inside an escape");
    if (character in CLASS_ESCAPES) return { kind: "characters", ranges: CLASS_ESCAPES[character] };
    if (character === "b" || character === "B") this.#fail("word boundaries (\\b, \\B) are not supported");
    if (/[1-9]/.test(character) || character === "k") this.#fail("backreferences are not supported");
    return single(this.#characterEscape(character));
  }

  // The escapes that stand for one character, shared by atoms and classes.
  #characterEscape(character: string): number {
    if (character in CONTROL_ESCAPES) return CONTROL_ESCAPES[character];
    if (character === "0") {
      if (/[0-9]/.test(this.#peek() ?? "")) this.#fail("octal escapes are not supported");
      return 0;
    }
    if (character === "c") {
      const letter = this.#next();
      if (letter === undefined || !/[A-Za-z]/.test(letter)) this.#fail("\\c must be followed by a letter");
      return letter.codePointAt(0)! % 32;
    }
    if (character === "x") return this.#hex(2);
    if (character === "u") {
      if (this.#peek() === "{") {
        this.#position++;
        const start = this.#position;
        while (/[0-9A-Fa-f]/.test(this.#peek() ?? "")) this.#position++;
        const digits = this.#characters.slice(start, this.#position).join("");
        if (this.#next() !== "}" || digits.length === 0 || Number.parseInt(digits, 16) > 0x10ffff) this.#fail("malformed \\u{…} escape");
        return Number.parseInt(digits, 16);
      }
      const unit = this.#hex(4);
      // A surrogate pair written as two \u escapes is one character, as with the u flag.
      if (unit >= 0xd800 && unit <= 0xdbff && this.#peek() === "\\" && this.#characters[this.#position + 1] === "u") {
        const saved = this.#position;
        this.#position += 2;
        const low = /^[0-9A-Fa-f]{4}$/.test(this.#characters.slice(this.#position, this.#position + 4).join("")) ? this.#hex(4) : -1;
        if (low >= 0xdc00 && low <= 0xdfff) return 0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00);
        this.#position = saved;
      }
      return unit;
    }
    if (character === "p" || character === "P") this.#fail("Unicode property escapes (\\p{…}) are not supported");
    if (SYNTAX_CHARACTERS.has(character)) return character.codePointAt(0)!;
    return this.#fail(`"\\${character}" is not a valid escape`);
  }

  #hex(length: number): number {
    const digits = this.#characters.slice(this.#position, this.#position + length).join("");
    if (!new RegExp(`^[0-9A-Fa-f]{${length}}$`).test(digits)) this.#fail(`expected ${length} hexadecimal digits`);
    this.#position += length;
    return Number.parseInt(digits, 16);
  }

  #class(): CodePointRanges {
    const negated = this.#peek() === "^";
    if (negated) this.#position++;
    const ranges: (readonly [number, number])[] = [];
    for (;;) {
      const start = this.#classAtom();
      if (start === "end") break;
      if (this.#peek() === "-" && this.#characters[this.#position + 1] !== "]" && this.#characters[this.#position + 1] !== undefined) {
        this.#position++;
        const end = this.#classAtom();
        if (typeof start !== "number" || typeof end !== "number") this.#fail("a class range needs single characters at both ends");
        if (end < start) this.#fail("a class range has its ends out of order");
        ranges.push([start, end]);
      } else if (typeof start === "number") {
        ranges.push([start, start]);
      } else {
        ranges.push(...start);
      }
    }
    const set = normalizeRanges(ranges);
    return negated ? complementRanges(set) : set;
  }

  // A character, a set (\d and friends), or "end" at the closing bracket.
  #classAtom(): number | CodePointRanges | "end" {
    const character = this.#next();
    if (character === undefined) this.#fail('missing "]"');
    if (character === "]") return "end";
    if (character !== "\\") return character.codePointAt(0)!;
    const escaped = this.#next();
    if (escaped === undefined) this.#fail("the pattern ends inside an escape");
    if (escaped in CLASS_ESCAPES) return CLASS_ESCAPES[escaped];
    if (escaped === "b") return 0x08;
    if (escaped === "-") return 0x2d;
    return this.#characterEscape(escaped);
  }

  #peek(): string | undefined {
    return this.#characters[this.#position];
  }

  #next(): string | undefined {
    return this.#characters[this.#position++];
  }

  #fail(reason: string): never {
    throw new UnsupportedPatternError(`${reason} (at character ${Math.min(this.#position, this.#characters.length)})`);
  }
}

function single(codePoint: number): RegexNode {
  return { kind: "characters", ranges: normalizeRanges([[codePoint, codePoint]]) };
}
