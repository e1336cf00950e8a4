/**
 * OpenAI's cursor pages, as every list of the public API answers them: `data` in the list's
 * order, the ids of the page's first and last items, and `has_more`. The next page is
 * `?after={last_id}`; `limit` sets the page size, from 1 to the list's maximum.
 */
import { z } from "zod";

/** The page schema of a list of `item`. */
export function listPageSchema<Item extends z.ZodType>(item: Item) {
  return z.object({
    object: z.literal("list"),
    data: z.array(item),
    first_id: z.string().nullable().describe("id of the first item of this page; null when the page is empty"),
    last_id: z.string().nullable().describe("id of the last item of this page: the `after` of the next page"),
    has_more: z.boolean().describe("whether items follow this page"),
  });
}

/** One page of a list: the schema's own type, so a route typed by it answers what the document describes. */
export type ListPage<Item> = z.output<ReturnType<typeof listPageSchema<z.ZodType<Item>>>>;

/** Where a page starts and how many items it holds at most. */
export interface PageParams {
  after?: string;
  limit?: number;
}

/** Page sizes per list: what a request without `limit` gets, and the most it may ask for. */
export const PAGE_LIMITS = {
  models: { fallback: 100, max: 1000 },
  adapters: { fallback: 20, max: 100 },
  files: { fallback: 10_000, max: 10_000 }, // OpenAI's
  jobs: { fallback: 20, max: 100 },
  events: { fallback: 20, max: 100 },
  checkpoints: { fallback: 10, max: 100 },
  keys: { fallback: 20, max: 100 },
  webhooks: { fallback: 20, max: 100 },
  deliveries: { fallback: 20, max: 100 },
} as const satisfies Record<string, { fallback: number; max: number }>;

export type ListName = keyof typeof PAGE_LIMITS;
