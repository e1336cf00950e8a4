import { createHash } from "node:crypto";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdapterNotFoundError, DirectoryAdapterStore, HttpAdapterStore } from "./adapter-store.ts";

const bytesOf = (text: string) => new TextEncoder().encode(text);

describe("DirectoryAdapterStore", () => {
  let directory: string;
  let store: DirectoryAdapterStore;
  beforeAll(async () => {
    directory = await mkdtemp(join(tmpdir(), "adapter-store-"));
    store = new DirectoryAdapterStore(join(directory, "adapters"));
  });
  afterAll(() => rm(directory, { recursive: true, force: true }));

  it("round-trips bytes and overwrites atomically, leaving no temp files", async () => {
    await store.write("tenant-1/support:v2", bytesOf("first"));
    await store.write("tenant-1/support:v2", bytesOf("second"));
    expect(new TextDecoder().decode(await store.read("tenant-1/support:v2"))).toBe("second");
    expect(await readdir(store.directory)).toEqual(["tenant-1%2Fsupport%3Av2.safetensors"]);
  });

  it("throws AdapterNotFoundError with the id for an absent adapter", async () => {
    const error = await store.read("nobody/none").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AdapterNotFoundError);
    expect((error as AdapterNotFoundError).id).toBe("nobody/none");
  });

  it("refuses ids that could name a path outside the directory or are malformed", async () => {
    for (const id of ["..", "../evil", "a/../../evil", "./x", "a/./b", "", "a b", "a\\..\\b", "a%2F..", "x".repeat(201)]) {
      await expect(store.write(id, bytesOf("x")), id).rejects.toThrow(/invalid adapter id/);
      await expect(store.read(id), id).rejects.toThrow(/invalid adapter id/);
    }
  });

  it("keeps ids with slashes and colons as flat files inside the directory", async () => {
    await store.write("/abs/path", bytesOf("a"));
    await store.write("c:..x", bytesOf("b"));
    expect(store.pathFor("/abs/path")).toBe(join(store.directory, "%2Fabs%2Fpath.safetensors"));
    expect((await readdir(store.directory)).sort()).toEqual(["%2Fabs%2Fpath.safetensors", "c%3A..x.safetensors", "tenant-1%2Fsupport%3Av2.safetensors"]);
    expect((await readdir(directory)).sort()).toEqual(["adapters"]);
  });
});

describe("HttpAdapterStore", () => {
  const secret = "runner-secret";
  const blobs = new Map<string, Uint8Array>([
    ["tenant/a:1", bytesOf("blob-a")],
    ["tenant/checked", bytesOf("blob-checked")],
    ["tenant/tampered", bytesOf("blob-tampered")],
  ]);
  const requestedPaths: string[] = [];
  let server: Server;
  let baseUrl: string;

  beforeAll(async () => {
    server = createServer((request, response) => {
      requestedPaths.push(request.url ?? "");
      if (request.headers.authorization !== `Bearer ${secret}`) return void response.writeHead(401).end("unauthorized");
      const match = /^\/internal\/adapters\/([^/]+)\/blob$/.exec(request.url ?? "");
      if (request.method !== "GET" || match === null) return void response.writeHead(400).end("bad request");
      const id = decodeURIComponent(match[1]);
      if (id === "tenant/broken") return void response.writeHead(500).end("database down");
      const blob = blobs.get(id);
      if (blob === undefined) return void response.writeHead(404).end("no such adapter");
      const headers: Record<string, string> = { "content-type": "application/octet-stream" };
      if (id === "tenant/checked") headers["x-content-sha256"] = createHash("sha256").update(blob).digest("hex");
      if (id === "tenant/tampered") headers["x-content-sha256"] = createHash("sha256").update("something else").digest("hex");
      response.writeHead(200, headers).end(blob);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  });
  afterAll(() => new Promise<void>((resolve, reject) => server.close((error) => (error ? reject(error) : resolve()))));

  it("fetches a blob with the bearer secret, the id encoded as one path segment", async () => {
    const store = new HttpAdapterStore({ baseUrl, secret });
    expect(new TextDecoder().decode(await store.read("tenant/a:1"))).toBe("blob-a");
    expect(requestedPaths.at(-1)).toBe("/internal/adapters/tenant%2Fa%3A1/blob");
  });

  it("fails with the status when the secret is wrong (the server answers 401)", async () => {
    await expect(new HttpAdapterStore({ baseUrl, secret: "wrong" }).read("tenant/a:1")).rejects.toThrow(/answered 401.*unauthorized/);
  });

  it("maps 404 to AdapterNotFoundError and other errors to an Error with the status", async () => {
    const store = new HttpAdapterStore({ baseUrl, secret });
    const missing = await store.read("tenant/unknown").catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(AdapterNotFoundError);
    expect((missing as AdapterNotFoundError).id).toBe("tenant/unknown");
    await expect(store.read("tenant/broken")).rejects.toThrow(/answered 500.*database down/);
  });

  it("checks the whole blob against x-content-sha256 when the server sends it", async () => {
    const store = new HttpAdapterStore({ baseUrl, secret });
    expect(new TextDecoder().decode(await store.read("tenant/checked"))).toBe("blob-checked");
    await expect(store.read("tenant/tampered")).rejects.toThrow(/blob sha256 is [0-9a-f]{64} but x-content-sha256 says/);
  });

  it("refuses invalid ids before any request and times out a stalled server", async () => {
    const before = requestedPaths.length;
    await expect(new HttpAdapterStore({ baseUrl, secret }).read("../x")).rejects.toThrow(/invalid adapter id/);
    expect(requestedPaths.length).toBe(before);
    const stalled = createServer(() => {}); // accepts and never answers
    await new Promise<void>((resolve) => stalled.listen(0, "127.0.0.1", resolve));
    try {
      const url = `http://127.0.0.1:${(stalled.address() as AddressInfo).port}`;
      await expect(new HttpAdapterStore({ baseUrl: url, secret, timeoutMs: 100 }).read("a")).rejects.toThrow(/timeout|aborted/i);
    } finally {
      stalled.closeAllConnections();
      await new Promise((resolve) => stalled.close(resolve));
    }
  });
});
