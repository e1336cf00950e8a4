/**
 * Where a runner fetches adapter files from: a directory on local disk (tests, single-box
 * deployments) or the control plane over HTTP. Both hand back the raw bytes; parsing and checking
 * them is the cache's job, so a store never trusts or interprets what it serves.
 */
import { createHash } from "node:crypto";
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { CONTENT_SHA256_HEADER, EDGE_PATHS, runnerAuthorization } from "../../src/protocol/runner.ts";
import { writeFileAtomic } from "../checkpoint/atomic-write.ts";

/** A source of adapter files by id. */
export interface AdapterStore {
  /** The adapter file's bytes; throws AdapterNotFoundError when the store has no such id. */
  read(id: string, signal?: AbortSignal): Promise<Uint8Array>;
}

/** The store has no adapter with this id. */
export class AdapterNotFoundError extends Error {
  override readonly name = "AdapterNotFoundError";
  constructor(readonly id: string) {
    super(`adapter ${JSON.stringify(id)} was not found`);
  }
}

const ADAPTER_ID = /^[A-Za-z0-9:._/-]{1,200}$/;

/** Throws unless `id` is 1–200 chars of [A-Za-z0-9:._/-] with no "." or ".." path segment. */
export function assertValidAdapterId(id: string): void {
  if (typeof id !== "string" || !ADAPTER_ID.test(id)) {
    throw new Error(`invalid adapter id ${JSON.stringify(id)}: must be 1-200 characters of A-Z a-z 0-9 : . _ / -`);
  }
  // Encoding already keeps ids inside the directory; refusing dot segments as well means an id that
  // looks like a path traversal is never served under any store, whatever its encoding.
  if (id.split("/").some((segment) => segment === "." || segment === "..")) {
    throw new Error(`invalid adapter id ${JSON.stringify(id)}: "." and ".." path segments are not allowed`);
  }
}

/** Adapters as `<directory>/<encoded id>.safetensors`; "/" and ":" are percent-encoded so every id is one flat file name. */
export class DirectoryAdapterStore implements AdapterStore {
  constructor(readonly directory: string) {}

  /** Path of the file for `id` (validated). */
  pathFor(id: string): string {
    assertValidAdapterId(id);
    // The id alphabet has no "%", so encodeURIComponent is injective here and leaves no separator.
    return join(this.directory, `${encodeURIComponent(id)}.safetensors`);
  }

  async read(id: string, signal?: AbortSignal): Promise<Uint8Array> {
    const path = this.pathFor(id);
    try {
      return new Uint8Array(await readFile(path, { signal }));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") throw new AdapterNotFoundError(id);
      throw error;
    }
  }

  /** Writes the file through a temp file + rename, so a concurrent reader sees the old or the new file, never half of one. */
  async write(id: string, bytes: Uint8Array): Promise<void> {
    const path = this.pathFor(id);
    await mkdir(this.directory, { recursive: true });
    await writeFileAtomic(path, bytes);
  }
}

/** How a runner reaches the control plane's adapter blobs. */
export interface HttpAdapterStoreOptions {
  baseUrl: string; // e.g. "https://edge.example"; no trailing slash needed
  secret: string; // sent as `Authorization: Bearer <secret>`
  timeoutMs?: number; // per request, default 30 s
  fetch?: typeof fetch; // injectable for tests; default the global fetch
}

/** Adapters served by the control plane at `GET {baseUrl}{EDGE_PATHS.adapterBlob(id)}`. */
export class HttpAdapterStore implements AdapterStore {
  private readonly baseUrl: string;

  constructor(private readonly options: HttpAdapterStoreOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
  }

  async read(id: string, signal?: AbortSignal): Promise<Uint8Array> {
    assertValidAdapterId(id);
    const url = `${this.baseUrl}${EDGE_PATHS.adapterBlob(encodeURIComponent(id))}`;
    const timeout = AbortSignal.timeout(this.options.timeoutMs ?? 30_000);
    const response = await (this.options.fetch ?? fetch)(url, {
      headers: runnerAuthorization(this.options.secret),
      signal: signal === undefined ? timeout : AbortSignal.any([signal, timeout]),
    });
    if (response.status === 404) {
      await response.body?.cancel();
      throw new AdapterNotFoundError(id);
    }
    if (!response.ok) {
      const detail = (await response.text().catch(() => "")).slice(0, 200);
      throw new Error(`adapter ${JSON.stringify(id)}: GET ${url} answered ${response.status} ${response.statusText}${detail ? `: ${detail}` : ""}`);
    }
    const bytes = new Uint8Array(await response.arrayBuffer());
    // The file's own tensors_sha256 only covers the tensors; this header covers the whole blob
    // (metadata included) in transit, when the server provides it.
    const expectedSha256 = response.headers.get(CONTENT_SHA256_HEADER);
    if (expectedSha256 !== null) {
      const actual = createHash("sha256").update(bytes).digest("hex");
      if (actual !== expectedSha256.trim().toLowerCase()) {
        throw new Error(`adapter ${JSON.stringify(id)}: blob sha256 is ${actual} but x-content-sha256 says ${expectedSha256}`);
      }
    }
    return bytes;
  }
}
