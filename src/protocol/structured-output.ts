// What a chat request may ask of its output's shape: `response_format` (free text, any JSON
// object, or JSON that validates against a schema) and `tools` with `tool_choice` (function calls
// whose arguments validate against each function's schema). The runner turns both into grammars
// that constrain decoding; here they are only validated and normalised.
import { z } from "zod";
import { optional } from "./optional.ts";

/** Most functions one request may offer (OpenAI's limit). */
export const MAX_TOOLS = 128;

// OpenAI's rule for function and schema names.
const nameSchema = z.string().regex(/^[a-zA-Z0-9_-]{1,64}$/, "must be 1 to 64 letters, digits, underscores or dashes");
const jsonSchemaObject = z.record(z.string(), z.unknown());

/** `response_format`, normalised: free text, any JSON object, or JSON valid against `schema`. */
export type ResponseFormat =
  | { type: "text" }
  | { type: "json_object" }
  | { type: "json_schema"; name: string; schema: Record<string, unknown>; strict: boolean };

export const responseFormatSchema = z
  .discriminatedUnion("type", [
    z.object({ type: z.literal("text") }),
    z.object({ type: z.literal("json_object") }),
    z.object({
      type: z.literal("json_schema"),
      json_schema: z.object({
        name: nameSchema,
        description: optional(z.string()),
        // OpenAI lets `schema` be left out, meaning any JSON object.
        schema: optional(jsonSchemaObject),
        strict: optional(z.boolean()),
      }),
    }),
  ])
  .transform((format): ResponseFormat => {
    if (format.type !== "json_schema") return { type: format.type };
    const { name, schema, strict } = format.json_schema;
    return { type: "json_schema", name, schema: schema ?? { type: "object" }, strict: strict ?? false };
  });

/** A function the model may call; `parameters` is the JSON schema of its arguments. */
export interface FunctionTool {
  name: string;
  description: string | undefined;
  parameters: Record<string, unknown>;
  strict: boolean;
}

const toolSchema = z
  .object({
    type: z.literal("function", { error: "only function tools are supported" }),
    function: z.object({
      name: nameSchema,
      description: optional(z.string()),
      // A function without parameters takes an empty object, as OpenAI's docs say.
      parameters: optional(jsonSchemaObject),
      strict: optional(z.boolean()),
    }),
  })
  .transform(
    ({ function: fn }): FunctionTool => ({
      name: fn.name,
      description: fn.description,
      parameters: fn.parameters ?? { type: "object", properties: {} },
      strict: fn.strict ?? false,
    }),
  );

export const toolsSchema = z
  .array(toolSchema)
  .max(MAX_TOOLS)
  .superRefine((tools, ctx) => {
    const seen = new Set<string>();
    tools.forEach((tool, index) => {
      if (seen.has(tool.name)) ctx.addIssue({ code: "custom", path: [index, "function", "name"], message: `'${tool.name}' is offered twice` });
      seen.add(tool.name);
    });
  });

/** `tool_choice`, normalised: never call, may call, must call some function, or must call this one. */
export type ToolChoice = "none" | "auto" | "required" | { name: string };

export const toolChoiceSchema = z
  .union([z.enum(["none", "auto", "required"]), z.object({ type: z.literal("function"), function: z.object({ name: nameSchema }) })])
  .transform((choice): ToolChoice => (typeof choice === "string" ? choice : { name: choice.function.name }));

/** One function call the assistant made, as OpenAI returns it and as clients send it back. */
export const toolCallSchema = z.object({
  id: z.string(),
  type: z.literal("function"),
  function: z.object({ name: z.string(), arguments: z.string() }),
});
export type ToolCall = z.infer<typeof toolCallSchema>;
