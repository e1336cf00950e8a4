/** Validates a request body or query with a zod schema; a failure is a 400 naming the field. */
import type { z } from "zod";
import { fromZodError } from "../../../src/errors.ts";

export function parse<Schema extends z.ZodType>(schema: Schema, value: unknown): z.output<Schema> {
  const result = schema.safeParse(value, { reportInput: true });
  if (!result.success) throw fromZodError(result.error);
  return result.data;
}
