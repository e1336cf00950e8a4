import { describe, expect, it } from "vitest";
import { jsonSchemaGrammar } from "./json-schema-grammar.ts";
import { UnsupportedSchemaError } from "./unsupported-schema-error.ts";

const object = (properties: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({ type: "object", properties, ...extra });

function refusal(schema: unknown, strict = false): UnsupportedSchemaError {
  try {
    jsonSchemaGrammar(schema, { strict });
  } catch (error) {
    if (error instanceof UnsupportedSchemaError) return error;
    throw error;
  }
  throw new Error(`accepted ${JSON.stringify(schema)}`);
}

describe("schemas the grammar cannot honour are refused, naming where and which keyword", () => {
  const cases: [string, unknown, string, string][] = [
    ["not", object({ a: { not: { type: "string" } } }), "#/properties/a", "not"],
    ["if/then/else", object({ a: { type: "integer" } }, JSON.parse('{"if": {"required": ["a"]}, "then": {"required": ["a"]}}')), "#", "if"],
    ["patternProperties", object({}, { patternProperties: { "^x": { type: "string" } } }), "#", "patternProperties"],
    ["propertyNames", object({}, { propertyNames: { maxLength: 3 } }), "#", "propertyNames"],
    ["dependentRequired", object({ a: {}, b: {} }, { dependentRequired: { a: ["b"] } }), "#", "dependentRequired"],
    ["unevaluatedProperties other than false", object({ a: {} }, { unevaluatedProperties: true }), "#", "unevaluatedProperties"],
    ["contains", object({ list: { type: "array", contains: { const: 1 } } }), "#/properties/list", "contains"],
    ["uniqueItems", object({ list: { type: "array", items: { type: "integer" }, uniqueItems: true } }), "#/properties/list", "uniqueItems"],
    ["multipleOf", object({ n: { type: "number", multipleOf: 0.5 } }), "#/properties/n", "multipleOf"],
    ["allOf of two schemas", object({ a: { allOf: [{ type: "string" }, { maxLength: 3 }] } }), "#/properties/a", "allOf"],
    ["oneOf whose options overlap", object({ a: { oneOf: [{ type: "string" }, { type: "string", maxLength: 3 }] } }), "#/properties/a", "oneOf"],
    ["a keyword beside anyOf", object({ a: { type: "string", anyOf: [{ maxLength: 2 }, { minLength: 5 }] } }), "#/properties/a", "type"],
    ["a remote $ref", object({ a: { $ref: "https://example.com/schema.json" } }), "#/properties/a", "$ref"],
    ["a $ref to nothing", object({ a: { $ref: "#/$defs/missing" } }), "#/properties/a", "$ref"],
    ["a keyword beside $ref", object({ a: { $ref: "#/$defs/s", maxLength: 2 } }, { $defs: { s: { type: "string" } } }), "#/properties/a", "maxLength"],
    ["lookahead in a pattern", object({ a: { type: "string", pattern: "^(?=a)\\w+$" } }), "#/properties/a", "pattern"],
    ["a backreference in a pattern", object({ a: { type: "string", pattern: "(a)\\1" } }), "#/properties/a", "pattern"],
    ["a word boundary in a pattern", object({ a: { type: "string", pattern: "\\bword\\b" } }), "#/properties/a", "pattern"],
    ["an anchor inside a pattern", object({ a: { type: "string", pattern: "a$b" } }), "#/properties/a", "pattern"],
    ["pattern with minLength", object({ a: { type: "string", pattern: "a+", minLength: 2 } }), "#/properties/a", "pattern"],
    ["a format validators check but the grammar lacks", object({ a: { type: "string", format: "uri-template" } }), "#/properties/a", "format"],
    ["format with maxLength", object({ a: { type: "string", format: "date", maxLength: 10 } }), "#/properties/a", "format"],
    ["a required property that is not declared", object({ a: {} }, { required: ["b"] }), "#", "required"],
    ["minProperties above the required ones", object({ a: {}, b: {} }, { required: ["a"], minProperties: 2 }), "#", "minProperties"],
    ["a root that is not an object", { type: "string" }, "#", "type"],
    ["a root that may be an array", { type: ["object", "array"] }, "#", "type"],
    ["a schema that is not a schema", 42, "#", ""],
    ["an unknown type", object({ a: { type: "strng" } }), "#/properties/a", "type"],
    ["false as a property schema", object({ a: false }), "#/properties/a", ""],
    ["a negative maxLength", object({ a: { type: "string", maxLength: -1 } }), "#/properties/a", "maxLength"],
    ["required that is not a list", object({ a: {} }, { required: "a" }), "#", "required"],
    ["an empty enum", object({ a: { enum: [] } }), "#/properties/a", "enum"],
    ["an enum with no value of its type", object({ a: { type: "string", enum: [1, 2] } }), "#/properties/a", "enum"],
    ["integer bounds with no integer between", object({ n: { type: "integer", minimum: 1.2, maximum: 1.8 } }), "#/properties/n", "minimum"],
    ["minItems above maxItems", object({ a: { type: "array", minItems: 3, maxItems: 2 } }), "#/properties/a", "minItems"],
    ["$id below the root", object({ a: { $id: "https://example.com/a", type: "string" } }), "#/properties/a", "$id"],
    ["inside a $ref target", object({ a: { $ref: "#/$defs/bad" } }, { $defs: { bad: { type: "string", pattern: "(?<=x)y" } } }), "#/$defs/bad", "pattern"],
  ];

  it.each(cases)("%s", (_name, schema, path, keyword) => {
    const error = refusal(schema);
    expect(error.path).toBe(path);
    expect(error.keyword).toBe(keyword);
    expect(error.message).toContain(keyword === "" ? path : `${path}/${keyword}`);
  });
});

describe("schemas the grammar honours", () => {
  it.each([
    [
      "annotations and unknown keywords",
      object(
        { a: { type: "string", title: "A", description: "d", default: "x", examples: ["y"], "x-extra": 1 } },
        { $schema: "https://json-schema.org/draft/2020-12/schema", $comment: "c" },
      ),
    ],
    ["formats no validator checks", object({ n: { type: "integer", format: "int32" }, s: { type: "string", format: "markdown" } })],
    [
      "a discriminated oneOf",
      object({
        shape: {
          oneOf: [
            object({ kind: { const: "circle" }, r: { type: "number" } }, { required: ["kind", "r"] }),
            object({ kind: { const: "square" }, side: { type: "number" } }, { required: ["kind", "side"] }),
          ],
        },
      }),
    ],
    ["a oneOf of different types", object({ v: { oneOf: [{ type: "string" }, { type: "integer" }, { type: "null" }] } })],
    [
      "recursion through $ref",
      {
        $ref: "#/$defs/node",
        $defs: { node: object({ value: { type: "integer" }, next: { anyOf: [{ $ref: "#/$defs/node" }, { type: "null" }] } }, { required: ["value", "next"] }) },
      },
    ],
    [
      "allOf of one schema beside a description",
      object({ a: { allOf: [{ $ref: "#/$defs/s" }], description: "wrapped" } }, { $defs: { s: { type: "string" } } }),
    ],
    ["draft 4 exclusive bounds", object({ n: { type: "number", minimum: 0, exclusiveMinimum: true } })],
    ["draft 7 tuples", object({ pair: { type: "array", items: [{ type: "string" }, { type: "integer" }], additionalItems: false } })],
  ])("%s", (_name, schema) => {
    expect(jsonSchemaGrammar(schema, { strict: false })).toMatch(/^root ::= /);
  });
});
