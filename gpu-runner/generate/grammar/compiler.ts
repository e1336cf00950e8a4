/**
 * Compiles grammars against one tokenizer's vocabulary: the vocabulary is read into xgrammar once
 * per compiler, and compiled grammars are kept in a small LRU keyed by what they were made from,
 * because compiling against a 150k vocabulary takes a few hundred milliseconds.
 */
import type * as XGrammarModule from "@mlc-ai/web-xgrammar";
import type { StructuralTag } from "@mlc-ai/web-xgrammar";
import type { TextTokenizer } from "../../tokenizer/tokenizer.ts";
import { jsonObjectGrammar, jsonSchemaGrammar } from "./json-schema-grammar.ts";
import { type ConstraintVocabulary, MatcherConstraint, type TokenConstraint } from "./token-constraint.ts";
import { type FunctionTool, type ToolCallFormat, type ToolCallOptions, type ToolChoice, toolCallStructuralTag } from "./tool-calls.ts";
import { grammarVocabulary } from "./vocabulary.ts";
import { loadXGrammar, type XGrammarRuntime } from "./xgrammar-runtime.ts";

/** How many compiled grammars a compiler keeps (least recently used first out). */
export const COMPILED_GRAMMAR_CACHE_SIZE = 64;

// The compiled grammar is freed once no CompiledGrammar refers to it (constraints made from it
// keep their own reference inside xgrammar), so evicting it from the cache never breaks a holder.
const unreachableGrammars = new FinalizationRegistry<XGrammarModule.CompiledGrammar>((compiled) => compiled.dispose());

/** A grammar compiled for one vocabulary; it hands out one constraint per sequence. */
export class CompiledGrammar {
  readonly #runtime: XGrammarRuntime;
  readonly #compiled: XGrammarModule.CompiledGrammar;
  readonly #vocabulary: ConstraintVocabulary;
  /** What it was compiled from: EBNF text, or a structural tag as JSON. */
  readonly source: string;

  constructor(runtime: XGrammarRuntime, compiled: XGrammarModule.CompiledGrammar, vocabulary: ConstraintVocabulary, source: string) {
    this.#runtime = runtime;
    this.#compiled = compiled;
    this.#vocabulary = vocabulary;
    this.source = source;
    unreachableGrammars.register(this, compiled);
  }

  /** A constraint at the start of the grammar, for one sequence; dispose it when the sequence ends. */
  createConstraint(): TokenConstraint {
    return new MatcherConstraint(this.#runtime, this.#runtime.createMatcher(this.#compiled), this.#vocabulary);
  }
}

const compilers = new WeakMap<TextTokenizer, Promise<GrammarCompiler>>();

/** Loads xgrammar once per process (lazily) and compiles grammars against one tokenizer's vocabulary. */
export class GrammarCompiler {
  readonly vocabSize: number;
  readonly stopTokenIds: readonly number[];
  readonly #runtime: XGrammarRuntime;
  readonly #compiler: XGrammarModule.GrammarCompiler;
  readonly #vocabulary: ConstraintVocabulary;
  readonly #cache = new Map<string, Promise<CompiledGrammar>>();

  private constructor(runtime: XGrammarRuntime, compiler: XGrammarModule.GrammarCompiler, vocabulary: ConstraintVocabulary) {
    this.#runtime = runtime;
    this.#compiler = compiler;
    this.#vocabulary = vocabulary;
    this.vocabSize = vocabulary.vocabSize;
    this.stopTokenIds = vocabulary.stopTokenIds;
  }

  /** The compiler for `tokenizer`, made on first use and shared afterwards. */
  static create(tokenizer: TextTokenizer): Promise<GrammarCompiler> {
    let compiler = compilers.get(tokenizer);
    if (compiler === undefined) {
      compiler = GrammarCompiler.#build(tokenizer);
      compilers.set(tokenizer, compiler);
      compiler.catch(() => compilers.delete(tokenizer));
    }
    return compiler;
  }

  static async #build(tokenizer: TextTokenizer): Promise<GrammarCompiler> {
    const runtime = await loadXGrammar();
    const { encodedVocabulary, stopTokenIds } = grammarVocabulary(tokenizer);
    if (stopTokenIds.length === 0) throw new Error("constrained decoding needs a tokenizer with an end-of-sequence token");
    const info = await runtime.xgrammar.TokenizerInfo.createTokenizerInfo(encodedVocabulary, "byte_level", false, tokenizer.vocabSize, stopTokenIds);
    const compiler = await runtime.xgrammar.GrammarCompiler.createGrammarCompiler(info, false);
    const stopBitmask = new Int32Array(Math.ceil(tokenizer.vocabSize / 32));
    for (const id of stopTokenIds) stopBitmask[id >>> 5] |= 1 << (id & 31);
    const describeToken = (id: number) => JSON.stringify(tokenizer.decode([id]));
    return new GrammarCompiler(runtime, compiler, { vocabSize: tokenizer.vocabSize, stopTokenIds, stopBitmask, describeToken });
  }

  /** Any JSON object: OpenAI's `response_format: {type: "json_object"}`. */
  jsonObject(): Promise<CompiledGrammar> {
    return this.#cached("json_object", () => ({ ebnf: jsonObjectGrammar() }));
  }

  /**
   * JSON valid against `schema` (an object schema): `response_format: {type: "json_schema"}`.
   * Rejects with UnsupportedSchemaError, naming the location and keyword, what it cannot honour.
   */
  jsonSchema(schema: unknown, options: { strict: boolean }): Promise<CompiledGrammar> {
    return this.#cached(`json_schema ${options.strict} ${JSON.stringify(schema)}`, () => ({ ebnf: jsonSchemaGrammar(schema, options) }));
  }

  /** Tool calls written in `format`: free text or calls ("auto"), one or more calls ("required"), or a call of one function. */
  toolCalls(tools: readonly FunctionTool[], choice: ToolChoice, format: ToolCallFormat, options: ToolCallOptions = {}): Promise<CompiledGrammar> {
    const key = `tools ${JSON.stringify([tools, choice, format, options.parallelToolCalls ?? true])}`;
    return this.#cached(key, () => ({ structuralTag: toolCallStructuralTag(tools, choice, format, options) }));
  }

  #cached(key: string, source: () => { ebnf: string } | { structuralTag: StructuralTag }): Promise<CompiledGrammar> {
    const hit = this.#cache.get(key);
    if (hit !== undefined) {
      this.#cache.delete(key);
      this.#cache.set(key, hit);
      return hit;
    }
    const compiled = (async () => this.#compile(source()))();
    this.#cache.set(key, compiled);
    compiled.catch(() => this.#cache.delete(key));
    while (this.#cache.size > COMPILED_GRAMMAR_CACHE_SIZE) this.#cache.delete(this.#cache.keys().next().value!);
    return compiled;
  }

  async #compile(source: { ebnf: string } | { structuralTag: StructuralTag }): Promise<CompiledGrammar> {
    const text = "ebnf" in source ? source.ebnf : JSON.stringify(source.structuralTag);
    let compiled: XGrammarModule.CompiledGrammar;
    try {
      compiled = "ebnf" in source ? await this.#compiler.compileGrammar(source.ebnf) : await this.#compiler.compileStructuralTag(source.structuralTag);
    } catch (error) {
      throw new Error(`xgrammar could not compile the grammar: ${(error as Error).message}`, { cause: error });
    }
    return new CompiledGrammar(this.#runtime, compiled, this.#vocabulary, text);
  }
}
