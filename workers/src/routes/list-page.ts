/**
 * OpenAI's cursor pages: `?after={id}&limit={n}` in, `{object: "list", data, first_id, last_id,
 * has_more}` out (src/protocol/list-page.ts). Routes fetch `limit + 1` rows so `has_more` needs
 * no second query. A cursor is an item's id; one the caller cannot see (unknown, deleted, or
 * another tenant's) is a 400 naming `after`, the same answer for each.
 */
import { z } from "zod";
import { badRequest } from "../../../src/errors.ts";
import { PAGE_LIMITS, type ListName, type ListPage } from "../../../src/protocol/list-page.ts";

/** The `after` and `limit` query parameters (limit 1..`max`, default `fallback`). */
export function pageQuerySchema(fallback: number, max: number) {
  return z.object({
    after: z.string().min(1).max(300).optional(),
    limit: z.coerce.number().int().min(1).max(max).default(fallback),
  });
}

/** The query parameters of the list `name`, with its page sizes. */
export function listQuerySchema(name: ListName) {
  return pageQuerySchema(PAGE_LIMITS[name].fallback, PAGE_LIMITS[name].max);
}

/** A page of API objects from `limit + 1` fetched rows. */
export function listPage<Item extends { id: string }>(rows: Item[], limit: number): ListPage<Item> {
  const data = rows.slice(0, limit);
  return { object: "list", data, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null, has_more: rows.length > limit };
}

/**
 * The row the `after` cursor names, found by `find` among what the caller may list; null when
 * there is no cursor, a 400 naming `after` when nothing listable has that id.
 */
export async function cursorRow<Row>(after: string | undefined, noun: string, find: (id: string) => Promise<Row | null>): Promise<Row | null> {
  if (after === undefined) return null;
  const row = await find(after);
  if (row === null) throw badRequest(`Invalid value for 'after': there is no ${noun} ${JSON.stringify(after)} in this list.`, "after", "invalid_cursor");
  return row;
}
