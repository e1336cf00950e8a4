/**
 * What constrained decoding costs: grammar compilation, and mask() + accept() per token, for the
 * shipped byte-level vocabulary and real 128k and 151k BPE vocabularies.
 *
 *   npx tsx gpu-runner/generate/grammar/measure-constraint.ts
 *
 * Tokens are drawn uniformly among those the grammar allows (as the tests do), which visits far
 * more states than a model would; only mask() and accept() are timed.
 */
import { Rng } from "../../random.ts";
import { LLAMA3_DIRECTORY, QWEN3_DIRECTORY } from "../../tokenizer/real-tokenizer-fixtures.ts";
import { loadTokenizer, type TextTokenizer } from "../../tokenizer/tokenizer.ts";
import { type CompiledGrammar, GrammarCompiler } from "./compiler.ts";
import { byteLevelTokenizer } from "./random-walk.ts";
import { DEFAULT_TOOL_CALLS } from "./tool-calls.ts";

const ORDER: Record<string, unknown> = {
  type: "object",
  properties: {
    customer: { type: "object", properties: { name: { type: "string" }, email: { type: "string", format: "email" } }, required: ["name", "email"] },
    items: {
      type: "array",
      items: {
        type: "object",
        properties: { sku: { type: "string", pattern: "^[A-Z]{3}-\\d{4}$" }, quantity: { type: "integer", minimum: 1, maximum: 99 } },
        required: ["sku", "quantity"],
      },
      minItems: 1,
      maxItems: 4,
    },
    priority: { enum: ["low", "normal", "high"] },
    note: { type: "string", maxLength: 24 },
    total: { type: "number", minimum: 0 },
  },
  required: ["customer", "items", "priority", "total"],
};

async function measure(label: string, tokenizer: TextTokenizer): Promise<void> {
  let started = performance.now();
  const compiler = await GrammarCompiler.create(tokenizer);
  console.log(`\n${label}: ${tokenizer.vocabSize} ids, vocabulary read into xgrammar in ${(performance.now() - started).toFixed(0)} ms`);
  const grammars: [string, () => Promise<CompiledGrammar>][] = [
    ["json_object", () => compiler.jsonObject()],
    ["order schema", () => compiler.jsonSchema(ORDER, { strict: false })],
    ["tool calls (required)", () => compiler.toolCalls([{ name: "place_order", parameters: ORDER }], "required", DEFAULT_TOOL_CALLS)],
  ];
  for (const [name, compile] of grammars) {
    started = performance.now();
    const grammar = await compile();
    const compileMs = performance.now() - started;
    const times = walkTimes(grammar, compiler, tokenizer.vocabSize);
    times.sort((a, b) => a - b);
    const mean = times.reduce((sum, time) => sum + time, 0) / times.length;
    const at = (fraction: number) => times[Math.min(times.length - 1, Math.floor(fraction * times.length))];
    console.log(
      `  ${name.padEnd(22)} compile ${compileMs.toFixed(0).padStart(6)} ms   mask+accept per token: mean ${ms(mean)}, p50 ${ms(at(0.5))}, p99 ${ms(at(0.99))}, max ${ms(times.at(-1)!)} (${times.length} tokens)`,
    );
  }
}

// mask() + accept() durations over seeded walks that pick uniformly among allowed tokens.
function walkTimes(grammar: CompiledGrammar, compiler: GrammarCompiler, vocabSize: number): number[] {
  const times: number[] = [];
  const logits = new Float32Array(vocabSize);
  for (let seed = 0; seed < 8; seed++) {
    const rng = new Rng(seed);
    const constraint = grammar.createConstraint();
    for (let step = 0; step < 300; step++) {
      logits.fill(0);
      const before = performance.now();
      constraint.mask(logits);
      const masked = performance.now() - before;
      let allowed = 0;
      for (let id = 0; id < vocabSize; id++) if (logits[id] === 0) allowed++;
      let rank = Math.floor(rng.uniform() * allowed);
      let id = 0;
      for (; id < vocabSize; id++) if (logits[id] === 0 && rank-- === 0) break;
      const accepting = performance.now();
      constraint.accept(id);
      times.push(masked + performance.now() - accepting);
      if (compiler.stopTokenIds.includes(id)) break;
    }
    constraint.dispose();
  }
  return times;
}

function ms(value: number): string {
  return `${value.toFixed(3)} ms`;
}

await measure("byte-level (the shipped model's)", byteLevelTokenizer());
await measure("Llama 3 BPE", await loadTokenizer(LLAMA3_DIRECTORY));
await measure("Qwen3 BPE", await loadTokenizer(QWEN3_DIRECTORY));
