/**
 * `/v1/files` (fine-tuning key): upload a training file (multipart, purpose `fine-tune`),
 * validated before it is stored; list (cursor pages, newest first), retrieve, download and delete.
 * File objects are OpenAI's.
 */
import { Hono } from "hono";
import { z } from "zod";
import { BASE_MODEL_ID } from "../../../src/constants.ts";
import { badRequest, notFound } from "../../../src/errors.ts";
import type { ListPage } from "../../../src/protocol/list-page.ts";
import type { FileObject, fileDeletedSchema } from "../../../src/protocol/platform-objects.ts";
import { randomId } from "../auth/keys.ts";
import { requireKey } from "../auth/middleware.ts";
import { database } from "../db/client.ts";
import { createFile, deleteTenantFile, findTenantFile, listTenantFiles, type FileRow } from "../db/queries/files.ts";
import { listRunners } from "../db/queries/runners.ts";
import { modelTrainingFigures } from "../runners/training-figures.ts";
import type { AppEnv } from "../env.ts";
import { blobThenRows } from "../storage/storage-errors.ts";
import { baseModelBytesPerToken, validateTrainingUpload } from "../files/training-file.ts";
import { fileBlobKey } from "../storage/blob-keys.ts";
import { cursorRow, listPage, listQuerySchema } from "./list-page.ts";
import { parse } from "./parse.ts";

/** The only purpose accepted: files are training data. */
export const FILE_PURPOSE = "fine-tune";

/** The query of `GET /v1/files`: a page, and optionally only one purpose. */
export const filesQuerySchema = listQuerySchema("files").extend({ purpose: z.string().max(100).optional() });

/** The form of `POST /v1/files`; `purpose` comes first so a form missing both names it first. */
export const fileUploadSchema = z.object({
  purpose: z.string().pipe(z.literal(FILE_PURPOSE, { error: `only '${FILE_PURPOSE}' is supported` })),
  file: z.file().describe("JSONL, one training example per line"),
});

export const fileRoutes = new Hono<AppEnv>();
fileRoutes.use(requireKey("fine_tuning"));

fileRoutes.post("/", async (c) => {
  const form = parse(fileUploadSchema, Object.fromEntries((await multipartForm(c.req.raw)).entries()));
  const { purpose } = form;
  const file = form.file as unknown as File; // zod types z.file() with its own File declaration; this is the request's
  const bytes = new Uint8Array(await file.arrayBuffer());
  const runnerRows = await listRunners(database(c.env.DB));
  const template = modelTrainingFigures(runnerRows, c.env.BASE_MODEL || BASE_MODEL_ID).template_tokens;
  const valid = validateTrainingUpload(bytes, baseModelBytesPerToken(c.env), template);

  const tenantId = c.get("caller").tenantId;
  const id = randomId("file-");
  const blobKey = fileBlobKey(tenantId, id);
  // Blob first: a row never points at a missing blob; a failed row takes its blob away again.
  const row = await blobThenRows(c.env, c.executionCtx, { key: blobKey, bytes, options: { httpMetadata: { contentType: "application/jsonl" } } }, () =>
    createFile(database(c.env.DB), {
      id,
      tenantId,
      purpose,
      filename: (file.name || "upload.jsonl").slice(0, 255),
      bytes: bytes.byteLength,
      examples: valid.examples,
      estimatedTokens: valid.estimatedTokens,
      blobKey,
    }),
  );
  return c.json(publicFile(row), 200);
});

fileRoutes.get("/", async (c) => {
  const query = parse(filesQuerySchema, c.req.query());
  const db = database(c.env.DB);
  const tenantId = c.get("caller").tenantId;
  const after = await cursorRow(query.after, "file", (id) => findTenantFile(db, tenantId, id));
  const rows = await listTenantFiles(db, tenantId, { limit: query.limit + 1, after, purpose: query.purpose });
  return c.json(listPage(rows.map(publicFile), query.limit) satisfies ListPage<FileObject>);
});

fileRoutes.get("/:id", async (c) => c.json(publicFile(await fileOr404(c.env.DB, c.get("caller").tenantId, c.req.param("id")))));

fileRoutes.get("/:id/content", async (c) => {
  const row = await fileOr404(c.env.DB, c.get("caller").tenantId, c.req.param("id"));
  const blob = await c.env.BLOBS.get(row.blobKey);
  if (blob === null) throw fileNotFound(row.id);
  return new Response(blob.body, { headers: { "content-type": "application/jsonl; charset=utf-8", "content-length": String(blob.size) } });
});

fileRoutes.delete("/:id", async (c) => {
  const row = await deleteTenantFile(database(c.env.DB), c.get("caller").tenantId, c.req.param("id"));
  if (row === null) throw fileNotFound(c.req.param("id"));
  // Row first: once it is gone nobody can reach the blob, so a failed blob delete hides nothing.
  await c.env.BLOBS.delete(row.blobKey);
  return c.json({ id: row.id, object: "file", deleted: true } satisfies z.infer<typeof fileDeletedSchema>);
});

/** The tenant's file, or a 404 naming it (another tenant's file is as unknown as a missing one). */
export async function fileOr404(d1: D1Database, tenantId: string, id: string, param = "file_id"): Promise<FileRow> {
  const row = await findTenantFile(database(d1), tenantId, id);
  if (row === null) throw fileNotFound(id, param);
  return row;
}

function fileNotFound(id: string, param = "file_id") {
  return notFound(`No such File object: ${id}`, param, "file_not_found");
}

/** A file as OpenAI's API shows it. */
function publicFile(row: FileRow): FileObject {
  return {
    id: row.id,
    object: "file" as const,
    bytes: row.bytes,
    created_at: row.createdAt,
    expires_at: null,
    filename: row.filename,
    purpose: row.purpose,
    status: row.status,
    status_details: null,
  };
}

// Hono's parseBody would turn a malformed body into a 500; this names the problem instead.
async function multipartForm(request: Request): Promise<FormData> {
  const type = request.headers.get("content-type") ?? "";
  if (!/^multipart\/form-data\s*;/i.test(type)) {
    throw badRequest("Uploads must be multipart/form-data with the fields 'purpose' and 'file'.", null, "invalid_content_type");
  }
  try {
    return await request.formData();
  } catch {
    throw badRequest("The multipart body could not be parsed.", null, "invalid_multipart");
  }
}
