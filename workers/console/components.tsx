/** Small pieces every console page uses: loading data, showing errors, times, sizes, copying. */
import { type Child, useCallback, useEffect, useRef, useState } from "hono/jsx/dom";
import type { ListPage, PageParams } from "../../src/client/pica-client.ts";
import { errorMessage } from "./session.ts";

/** Data loaded by `load` (again when `deps` change or on `reload`), with its error. */
export function useLoad<T>(load: () => Promise<T>, deps: unknown[]): { data: T | null; error: string | null; reload: () => void } {
  const [state, setState] = useState<{ data: T | null; error: string | null }>({ data: null, error: null });
  const [generation, setGeneration] = useState(0);
  useEffect(() => {
    let live = true;
    load().then(
      (data) => live && setState({ data, error: null }),
      (error) => live && setState((previous) => ({ data: previous.data, error: errorMessage(error) })),
    );
    return () => {
      live = false;
    };
  }, [...deps, generation]);
  return { ...state, reload: useCallback(() => setGeneration((g) => g + 1), []) };
}

/** A list as usePages reads it. */
export interface Pages<Item> {
  items: Item[] | null; // null until the first page arrives
  error: string | null;
  hasMore: boolean;
  loading: boolean;
  loadMore: () => void;
  reload: () => void;
}

/**
 * A list read page by page (newest first): the items so far, whether more follow, and how to read
 * more or start again. One read at a time; a read that a newer one (a reload) overtook is dropped.
 */
export function usePages<Item extends { id: string }>(list: (params: PageParams) => Promise<ListPage<Item>>, pageSize = 50): Pages<Item> {
  const [state, setState] = useState<{ items: Item[] | null; after: string | null; hasMore: boolean; error: string | null; loading: boolean }>({
    items: null,
    after: null,
    hasMore: false,
    error: null,
    loading: true,
  });
  const generation = useRef(0);
  const read = useCallback(async (after: string | null) => {
    const mine = ++generation.current;
    setState((previous) => ({ ...previous, loading: true }));
    try {
      const page = await list({ limit: pageSize, ...(after === null ? {} : { after }) });
      if (mine !== generation.current) return;
      setState((previous) => {
        const kept = after === null ? [] : (previous.items ?? []);
        const seen = new Set(kept.map((item) => item.id));
        return {
          items: [...kept, ...page.data.filter((item) => !seen.has(item.id))],
          after: page.last_id,
          hasMore: page.has_more,
          error: null,
          loading: false,
        };
      });
    } catch (error) {
      if (mine === generation.current) setState((previous) => ({ ...previous, error: errorMessage(error), loading: false }));
    }
  }, []);
  useEffect(() => void read(null), []);
  return {
    items: state.items,
    error: state.error,
    hasMore: state.hasMore,
    loading: state.loading,
    loadMore: () => {
      if (!state.loading) void read(state.after);
    },
    reload: () => void read(null),
  };
}

/** A table's header row; a column named "" holds the rows' actions (named for screen readers only). */
export function TableHead(props: { columns: string[] }) {
  return (
    <thead>
      <tr>
        {props.columns.map((column) => (
          <th scope="col">{column === "" ? <span class="visually-hidden">Actions</span> : column}</th>
        ))}
      </tr>
    </thead>
  );
}

/** A paged list as a table (or its error, "Loading…", or what an empty one says), with a button that reads the next page. */
export function PagedTable<Item>(props: { list: Pages<Item>; what: string; empty: Child; columns: string[]; row: (item: Item) => Child }) {
  const { list } = props;
  return (
    <>
      <ErrorNote error={list.error} />
      {list.items === null ? (
        <p>Loading…</p>
      ) : list.items.length === 0 ? (
        <p class="empty">{props.empty}</p>
      ) : (
        <table>
          <TableHead columns={props.columns} />
          <tbody>{list.items.map(props.row)}</tbody>
        </table>
      )}
      {list.hasMore ? (
        <button type="button" class="secondary more" disabled={list.loading} onClick={list.loadMore}>
          Show more {props.what}
        </button>
      ) : null}
    </>
  );
}

/** An error line, announced to screen readers. */
export function ErrorNote(props: { error: string | null }) {
  return props.error === null ? null : (
    <p class="error" role="alert">
      {props.error}
    </p>
  );
}

/** A unix time as a local date and time. */
export function Time(props: { seconds: number | null }) {
  if (props.seconds === null) return <span>–</span>;
  const date = new Date(props.seconds * 1000);
  return <time datetime={date.toISOString()}>{date.toLocaleString("en-GB", { dateStyle: "medium", timeStyle: "short" })}</time>;
}

/** Bytes as B, KiB or MiB. */
export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

/** A count with thousands separators. */
export function formatCount(value: number | null): string {
  return value === null ? "–" : value.toLocaleString("en");
}

/** A button that copies `text`, saying so for a moment. */
export function CopyButton(props: { text: string; label: string }) {
  const [copied, setCopied] = useState(false);
  const copy = async () => {
    await navigator.clipboard.writeText(props.text).catch(() => undefined);
    setCopied(true);
    setTimeout(() => setCopied(false), 1500);
  };
  return (
    <button type="button" class="secondary" aria-label={props.label} onClick={copy}>
      {copied ? "Copied" : "Copy"}
    </button>
  );
}

/** A delete button that asks once more before it acts; the question takes the keyboard's focus. */
export function DeleteButton(props: { what: string; onDelete: () => Promise<void> }) {
  const [armed, setArmed] = useState(false);
  const [busy, setBusy] = useState(false);
  const confirm = useRef<HTMLButtonElement | null>(null);
  useEffect(() => {
    if (armed) confirm.current?.focus();
  }, [armed]);
  useEffect(() => setArmed(false), [props.what]); // a button reused for another item asks afresh
  if (!armed)
    return (
      <button type="button" class="secondary" aria-label={`Delete ${props.what}`} onClick={() => setArmed(true)}>
        Delete
      </button>
    );
  return (
    <span class="confirm">
      <button
        type="button"
        class="danger"
        ref={confirm}
        disabled={busy}
        aria-label={`Really delete ${props.what}`}
        onClick={async () => {
          setBusy(true);
          await props.onDelete().finally(() => setBusy(false));
        }}
      >
        Really delete?
      </button>
      <button type="button" class="secondary" onClick={() => setArmed(false)}>
        Keep
      </button>
    </span>
  );
}

/** A job status as a coloured badge. */
export function StatusBadge(props: { status: string }) {
  return <span class={`badge status-${props.status}`}>{props.status.replace(/_/g, " ")}</span>;
}
