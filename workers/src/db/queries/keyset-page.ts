/**
 * Keyset paging by (created_at, id), shared by every list query. Unlike OFFSET, a page read after
 * rows were inserted neither repeats nor skips a row: the cursor is a row's key, not a position.
 */
import { type AnyColumn, and, asc, desc, eq, gt, lt, or, type SQL } from "drizzle-orm";

/** The order a list is read in; "newest first" pages backwards through time. */
export type PageOrder = "oldest first" | "newest first";

/** The two columns a list pages by; a drizzle table that has both can be passed as it is. */
export interface KeysetColumns {
  createdAt: AnyColumn;
  id: AnyColumn;
}

/** The key of the last row of the previous page. */
export interface PageCursor {
  createdAt: number;
  id: string;
}

/** Keyset (not OFFSET) so pages stay stable under inserts: the condition past `after` (none on page one) and the order. */
export function keysetPage(columns: KeysetColumns, order: PageOrder, after: PageCursor | null): { condition: SQL | undefined; orderBy: [SQL, SQL] } {
  const past = order === "oldest first" ? gt : lt;
  const direction = order === "oldest first" ? asc : desc;
  const condition =
    after === null ? undefined : or(past(columns.createdAt, after.createdAt), and(eq(columns.createdAt, after.createdAt), past(columns.id, after.id)));
  return { condition, orderBy: [direction(columns.createdAt), direction(columns.id)] };
}
