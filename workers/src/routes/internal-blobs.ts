/**
 * What runners download from the edge (runner secret): a job's training data, and adapter blobs
 * with their sha256 in `x-content-sha256` (the runner's HttpAdapterStore checks it). Runners act
 * for the edge, which only ever hands them ids of its own jobs, so these read by id alone.
 */
import { Hono } from "hono";
import { notFound } from "../../../src/errors.ts";
import { CONTENT_SHA256_HEADER, EDGE_PATHS, pathUnder } from "../../../src/protocol/runner.ts";
import { requireRunner } from "../auth/middleware.ts";
import { database } from "../db/client.ts";
import { findAdapterForRunner } from "../db/queries/adapters.ts";
import { findFileForRunner } from "../db/queries/files.ts";
import type { AppEnv } from "../env.ts";

/** Mounted at EDGE_PATHS.files. */
export const internalFileRoutes = new Hono<AppEnv>();
internalFileRoutes.use(requireRunner());

internalFileRoutes.get(pathUnder(EDGE_PATHS.files, EDGE_PATHS.fileContent(":id")), async (c) => {
  const row = await findFileForRunner(database(c.env.DB), c.req.param("id"));
  const blob = row === null ? null : await c.env.BLOBS.get(row.blobKey);
  if (blob === null) throw notFound(`No such file: ${c.req.param("id")}`, "file_id", "file_not_found");
  return new Response(blob.body, { headers: { "content-type": "application/jsonl; charset=utf-8", "content-length": String(blob.size) } });
});

/** Mounted at EDGE_PATHS.adapters. */
export const internalAdapterRoutes = new Hono<AppEnv>();
internalAdapterRoutes.use(requireRunner());

internalAdapterRoutes.get(pathUnder(EDGE_PATHS.adapters, EDGE_PATHS.adapterBlob(":id")), async (c) => {
  const row = await findAdapterForRunner(database(c.env.DB), c.req.param("id"));
  const blob = row === null ? null : await c.env.BLOBS.get(row.blobKey);
  if (row === null || blob === null) throw notFound(`The adapter ${JSON.stringify(c.req.param("id"))} does not exist.`, "adapter_id", "adapter_not_found");
  return new Response(blob.body, {
    headers: { "content-type": "application/octet-stream", "content-length": String(blob.size), [CONTENT_SHA256_HEADER]: row.sha256 },
  });
});
