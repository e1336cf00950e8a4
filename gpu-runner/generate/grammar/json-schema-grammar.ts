/**
 * JSON Schema to grammar: the JSON texts a sequence may be constrained to.
 *
 * Why not xgrammar's own converter: in 0.1.27 it silently drops what it cannot express (allOf
 * with several schemas becomes "anything", oneOf is read as anyOf, not/if/then/else, multipleOf,
 * uniqueItems and contains are ignored) and gets several things wrong (one-sided integer bounds,
 * number bounds, strings with minLength or a pattern can hold unescaped quotes and control
 * characters, format dates such as 02-31). Here every keyword is either honoured exactly or
 * refused with an UnsupportedSchemaError naming it; unknown keywords are annotations and pass.
 *
 * What the grammar writes is always a subset of what the schema accepts, in one fixed layout:
 * one line, ", " between members and items, ": " after keys (json.dumps' default, which chat
 * models' tool-call templates also use), properties in the order the schema declares them, no
 * properties beyond the declared ones when there are any, and no number longer than the texts
 * of number-grammar.ts.
 */
import { anyJsonString, choice, countedJsonString, GrammarBuilder, literal, MAX_COUNTED_CHARACTERS, repeat, sequence } from "./ebnf.ts";
import { ANY_INTEGER, ANY_NUMBER, integerRange, type NumberBound, numberRange } from "./number-grammar.ts";
import { parseRegex, UnsupportedPatternError } from "./regex.ts";
import { jsonStringOf, literalChoice, patternAutomaton } from "./string-automaton.ts";
import { FORMAT_PATTERNS, UNSUPPORTED_FORMATS } from "./string-formats.ts";
import { UnsupportedSchemaError } from "./unsupported-schema-error.ts";

/** How a schema is read. */
export interface SchemaGrammarOptions {
  /**
   * OpenAI's strict mode: every declared property is written, optional or not (strict schemas
   * list them all as required and express optional values as a union with null). Without it the
   * schema's `required` is followed as given and optional properties may be left out.
   */
  strict: boolean;
}

type Schema = Record<string, unknown>;
type JsonType = "null" | "boolean" | "object" | "array" | "string" | "number";

// Arrays longer than this are never written (a lower maxItems is always met).
const MAX_ITEMS = 1000;
const TYPE_NAMES = new Set(["null", "boolean", "object", "array", "string", "number", "integer"]);
const ALL_TYPES: ReadonlySet<JsonType> = new Set(["null", "boolean", "object", "array", "string", "number"]);

// Keywords that constrain values of one type; their presence without `type` implies that type.
const FAMILY_KEYWORDS: Record<"object" | "array" | "string" | "number", readonly string[]> = {
  object: ["properties", "required", "additionalProperties", "unevaluatedProperties", "minProperties", "maxProperties"],
  array: ["items", "prefixItems", "additionalItems", "unevaluatedItems", "minItems", "maxItems", "uniqueItems"],
  string: ["minLength", "maxLength", "pattern", "format"],
  number: ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"],
};
const COMPOSITION_KEYWORDS = ["$ref", "allOf", "anyOf", "oneOf", "const", "enum", "type"];
const CONSTRAINT_KEYWORDS = new Set([...Object.values(FAMILY_KEYWORDS).flat(), ...COMPOSITION_KEYWORDS]);

// Validation keywords with no exact grammar: refused wherever they appear.
const REFUSED_KEYWORDS: ReadonlyMap<string, string> = new Map([
  ["not", "negation cannot be expressed as a grammar"],
  ["if", "conditional schemas (if/then/else) are not supported"],
  ["then", "conditional schemas (if/then/else) are not supported"],
  ["else", "conditional schemas (if/then/else) are not supported"],
  ["patternProperties", "patternProperties is not supported; declare the properties or use additionalProperties"],
  ["propertyNames", "propertyNames is not supported"],
  ["dependentRequired", "dependentRequired is not supported"],
  ["dependentSchemas", "dependentSchemas is not supported"],
  ["dependencies", "dependencies is not supported"],
  ["contains", "contains is not supported"],
  ["minContains", "minContains is not supported"],
  ["maxContains", "maxContains is not supported"],
  ["$dynamicRef", "$dynamicRef is not supported"],
  ["$recursiveRef", "$recursiveRef is not supported"],
]);

/** Grammar (EBNF, root rule `root`) for JSON texts valid against `schema`, which must describe an object. */
export function jsonSchemaGrammar(schema: unknown, options: SchemaGrammarOptions): string {
  const converter = new SchemaConverter(schema, options);
  const root = converter.visit(schema, "#");
  const kinds = converter.kinds(schema, new Set());
  if (kinds.size !== 1 || !kinds.has("object")) {
    throw new UnsupportedSchemaError("#", "type", 'the root schema must describe a JSON object (type "object")');
  }
  return converter.builder.build(root);
}

/** Grammar for any JSON object, OpenAI's `json_object` response format. */
export function jsonObjectGrammar(): string {
  const builder = new GrammarBuilder();
  return builder.build(anyValue(builder).object);
}

// Shared rules for an unconstrained JSON value; returns the rule names of a value and an object.
function anyValue(builder: GrammarBuilder): { value: string; object: string } {
  let object = "";
  const value = builder.shared("json_value", (self) => {
    const string = anyString(builder);
    const number = builder.shared("json_number", () => ANY_NUMBER);
    const member = `${string} ${literal(": ")} ${self}`;
    object = builder.shared("json_object", () => `"{" (${member} (${literal(", ")} ${member})*)? "}"`);
    const array = builder.shared("json_array", () => `"[" (${self} (${literal(", ")} ${self})*)? "]"`);
    return `${object} | ${array} | ${string} | ${number} | "true" | "false" | "null"`;
  });
  return { value, object: object || builder.shared("json_object", () => "") };
}

function anyString(builder: GrammarBuilder): string {
  return anyJsonString(builder);
}

class SchemaConverter {
  readonly builder = new GrammarBuilder();
  readonly #root: unknown;
  readonly #strict: boolean;
  readonly #refRules = new Map<string, string>();

  constructor(root: unknown, options: SchemaGrammarOptions) {
    this.#root = root;
    this.#strict = options.strict;
  }

  /** An expression for the JSON texts valid against `schema`, found at `path`. */
  visit(schema: unknown, path: string): string {
    if (this.builder.size > 20_000) throw new UnsupportedSchemaError(path, "", "the schema is too large to compile");
    if (schema === true) return anyValue(this.builder).value;
    if (schema === false) throw new UnsupportedSchemaError(path, "", "the schema false accepts no value");
    if (!isSchema(schema)) throw new UnsupportedSchemaError(path, "", "a schema must be a JSON object or a boolean");
    this.#refuseUnsupported(schema, path);
    if ("$ref" in schema) {
      this.#onlyAnnotationsBeside(schema, "$ref", path);
      return this.#ref(schema.$ref, path);
    }
    if ("allOf" in schema) {
      const parts = schemaArray(schema.allOf, path, "allOf");
      if (parts.length > 1) throw new UnsupportedSchemaError(path, "allOf", "allOf with more than one schema is not supported; merge them into one");
      this.#onlyAnnotationsBeside(schema, "allOf", path);
      return this.visit(parts[0], `${path}/allOf/0`);
    }
    for (const keyword of ["anyOf", "oneOf"] as const) {
      if (!(keyword in schema)) continue;
      const options = schemaArray(schema[keyword], path, keyword);
      this.#onlyAnnotationsBeside(schema, keyword, path);
      if (keyword === "oneOf") this.#requireDisjoint(options, path);
      return choice(options.map((option, index) => this.visit(option, `${path}/${keyword}/${index}`)))!;
    }
    if ("const" in schema || "enum" in schema) return this.#enumeration(schema, path);
    const alternatives = this.#types(schema, path).map((type) => this.#typed(type, schema, path));
    return choice(alternatives)!;
  }

  /** The JSON types the grammar for `schema` can write (integer counts as number); all of them where unsure. */
  kinds(schema: unknown, seen: Set<string>): Set<JsonType> {
    try {
      return this.#kinds(schema, seen);
    } catch (error) {
      // A malformed part is reported with its location when it is visited.
      if (error instanceof UnsupportedSchemaError) return new Set(ALL_TYPES);
      throw error;
    }
  }

  #kinds(schema: unknown, seen: Set<string>): Set<JsonType> {
    if (schema === true) return new Set(ALL_TYPES);
    if (!isSchema(schema)) return new Set();
    if (typeof schema.$ref === "string") {
      if (seen.has(schema.$ref)) return new Set();
      return this.kinds(this.#resolve(schema.$ref, "#"), new Set([...seen, schema.$ref]));
    }
    if (Array.isArray(schema.allOf) && schema.allOf.length === 1) return this.kinds(schema.allOf[0], seen);
    const options = Array.isArray(schema.anyOf) ? schema.anyOf : Array.isArray(schema.oneOf) ? schema.oneOf : null;
    if (options !== null) return new Set(options.flatMap((option) => [...this.kinds(option, seen)]));
    if ("const" in schema || Array.isArray(schema.enum)) {
      const values = "const" in schema ? [schema.const] : (schema.enum as unknown[]);
      const allowed = "type" in schema ? new Set(this.#types(schema, "#")) : null;
      return new Set(values.filter((value) => allowed === null || matchesTypes(value, allowed)).map(jsonTypeOf));
    }
    return new Set(this.#types(schema, "#").flatMap((type) => (type === "integer" ? "number" : type === "any" ? [...ALL_TYPES] : type)) as JsonType[]);
  }

  #refuseUnsupported(schema: Schema, path: string): void {
    for (const keyword of Object.keys(schema)) {
      const reason = REFUSED_KEYWORDS.get(keyword);
      if (reason !== undefined) throw new UnsupportedSchemaError(path, keyword, reason);
    }
    if ("$id" in schema && path !== "#") throw new UnsupportedSchemaError(path, "$id", "$id below the root is not supported");
    for (const keyword of ["unevaluatedProperties", "unevaluatedItems"]) {
      if (keyword in schema && schema[keyword] !== false) throw new UnsupportedSchemaError(path, keyword, `${keyword} is only supported as false`);
    }
  }

  #onlyAnnotationsBeside(schema: Schema, keyword: string, path: string): void {
    for (const other of Object.keys(schema)) {
      if (other !== keyword && CONSTRAINT_KEYWORDS.has(other)) {
        throw new UnsupportedSchemaError(path, other, `"${other}" beside "${keyword}" is not supported; move it into the ${keyword} schemas`);
      }
    }
  }

  #ref(reference: unknown, path: string): string {
    if (typeof reference !== "string") throw new UnsupportedSchemaError(path, "$ref", "$ref must be a string");
    const existing = this.#refRules.get(reference);
    if (existing !== undefined) return existing;
    const target = this.#resolve(reference, path);
    const name = this.builder.reserve(`ref_${reference.split("/").at(-1) ?? "root"}`);
    this.#refRules.set(reference, name);
    this.builder.define(name, this.visit(target, reference));
    return name;
  }

  // Only pointers into this document: "#" or "#/…" with ~0, ~1 and percent escapes.
  #resolve(reference: string, path: string): unknown {
    if (reference !== "#" && !reference.startsWith("#/")) {
      throw new UnsupportedSchemaError(path, "$ref", `only references within the schema ("#/…") are supported, got ${JSON.stringify(reference)}`);
    }
    let target: unknown = this.#root;
    for (const encoded of reference === "#" ? [] : reference.slice(2).split("/")) {
      let segment: string;
      try {
        segment = decodeURIComponent(encoded).replaceAll("~1", "/").replaceAll("~0", "~");
      } catch {
        throw new UnsupportedSchemaError(path, "$ref", `${JSON.stringify(reference)} is not a valid JSON pointer`);
      }
      const container = target as Record<string, unknown> | unknown[] | null;
      const next =
        typeof container === "object" && container !== null && Object.hasOwn(container, segment) ? (container as Record<string, unknown>)[segment] : undefined;
      if (next === undefined) throw new UnsupportedSchemaError(path, "$ref", `${JSON.stringify(reference)} points at nothing in the schema`);
      target = next;
    }
    return target;
  }

  // oneOf is only exact when at most one option can match a value: options of different types,
  // or objects told apart by a required property with different constant values.
  #requireDisjoint(options: unknown[], path: string): void {
    for (let a = 0; a < options.length; a++) {
      for (let b = a + 1; b < options.length; b++) {
        const kindsA = this.kinds(options[a], new Set());
        const kindsB = this.kinds(options[b], new Set());
        if ([...kindsA].every((kind) => !kindsB.has(kind))) continue;
        if (this.#discriminated(options[a], options[b])) continue;
        throw new UnsupportedSchemaError(
          path,
          "oneOf",
          `options ${a} and ${b} may both match one value, which oneOf forbids; use anyOf, or tell them apart with a required property of different const values`,
        );
      }
    }
  }

  #discriminated(a: unknown, b: unknown): boolean {
    const constants = (schema: unknown) => {
      const object = this.#dereference(schema);
      const result = new Map<string, Set<string>>();
      if (!isSchema(object) || !isSchema(object.properties)) return result;
      const required = new Set(this.#strict ? Object.keys(object.properties) : Array.isArray(object.required) ? object.required : []);
      for (const [name, property] of Object.entries(object.properties)) {
        const resolved = this.#dereference(property);
        if (!required.has(name) || !isSchema(resolved)) continue;
        const values = "const" in resolved ? [resolved.const] : Array.isArray(resolved.enum) ? resolved.enum : null;
        if (values !== null) result.set(name, new Set(values.map((value) => jsonText(value))));
      }
      return result;
    };
    const constantsA = constants(a);
    const constantsB = constants(b);
    return [...constantsA].some(([name, values]) => constantsB.has(name) && [...values].every((value) => !constantsB.get(name)!.has(value)));
  }

  #dereference(schema: unknown): unknown {
    for (let hops = 0; hops < 32 && isSchema(schema); hops++) {
      if (typeof schema.$ref === "string") schema = this.#resolve(schema.$ref, "#");
      else if (Array.isArray(schema.allOf) && schema.allOf.length === 1) schema = schema.allOf[0];
      else break;
    }
    return schema;
  }

  #enumeration(schema: Schema, path: string): string {
    if ("const" in schema && "enum" in schema) throw new UnsupportedSchemaError(path, "enum", "const and enum together are not supported");
    for (const other of Object.keys(schema)) {
      if (CONSTRAINT_KEYWORDS.has(other) && !["const", "enum", "type"].includes(other)) {
        throw new UnsupportedSchemaError(path, other, `"${other}" beside const or enum is not supported`);
      }
    }
    const keyword = "const" in schema ? "const" : "enum";
    const values = "const" in schema ? [schema.const] : schema.enum;
    if (!Array.isArray(values) || values.length === 0) throw new UnsupportedSchemaError(path, "enum", "enum must be a non-empty array");
    const allowed = "type" in schema ? new Set(this.#types(schema, path)) : null;
    const kept = values.filter((value) => allowed === null || matchesTypes(value, allowed));
    if (kept.length === 0) throw new UnsupportedSchemaError(path, keyword, `no value of ${keyword} has the schema's type`);
    return literalChoice(kept.map((value) => jsonText(value)));
  }

  // The declared types, or those implied by the keywords present; "any" when nothing says.
  #types(schema: Schema, path: string): string[] {
    if ("type" in schema) {
      const declared = Array.isArray(schema.type) ? schema.type : [schema.type];
      if (declared.length === 0 || declared.some((type) => typeof type !== "string" || !TYPE_NAMES.has(type))) {
        throw new UnsupportedSchemaError(path, "type", `type must name JSON types, got ${JSON.stringify(schema.type)}`);
      }
      return [...new Set(declared as string[])];
    }
    const implied = Object.entries(FAMILY_KEYWORDS)
      .filter(([, keywords]) => keywords.some((keyword) => keyword in schema))
      .map(([family]) => family);
    return implied.length > 0 ? implied : ["any"];
  }

  #typed(type: string, schema: Schema, path: string): string {
    switch (type) {
      case "null":
        return '"null"';
      case "boolean":
        return '("true" | "false")';
      case "object":
        return this.#object(schema, path);
      case "array":
        return this.#array(schema, path);
      case "string":
        return this.#string(schema, path);
      case "integer":
        return this.#integer(schema, path);
      case "number":
        return this.#number(schema, path);
      default:
        return anyValue(this.builder).value;
    }
  }

  #object(schema: Schema, path: string): string {
    const properties = optionalSchemaMap(schema.properties, path, "properties");
    const names = Object.keys(properties);
    const required = new Set(this.#strict ? names : stringArray(schema.required, path, "required"));
    for (const name of required) {
      if (!Object.hasOwn(properties, name)) {
        throw new UnsupportedSchemaError(path, "required", `${JSON.stringify(name)} is required but not declared in properties`);
      }
    }
    const minimum = count(schema.minProperties, path, "minProperties") ?? 0;
    const maximum = count(schema.maxProperties, path, "maxProperties");
    // Undeclared properties are never written beside declared ones. Without declared properties an
    // object is free-form, unless strict mode makes additionalProperties false by default, as OpenAI does.
    const additional = schema.unevaluatedProperties === false ? false : (schema.additionalProperties ?? (names.length === 0 && !this.#strict));
    if (typeof additional !== "boolean" && !isSchema(additional)) {
      throw new UnsupportedSchemaError(path, "additionalProperties", "additionalProperties must be a schema or a boolean");
    }
    if (names.length === 0) {
      if (additional === false) {
        if (minimum > 0) throw new UnsupportedSchemaError(path, "minProperties", "no property is allowed, so minProperties cannot be met");
        return literal("{}");
      }
      // Generated keys may repeat, and a repeated key counts once after parsing.
      if (minimum > 1) throw new UnsupportedSchemaError(path, "minProperties", "minProperties above 1 needs declared properties");
      const value = additional === true ? anyValue(this.builder).value : this.visit(additional, `${path}/additionalProperties`);
      const member = `${anyString(this.builder)} ${literal(": ")} ${value}`;
      if (maximum === 0) return literal("{}");
      const members = `${member} ${repeat(`${literal(", ")} ${member}`, Math.max(0, minimum - 1), maximum === null ? null : maximum - 1)}`;
      return minimum === 0 ? `("{" (${members})? "}")` : `("{" ${members} "}")`;
    }
    if (minimum > required.size)
      throw new UnsupportedSchemaError(path, "minProperties", "minProperties above the number of required properties is not supported");
    if (maximum !== null && maximum < names.length)
      throw new UnsupportedSchemaError(path, "maxProperties", "maxProperties below the number of properties is not supported");
    // rest[i]: what may follow once something is written, from property i on;
    // first[i]: what may come when nothing is written yet, from property i on.
    const members = names.map(
      (name) => `(${literal(`${JSON.stringify(name)}: `)} ${this.visit(properties[name], `${path}/properties/${pointerEscape(name)}`)})`,
    );
    const hint = path.split("/").at(-1) ?? "object";
    let rest = '""';
    let first = '""';
    for (let index = names.length - 1; index >= 0; index--) {
      const isRequired = required.has(names[index]);
      const following = rest;
      const restBody = sequence([isRequired ? `${literal(", ")} ${members[index]}` : `(${literal(", ")} ${members[index]})?`, following])!;
      const firstBody = isRequired ? sequence([members[index], following])! : `${sequence([members[index], following])} | ${first}`;
      rest = index === 0 ? rest : this.builder.rule(`${hint}_rest_${index}`, restBody);
      first = this.builder.rule(`${hint}_from_${index}`, firstBody);
    }
    return `("{" ${first} "}")`;
  }

  #array(schema: Schema, path: string): string {
    const tuple = Array.isArray(schema.items);
    const prefix = tuple ? schemaArray(schema.items, path, "items") : "prefixItems" in schema ? schemaArray(schema.prefixItems, path, "prefixItems") : [];
    const prefixKeyword = tuple ? "items" : "prefixItems";
    let rest: unknown = tuple ? (schema.additionalItems ?? true) : schema.items;
    if (rest === undefined && schema.unevaluatedItems === false) rest = false;
    const minimum = count(schema.minItems, path, "minItems") ?? 0;
    let maximum = count(schema.maxItems, path, "maxItems");
    if (maximum !== null && minimum > maximum) throw new UnsupportedSchemaError(path, "minItems", "minItems is above maxItems");
    if (schema.uniqueItems === true && (maximum === null || maximum > 1)) throw new UnsupportedSchemaError(path, "uniqueItems", "uniqueItems is not supported");
    if (minimum > MAX_ITEMS) throw new UnsupportedSchemaError(path, "minItems", `minItems above ${MAX_ITEMS} is not supported`);
    if (maximum !== null && maximum > MAX_ITEMS) maximum = MAX_ITEMS;
    const written = Math.min(prefix.length, maximum ?? prefix.length);
    // Without `items`, items past prefixItems may be anything; none are written unless needed.
    if (rest === undefined) rest = prefix.length === 0 || minimum > written;
    const items = prefix.slice(0, written).map((item, index) => this.visit(item, `${path}/${prefixKeyword}/${index}`));
    if (rest === false) {
      if (minimum > written) throw new UnsupportedSchemaError(path, "minItems", "minItems needs more items than the schema allows");
      return written === 0 ? literal("[]") : `("[" ${items.join(` ${literal(", ")} `)} "]")`;
    }
    const extra = this.visit(rest, tuple ? `${path}/additionalItems` : `${path}/items`);
    const extraMinimum = Math.max(0, minimum - written);
    const extraMaximum = maximum === null ? null : maximum - written;
    if (written > 0) {
      const more = extraMaximum === 0 ? '""' : repeat(`${literal(", ")} ${extra}`, extraMinimum, extraMaximum);
      return `("[" ${items.join(` ${literal(", ")} `)} ${more} "]")`;
    }
    if (extraMaximum === 0) return literal("[]");
    const list = `${extra} ${repeat(`${literal(", ")} ${extra}`, Math.max(0, extraMinimum - 1), extraMaximum === null ? null : extraMaximum - 1)}`;
    return extraMinimum === 0 ? `("[" (${list})? "]")` : `("[" ${list} "]")`;
  }

  #string(schema: Schema, path: string): string {
    const minimum = count(schema.minLength, path, "minLength");
    const maximum = count(schema.maxLength, path, "maxLength");
    const lengths = minimum !== null || maximum !== null;
    if ("format" in schema && typeof schema.format === "string") {
      const pattern = FORMAT_PATTERNS[schema.format];
      if (pattern === undefined && UNSUPPORTED_FORMATS.has(schema.format)) {
        throw new UnsupportedSchemaError(
          path,
          "format",
          `format ${JSON.stringify(schema.format)} is not supported; supported: ${Object.keys(FORMAT_PATTERNS).join(", ")}`,
        );
      }
      if (pattern !== undefined) {
        if (lengths || "pattern" in schema)
          throw new UnsupportedSchemaError(path, "format", "format together with pattern, minLength or maxLength is not supported");
        return this.#patternString(pattern, `format ${schema.format}`, path, "format");
      }
    }
    if ("pattern" in schema) {
      if (typeof schema.pattern !== "string") throw new UnsupportedSchemaError(path, "pattern", "pattern must be a string");
      if (lengths) throw new UnsupportedSchemaError(path, "pattern", "pattern together with minLength or maxLength is not supported");
      return this.#patternString(schema.pattern, `pattern ${schema.pattern}`, path, "pattern");
    }
    if (lengths) {
      const low = minimum ?? 0;
      if (maximum !== null && low > maximum) throw new UnsupportedSchemaError(path, "minLength", "minLength is above maxLength");
      for (const [keyword, value] of [
        ["minLength", low],
        ["maxLength", maximum ?? 0],
      ] as const) {
        if (value > MAX_COUNTED_CHARACTERS) throw new UnsupportedSchemaError(path, keyword, `${keyword} above ${MAX_COUNTED_CHARACTERS} is not supported`);
      }
      return countedJsonString(this.builder, low, maximum);
    }
    return anyString(this.builder);
  }

  #patternString(pattern: string, key: string, path: string, keyword: string): string {
    let string: string | null;
    try {
      string = jsonStringOf(this.builder, patternAutomaton(parseRegex(pattern)), key);
    } catch (error) {
      if (error instanceof UnsupportedPatternError) throw new UnsupportedSchemaError(path, keyword, `pattern ${JSON.stringify(pattern)}: ${error.message}`);
      throw error;
    }
    if (string === null) throw new UnsupportedSchemaError(path, keyword, `pattern ${JSON.stringify(pattern)} matches no string`);
    return string;
  }

  #integer(schema: Schema, path: string): string {
    const bounds = this.#bounds(schema, path);
    if (bounds === null) return builderShared(this.builder, "json_integer", ANY_INTEGER);
    const ceil = (value: number) => BigInt(Math.ceil(value));
    const floor = (value: number) => BigInt(Math.floor(value));
    const low = bounds.min === null ? null : bounds.min.inclusive ? ceil(bounds.min.value) : floor(bounds.min.value) + 1n;
    const high = bounds.max === null ? null : bounds.max.inclusive ? floor(bounds.max.value) : ceil(bounds.max.value) - 1n;
    const range = integerRange(this.builder, low, high);
    if (range === null) throw new UnsupportedSchemaError(path, "minimum", "no integer (of at most 15 digits) lies within the bounds");
    return range;
  }

  #number(schema: Schema, path: string): string {
    const bounds = this.#bounds(schema, path);
    if (bounds === null) return builderShared(this.builder, "json_number", ANY_NUMBER);
    const range = numberRange(this.builder, bounds.min, bounds.max);
    if (range === null) throw new UnsupportedSchemaError(path, "minimum", "no number within ±999999999.999999 with at most 6 decimals lies within the bounds");
    return range;
  }

  // minimum/maximum/exclusive*, in the 2019+ form or draft 4's boolean one; null when unbounded.
  #bounds(schema: Schema, path: string): { min: NumberBound | null; max: NumberBound | null } | null {
    if ("multipleOf" in schema && !(schema.multipleOf === 1 && schema.type === "integer")) {
      throw new UnsupportedSchemaError(path, "multipleOf", "multipleOf is not supported");
    }
    const side = (inclusiveKeyword: string, exclusiveKeyword: string, tighter: (a: number, b: number) => boolean): NumberBound | null => {
      let bound: NumberBound | null = null;
      const inclusive = schema[inclusiveKeyword];
      const exclusive = schema[exclusiveKeyword];
      if (inclusive !== undefined) {
        if (typeof inclusive !== "number" || !Number.isFinite(inclusive))
          throw new UnsupportedSchemaError(path, inclusiveKeyword, `${inclusiveKeyword} must be a number`);
        bound = { value: inclusive, inclusive: exclusive !== true };
      }
      if (typeof exclusive === "number") {
        if (!Number.isFinite(exclusive)) throw new UnsupportedSchemaError(path, exclusiveKeyword, `${exclusiveKeyword} must be a number`);
        if (bound === null || tighter(exclusive, bound.value) || exclusive === bound.value) bound = { value: exclusive, inclusive: false };
      } else if (exclusive !== undefined && typeof exclusive !== "boolean") {
        throw new UnsupportedSchemaError(path, exclusiveKeyword, `${exclusiveKeyword} must be a number`);
      }
      return bound;
    };
    const min = side("minimum", "exclusiveMinimum", (a, b) => a > b);
    const max = side("maximum", "exclusiveMaximum", (a, b) => a < b);
    return min === null && max === null ? null : { min, max };
  }
}

function builderShared(builder: GrammarBuilder, name: string, body: string): string {
  return builder.shared(name, () => body);
}

function isSchema(value: unknown): value is Schema {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function schemaArray(value: unknown, path: string, keyword: string): unknown[] {
  if (!Array.isArray(value) || value.length === 0) throw new UnsupportedSchemaError(path, keyword, `${keyword} must be a non-empty array of schemas`);
  return value;
}

function optionalSchemaMap(value: unknown, path: string, keyword: string): Schema {
  if (value === undefined) return {};
  if (!isSchema(value)) throw new UnsupportedSchemaError(path, keyword, `${keyword} must be an object of schemas`);
  return value;
}

function stringArray(value: unknown, path: string, keyword: string): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || value.some((item) => typeof item !== "string"))
    throw new UnsupportedSchemaError(path, keyword, `${keyword} must be an array of strings`);
  return value;
}

function count(value: unknown, path: string, keyword: string): number | null {
  if (value === undefined) return null;
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0)
    throw new UnsupportedSchemaError(path, keyword, `${keyword} must be a non-negative integer`);
  return value;
}

function pointerEscape(name: string): string {
  return name.replaceAll("~", "~0").replaceAll("/", "~1");
}

function jsonTypeOf(value: unknown): JsonType {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  const type = typeof value;
  return type === "boolean" || type === "string" || type === "number" ? type : "object";
}

function matchesTypes(value: unknown, types: ReadonlySet<string>): boolean {
  if (types.has("any")) return true;
  if (typeof value === "number" && Number.isInteger(value) && types.has("integer")) return true;
  return types.has(jsonTypeOf(value));
}

/** A value's JSON text in the grammar's layout: ", " between members and items, ": " after keys. */
export function jsonText(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(jsonText).join(", ")}]`;
  if (isSchema(value)) {
    return `{${Object.entries(value)
      .map(([key, item]) => `${JSON.stringify(key)}: ${jsonText(item)}`)
      .join(", ")}}`;
  }
  return JSON.stringify(value);
}
