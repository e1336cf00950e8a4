// Many clients send `null` for "not given"; the protocol's schemas treat it like an absent key.
import type { z } from "zod";

/** `schema`, or null or absent, read as undefined. */
export function optional<Schema extends z.ZodType>(schema: Schema) {
  return schema.nullish().transform((value) => value ?? undefined);
}
