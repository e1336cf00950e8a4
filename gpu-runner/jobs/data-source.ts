/**
 * A job's training data: inline text, or a URL the runner downloads once (then keeps beside the
 * job, so a resumed job never downloads again); also the trainer state a moved job resumes from. The runner secret goes only to trusted origins
 * (the control plane's), never to an arbitrary URL a job names.
 */
import { type DataSource, runnerAuthorization } from "../../src/protocol/runner.ts";

export interface DataFetchOptions {
  secret: string | null; // sent as a bearer token to trusted origins
  trustedOrigins: readonly string[]; // e.g. the edge's origin
  maxBytes: number;
  timeoutMs?: number;
  fetch?: typeof fetch;
  signal?: AbortSignal;
}

/** The data could not be read: not found, too big, not UTF-8, or the server failed. */
export class DataSourceError extends Error {
  override readonly name = "DataSourceError";
}

/** The JSONL text of a data source. */
export async function readDataSource(source: DataSource, what: string, options: DataFetchOptions): Promise<string> {
  if ("content" in source) {
    if (Buffer.byteLength(source.content) > options.maxBytes) throw new DataSourceError(`${what} is larger than ${options.maxBytes} bytes`);
    return source.content;
  }
  const bytes = await downloadBytes(source.url, what, options);
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new DataSourceError(`${what} is not valid UTF-8`);
  }
}

/** The bytes at `url` (at most `maxBytes`), with the secret only for trusted origins. */
export async function downloadBytes(source: string, what: string, options: DataFetchOptions): Promise<Uint8Array> {
  const url = new URL(source);
  const headers: Record<string, string> = {};
  if (options.secret !== null && options.trustedOrigins.includes(url.origin)) Object.assign(headers, runnerAuthorization(options.secret));
  const timeout = AbortSignal.timeout(options.timeoutMs ?? 60_000);
  let response: Response;
  try {
    response = await (options.fetch ?? fetch)(url, { headers, signal: options.signal ? AbortSignal.any([options.signal, timeout]) : timeout });
  } catch (error) {
    throw new DataSourceError(`${what}: GET ${url.origin}${url.pathname} failed: ${(error as Error).message}`);
  }
  if (!response.ok) {
    await response.body?.cancel();
    throw new DataSourceError(`${what}: GET ${url.origin}${url.pathname} answered ${response.status}`);
  }
  const declared = Number(response.headers.get("content-length") ?? "0");
  if (declared > options.maxBytes) {
    await response.body?.cancel();
    throw new DataSourceError(`${what} is ${declared} bytes, more than the limit of ${options.maxBytes}`);
  }
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of response.body ?? []) {
    size += chunk.byteLength;
    if (size > options.maxBytes) throw new DataSourceError(`${what} is larger than the limit of ${options.maxBytes} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}
