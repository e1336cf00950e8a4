/**
 * OpenAI's cursor pages: `?after={id}&limit={n}` in, `{object: "list", data, first_id, last_id,
 * has_more}` out. Routes fetch `limit + 1` rows so `has_more` needs no second query.
 */
import { z } from "zod";

/** The `after` and `limit` query parameters (limit 1..`max`, default `fallback`). */
export function pageQuerySchema(fallback: number, max: number) {
  return z.object({
    after: z.string().min(1).max(200).optional(),
    limit: z.coerce.number().int().min(1).max(max).default(fallback),
  });
}

/** A page of API objects from `limit + 1` fetched rows. */
export function listPage<Item extends { id: string }>(rows: Item[], limit: number) {
  const data = rows.slice(0, limit);
  return { object: "list" as const, data, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null, has_more: rows.length > limit };
}
