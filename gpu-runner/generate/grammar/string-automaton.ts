/**
 * Strings constrained by a pattern, as a deterministic automaton over characters, written as
 * grammar for their JSON text.
 *
 * Why an automaton rather than the pattern's own shape: xgrammar 0.1.27 merges the options of a
 * rule into a wrong automaton when they start with overlapping but different character classes
 * (see number-grammar.ts), so `(\d{3}|\d{4})` or `.*x|y.*` written as they stand can admit other
 * text. A deterministic automaton, written with options that start with different bytes, never
 * presents that case. Each state is one rule that ends with the closing quote and its lookahead,
 * which also lets xgrammar settle most tokens when it compiles.
 *
 * Characters are written as printable ASCII or JSON escapes; every other character is a \u
 * escape (a surrogate pair beyond U+FFFF), so each written character is exactly one character
 * of the value and patterns are matched exactly (see ebnf.ts for why not raw UTF-8).
 */
import { AFTER_STRING, asciiClass, type CodePointRanges, type GrammarBuilder, intersectRanges, literal, normalizeRanges } from "./ebnf.ts";
import { type RegexNode, UnsupportedPatternError } from "./regex.ts";

/** A deterministic automaton over characters; state 0 starts. */
export interface CharacterAutomaton {
  states: { accepting: boolean; edges: { ranges: CodePointRanges; target: number }[] }[];
}

/** Most states an automaton may have before a pattern is refused. */
export const MAX_AUTOMATON_STATES = 400;

// Thompson construction: ε-edges and character edges between numbered nodes.
class Nfa {
  readonly epsilon: number[][] = [];
  readonly edges: { ranges: CodePointRanges; target: number }[][] = [];

  node(): number {
    this.epsilon.push([]);
    this.edges.push([]);
    return this.epsilon.length - 1;
  }

  // A fragment for `node` from a fresh start node to a fresh end node.
  build(regex: RegexNode): [number, number] {
    const start = this.node();
    let end = start;
    switch (regex.kind) {
      case "characters": {
        end = this.node();
        this.edges[start].push({ ranges: regex.ranges, target: end });
        break;
      }
      case "sequence":
        for (const item of regex.items) {
          const [itemStart, itemEnd] = this.build(item);
          this.epsilon[end].push(itemStart);
          end = itemEnd;
        }
        break;
      case "choice": {
        end = this.node();
        for (const option of regex.options) {
          const [optionStart, optionEnd] = this.build(option);
          this.epsilon[start].push(optionStart);
          this.epsilon[optionEnd].push(end);
        }
        break;
      }
      case "repeat": {
        for (let count = 0; count < regex.min; count++) {
          const [itemStart, itemEnd] = this.build(regex.item);
          this.epsilon[end].push(itemStart);
          end = itemEnd;
        }
        if (regex.max === null) {
          const [itemStart, itemEnd] = this.build(regex.item);
          const after = this.node();
          this.epsilon[end].push(itemStart, after);
          this.epsilon[itemEnd].push(itemStart, after);
          end = after;
        } else {
          const after = this.node();
          for (let count = regex.min; count < regex.max; count++) {
            const [itemStart, itemEnd] = this.build(regex.item);
            this.epsilon[end].push(itemStart, after);
            end = itemEnd;
          }
          this.epsilon[end].push(after);
          end = after;
        }
        break;
      }
    }
    return [start, end];
  }
}

/** The deterministic automaton of strings the pattern matches whole; throws UnsupportedPatternError past the size limit. */
export function patternAutomaton(pattern: RegexNode): CharacterAutomaton {
  const nfa = new Nfa();
  const [start, end] = nfa.build(pattern);
  const closure = (nodes: Iterable<number>): number[] => {
    const seen = new Set<number>(nodes);
    const stack = [...seen];
    while (stack.length > 0) {
      for (const next of nfa.epsilon[stack.pop()!]) {
        if (seen.has(next)) continue;
        seen.add(next);
        stack.push(next);
      }
    }
    return [...seen].sort((a, b) => a - b);
  };
  const automaton: CharacterAutomaton = { states: [] };
  const index = new Map<string, number>();
  const pending: number[][] = [];
  const stateOf = (nodes: number[]): number => {
    const key = nodes.join(",");
    let id = index.get(key);
    if (id === undefined) {
      id = automaton.states.length;
      if (id >= MAX_AUTOMATON_STATES) throw new UnsupportedPatternError(`the pattern needs more than ${MAX_AUTOMATON_STATES} states`);
      index.set(key, id);
      automaton.states.push({ accepting: nodes.includes(end), edges: [] });
      pending.push(nodes);
    }
    return id;
  };
  stateOf(closure([start]));
  for (let id = 0; id < pending.length; id++) {
    const edges = pending[id].flatMap((node) => nfa.edges[node]);
    // Split the characters into pieces on which every edge agrees, then join pieces by target.
    const cuts = [...new Set(edges.flatMap((edge) => edge.ranges.flatMap(([low, high]) => [low, high + 1])))].sort((a, b) => a - b);
    const byTarget = new Map<string, [number, number][]>();
    for (let piece = 0; piece + 1 < cuts.length; piece++) {
      const [low, high] = [cuts[piece], cuts[piece + 1] - 1];
      const targets = edges.filter((edge) => edge.ranges.some(([from, to]) => from <= low && high <= to)).map((edge) => edge.target);
      if (targets.length === 0) continue;
      const key = closure(targets).join(",");
      byTarget.set(key, [...(byTarget.get(key) ?? []), [low, high]]);
    }
    for (const [key, ranges] of byTarget) {
      automaton.states[id].edges.push({ ranges: normalizeRanges(ranges), target: stateOf(key.split(",").map(Number)) });
    }
  }
  return automaton;
}

/** A rule for the JSON string (quotes included) whose value the automaton accepts; null if it accepts nothing. */
export function jsonStringOf(builder: GrammarBuilder, automaton: CharacterAutomaton, key: string): string | null {
  const live = liveStates(automaton);
  if (!live.has(0)) return null;
  return builder.memo(key, "pattern_string", (self) => {
    const names = automaton.states.map((_, id) => (live.has(id) ? builder.reserve(`${self}_${id}`) : ""));
    automaton.states.forEach((state, id) => {
      if (!live.has(id)) return;
      const edges = state.edges.filter((edge) => live.has(edge.target)).map((edge) => ({ ranges: edge.ranges, next: names[edge.target] }));
      builder.define(names[id], `(${characterChoice(edges, state.accepting ? '"\\""' : null)}) ${AFTER_STRING}`);
    });
    return `"\\"" ${names[0]}`;
  });
}

// States from which an accepting state can be reached.
function liveStates(automaton: CharacterAutomaton): Set<number> {
  const live = new Set<number>();
  for (let changed = true; changed; ) {
    changed = false;
    automaton.states.forEach((state, id) => {
      if (!live.has(id) && (state.accepting || state.edges.some((edge) => live.has(edge.target)))) {
        live.add(id);
        changed = true;
      }
    });
  }
  return live;
}

const PLAIN_ASCII: CodePointRanges = [
  [0x20, 0x21],
  [0x23, 0x5b],
  [0x5d, 0x7e],
];
// Characters with a two-character escape, by the letter after the backslash.
const SHORT_ESCAPES: readonly [string, number][] = [
  ['"', 0x22],
  ["\\", 0x5c],
  ["/", 0x2f],
  ["b", 0x08],
  ["f", 0x0c],
  ["n", 0x0a],
  ["r", 0x0d],
  ["t", 0x09],
];

/**
 * Options for one JSON-string character of each edge's set followed by that edge's `next`, plus
 * `end` (the closing quote) when given. The edges' sets must not overlap; the options then start
 * with different bytes: printable ASCII by class, and every escape under one backslash.
 */
export function characterChoice(edges: readonly { ranges: CodePointRanges; next: string }[], end: string | null): string {
  const options: string[] = end === null ? [] : [end];
  for (const edge of edges) {
    const plain = intersectRanges(edge.ranges, PLAIN_ASCII);
    if (plain.length > 0) options.push(`${asciiClass(plain)} ${edge.next}`);
  }
  const escapes: string[] = [];
  const byNext = new Map<string, number[]>();
  for (const [letter, code] of SHORT_ESCAPES) {
    const edge = edges.find((candidate) => candidate.ranges.some(([low, high]) => low <= code && code <= high));
    if (edge !== undefined) byNext.set(edge.next, [...(byNext.get(edge.next) ?? []), letter.codePointAt(0)!]);
  }
  for (const [next, letters] of byNext) escapes.push(`${asciiClass(normalizeRanges(letters.map((code) => [code, code])))} ${next}`);
  const unicode = unicodeEscape(edges);
  if (unicode !== null) escapes.push(`"u" ${unicode}`);
  if (escapes.length > 0) options.push(`"\\\\" (${escapes.join(" | ")})`);
  return options.join(" | ");
}

// The four hex digits after \u (and a second \u escape for a surrogate pair), by edge.
function unicodeEscape(edges: readonly { ranges: CodePointRanges; next: string }[]): string | null {
  const entries: HexEntry[] = [];
  const lowHalves = new Map<number, HexEntry[]>();
  for (const { ranges, next } of edges) {
    for (const [low, high] of intersectRanges(ranges, [
      [0, 0xd7ff],
      [0xe000, 0xffff],
    ]))
      entries.push({ low, high, next });
    for (const [low, high] of intersectRanges(ranges, [[0x10000, 0x10ffff]])) {
      for (let code = low; code <= high; ) {
        const highHalf = 0xd800 + ((code - 0x10000) >> 10);
        const blockEnd = Math.min(high, 0x10000 + ((highHalf - 0xd800 + 1) << 10) - 1);
        const lowHalf = (value: number) => 0xdc00 + ((value - 0x10000) & 0x3ff);
        lowHalves.set(highHalf, [...(lowHalves.get(highHalf) ?? []), { low: lowHalf(code), high: lowHalf(blockEnd), next }]);
        code = blockEnd + 1;
      }
    }
  }
  // High halves with the same low halves share one entry.
  const highs = [...lowHalves.keys()].sort((a, b) => a - b);
  for (let first = 0; first < highs.length; ) {
    const continuation = `"\\\\u" ${hexTrie(
      lowHalves.get(highs[first])!.sort((a, b) => a.low - b.low),
      4,
    )}`;
    let last = first;
    while (
      last + 1 < highs.length &&
      highs[last + 1] === highs[last] + 1 &&
      `"\\\\u" ${hexTrie(
        lowHalves.get(highs[last + 1])!.sort((a, b) => a.low - b.low),
        4,
      )}` === continuation
    )
      last++;
    entries.push({ low: highs[first], high: highs[last], next: continuation });
    first = last + 1;
  }
  if (entries.length === 0) return null;
  return hexTrie(
    entries.sort((a, b) => a.low - b.low),
    4,
  );
}

interface HexEntry {
  low: number;
  high: number;
  next: string;
}

// `digits` hex digits (either case) spelling a value of some entry, then that entry's `next`;
// digits leading to the same continuation share one class, so the options are deterministic.
function hexTrie(entries: readonly HexEntry[], digits: number): string {
  if (digits === 0) return entries[0].next;
  const span = 16 ** (digits - 1);
  if (entries.length === 1 && entries[0].low === 0 && entries[0].high === span * 16 - 1) {
    return `${repeatHex(digits)} ${entries[0].next}`;
  }
  const groups = new Map<string, { values: number[]; entries: HexEntry[] }>();
  for (let value = 0; value < 16; value++) {
    const [from, to] = [value * span, (value + 1) * span - 1];
    const inside = entries
      .filter((entry) => entry.high >= from && entry.low <= to)
      .map((entry) => ({ low: Math.max(entry.low, from) - from, high: Math.min(entry.high, to) - from, next: entry.next }));
    if (inside.length === 0) continue;
    const key = JSON.stringify(inside);
    const group = groups.get(key) ?? { values: [], entries: inside };
    group.values.push(value);
    groups.set(key, group);
  }
  const options = [...groups.values()].map(({ values, entries: inside }) => `${hexDigits(values)} ${hexTrie(inside, digits - 1)}`);
  return options.length === 1 ? options[0] : `(${options.join(" | ")})`;
}

function repeatHex(count: number): string {
  const hex = "[0-9A-Fa-f]";
  return count === 1 ? hex : `${hex}{${count}}`;
}

// One class for the hex digits of these values, upper and lower case.
function hexDigits(values: readonly number[]): string {
  const codes = values.flatMap((value) => (value < 10 ? [0x30 + value] : [0x41 + value - 10, 0x61 + value - 10]));
  return asciiClass(normalizeRanges(codes.map((code) => [code, code])));
}

/** A deterministic choice among literal texts (enum values): a trie, single-child runs joined. */
export function literalChoice(texts: readonly string[]): string {
  interface TrieNode {
    end: boolean;
    children: Map<string, TrieNode>;
  }
  const root: TrieNode = { end: false, children: new Map() };
  for (const text of texts) {
    let node = root;
    for (const character of text) {
      let child = node.children.get(character);
      if (child === undefined) {
        child = { end: false, children: new Map() };
        node.children.set(character, child);
      }
      node = child;
    }
    node.end = true;
  }
  const emit = (node: TrieNode): string => {
    const options: string[] = node.end ? ['""'] : [];
    for (const [character, child] of node.children) {
      let run = character;
      let next = child;
      while (!next.end && next.children.size === 1) {
        const [[following, grandchild]] = next.children;
        run += following;
        next = grandchild;
      }
      const rest = next.children.size === 0 ? "" : ` ${emit(next)}`;
      options.push(`${literal(run)}${rest}`);
    }
    return options.length === 1 ? options[0] : `(${options.join(" | ")})`;
  };
  return emit(root);
}
