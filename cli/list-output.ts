/**
 * How `pica … list` prints a paged list: every item of every page, or `--limit N` items from
 * `--after ID`; when items remain unprinted it says so on stderr, with the `--after` that
 * continues, so stdout holds only the items.
 */
import type { ListPage, PageParams, PicaClient } from "../src/client/pica-client.ts";

export interface ListOptions {
  limit?: number; // at most this many items; all when unset
  after?: string; // start after this id
  pageSize: number; // items per request when printing all (the list's maximum)
  command: string; // how the hint names the command, e.g. "pica adapters list"
}

/** Prints `line(item)` for the items `list` pages through; returns how many were printed. */
export async function printList<Item extends { id: string }>(
  client: PicaClient,
  list: (params: PageParams) => Promise<ListPage<Item>>,
  line: (item: Item) => string,
  options: ListOptions,
  out: (text: string) => void,
  note: (text: string) => void,
): Promise<number> {
  const wanted = options.limit ?? Number.POSITIVE_INFINITY;
  let printed = 0;
  let lastPrinted: string | null = null;
  for await (const page of client.pages(list, { after: options.after, limit: Math.min(wanted, options.pageSize) })) {
    const shown = page.data.slice(0, wanted - printed);
    for (const item of shown) {
      out(line(item));
      lastPrinted = item.id;
      printed++;
    }
    if (printed >= wanted) {
      if ((shown.length < page.data.length || page.has_more) && lastPrinted !== null)
        note(`more items follow; continue with: ${options.command} --after ${lastPrinted}`);
      return printed;
    }
  }
  return printed;
}
