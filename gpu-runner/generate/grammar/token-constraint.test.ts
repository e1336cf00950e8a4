import { beforeAll, describe, expect, it } from "vitest";
import { LLAMA3_DIRECTORY } from "../../tokenizer/real-tokenizer-fixtures.ts";
import { loadTokenizer, type TextTokenizer } from "../../tokenizer/tokenizer.ts";
import { GrammarCompiler } from "./compiler.ts";
import { jsonObjectGrammar } from "./json-schema-grammar.ts";
import { byteLevelTokenizer } from "./random-walk.ts";
import { UnsupportedSchemaError } from "./unsupported-schema-error.ts";
import { grammarVocabulary } from "./vocabulary.ts";
import { loadXGrammar } from "./xgrammar-runtime.ts";

const SCHEMA = { type: "object", properties: { ok: { type: "boolean" } }, required: ["ok"] };

function allowedIds(logits: Float32Array): number[] {
  const allowed: number[] = [];
  logits.forEach((value, id) => {
    if (value !== Number.NEGATIVE_INFINITY) allowed.push(id);
  });
  return allowed;
}

describe("a constraint over the byte-level vocabulary", () => {
  const tokenizer = byteLevelTokenizer();
  let compiler: GrammarCompiler;
  beforeAll(async () => {
    compiler = await GrammarCompiler.create(tokenizer);
  });

  it("allows only the opening brace first, leaving allowed logits untouched", async () => {
    const constraint = (await compiler.jsonObject()).createConstraint();
    const logits = Float32Array.from({ length: tokenizer.vocabSize }, (_, id) => id / 7);
    constraint.mask(logits);
    expect(allowedIds(logits)).toEqual(["{".charCodeAt(0)]);
    expect(logits["{".charCodeAt(0)]).toBeCloseTo("{".charCodeAt(0) / 7);
    constraint.dispose();
  });

  it("forbids the padding rows of logits longer than the vocabulary", async () => {
    const constraint = (await compiler.jsonSchema(SCHEMA, { strict: true })).createConstraint();
    for (const id of tokenizer.encode('{"ok": ', { addSpecialTokens: false })) constraint.accept(id);
    const logits = new Float32Array(tokenizer.vocabSize + 37);
    constraint.mask(logits);
    expect(allowedIds(logits).map((id) => String.fromCharCode(id))).toEqual(["f", "t"]);
    constraint.dispose();
  });

  it("throws on a forbidden token and keeps its state", async () => {
    const constraint = (await compiler.jsonSchema(SCHEMA, { strict: true })).createConstraint();
    expect(() => constraint.accept("[".charCodeAt(0))).toThrow(/does not allow token 91 \("\["\)/);
    expect(() => constraint.accept(tokenizer.vocabSize)).toThrow(/outside the vocabulary/);
    for (const id of tokenizer.encode('{"ok": true}', { addSpecialTokens: false })) constraint.accept(id);
    constraint.dispose();
  });

  it("is terminated once the text is complete, then allows only end-of-sequence", async () => {
    const constraint = (await compiler.jsonSchema(SCHEMA, { strict: true })).createConstraint();
    const ids = tokenizer.encode('{"ok": false}', { addSpecialTokens: false });
    for (const id of ids.slice(0, -1)) {
      constraint.accept(id);
      expect(constraint.isTerminated()).toBe(false);
    }
    constraint.accept(ids.at(-1)!);
    expect(constraint.isTerminated()).toBe(true);
    const logits = new Float32Array(tokenizer.vocabSize);
    constraint.mask(logits);
    expect(allowedIds(logits)).toEqual(tokenizer.eosTokenIds);
    constraint.accept(tokenizer.eosTokenIds[1]);
    expect(constraint.isTerminated()).toBe(true);
    expect(() => constraint.accept("x".charCodeAt(0))).toThrow(/after the grammar has ended/);
    constraint.dispose();
    expect(() => constraint.mask(logits)).toThrow(/disposed/);
  });

  it("keeps one state per constraint", async () => {
    const grammar = await compiler.jsonSchema(SCHEMA, { strict: true });
    const [first, second] = [grammar.createConstraint(), grammar.createConstraint()];
    first.accept("{".charCodeAt(0));
    const logits = new Float32Array(tokenizer.vocabSize);
    second.mask(logits);
    expect(allowedIds(logits)).toEqual(["{".charCodeAt(0)]);
    first.dispose();
    second.dispose();
  });

  it("compiles a schema once and rejects what it cannot honour", async () => {
    expect(await compiler.jsonSchema(SCHEMA, { strict: true })).toBe(await compiler.jsonSchema(SCHEMA, { strict: true }));
    expect(await compiler.jsonSchema(SCHEMA, { strict: false })).not.toBe(await compiler.jsonSchema(SCHEMA, { strict: true }));
    await expect(compiler.jsonSchema({ type: "object", not: {} }, { strict: false })).rejects.toBeInstanceOf(UnsupportedSchemaError);
    expect(await GrammarCompiler.create(tokenizer)).toBe(compiler);
  });
});

describe("a constraint over a real BPE vocabulary (Llama 3, 128k tokens)", () => {
  let tokenizer: TextTokenizer;
  let compiler: GrammarCompiler;
  beforeAll(async () => {
    tokenizer = await loadTokenizer(LLAMA3_DIRECTORY);
    compiler = await GrammarCompiler.create(tokenizer);
  });

  it("allows only tokens that start the object, never special tokens", async () => {
    const constraint = (await compiler.jsonSchema(SCHEMA, { strict: true })).createConstraint();
    const logits = new Float32Array(tokenizer.vocabSize);
    constraint.mask(logits);
    const allowed = allowedIds(logits);
    expect(allowed.length).toBeGreaterThan(1);
    for (const id of allowed) expect('{"ok": true}'.startsWith(tokenizer.decode([id])) || '{"ok": false}'.startsWith(tokenizer.decode([id]))).toBe(true);
    expect(allowed).not.toContain(tokenizer.tokenToId("<|begin_of_text|>"));
    constraint.dispose();
  });

  it("accepts the text tokenized as the model would write it, and then only end-of-sequence", async () => {
    const constraint = (await compiler.jsonSchema(SCHEMA, { strict: true })).createConstraint();
    for (const id of tokenizer.encode('{"ok": true}', { addSpecialTokens: false })) constraint.accept(id);
    expect(constraint.isTerminated()).toBe(true);
    const logits = new Float32Array(tokenizer.vocabSize);
    constraint.mask(logits);
    expect(allowedIds(logits).sort()).toEqual([...tokenizer.eosTokenIds].sort());
    constraint.dispose();
  });
});

describe("the bitmask read straight from WebAssembly memory", () => {
  it("equals the one the package's own async method returns, at every step", async () => {
    const runtime = await loadXGrammar();
    expect(runtime.readsMemoryDirectly).toBe(true);
    const tokenizer = byteLevelTokenizer();
    const { encodedVocabulary, stopTokenIds } = grammarVocabulary(tokenizer);
    const info = await runtime.xgrammar.TokenizerInfo.createTokenizerInfo(encodedVocabulary, "byte_level", false, tokenizer.vocabSize, stopTokenIds);
    const compiler = await runtime.xgrammar.GrammarCompiler.createGrammarCompiler(info, false);
    const grammar = await compiler.compileGrammar(jsonObjectGrammar());
    const matcher = await runtime.xgrammar.GrammarMatcher.createGrammarMatcher(grammar);
    const native = (matcher as unknown as { handle: Parameters<typeof runtime.readBitmask>[0] }).handle;
    const direct = new Int32Array(Math.ceil(tokenizer.vocabSize / 32));
    for (const id of tokenizer.encode('{"a": [1, "x\\n", {"b": null}], "é": true}', { addSpecialTokens: false })) {
      runtime.readBitmask(native, tokenizer.vocabSize, direct);
      expect([...direct]).toEqual([...(await matcher.getNextTokenBitmask())]);
      expect(matcher.acceptToken(id)).toBe(true);
    }
    matcher.dispose();
    grammar.dispose();
    compiler.dispose();
    info.dispose();
  });
});
