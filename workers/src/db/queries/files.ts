/** Uploaded files (training data). Every read is by tenant, except the runner's download by id. */
import { and, eq } from "drizzle-orm";
import type { Database } from "../client.ts";
import { files } from "../schema.ts";
import { keysetPage } from "./keyset-page.ts";

export type FileRow = typeof files.$inferSelect;
export type NewFile = typeof files.$inferInsert;

/** Records an uploaded file whose blob is already in R2. */
export async function createFile(db: Database, file: NewFile): Promise<FileRow> {
  const [row] = await db.insert(files).values(file).returning();
  return row;
}

/** The tenant's file with this id, or null (also for another tenant's file). */
export async function findTenantFile(db: Database, tenantId: string, id: string): Promise<FileRow | null> {
  return (
    (await db
      .select()
      .from(files)
      .where(and(eq(files.id, id), eq(files.tenantId, tenantId)))
      .get()) ?? null
  );
}

/** A file by id alone: only for the runner's download of a job's data (runner secret). */
export async function findFileForRunner(db: Database, id: string): Promise<FileRow | null> {
  return (await db.select().from(files).where(eq(files.id, id)).get()) ?? null;
}

/** One page of the tenant's files, newest first, after the file `after` (a cursor row). */
export async function listTenantFiles(db: Database, tenantId: string, page: { limit: number; after: FileRow | null; purpose?: string }): Promise<FileRow[]> {
  const conditions = [eq(files.tenantId, tenantId)];
  if (page.purpose !== undefined) conditions.push(eq(files.purpose, page.purpose));
  const keyset = keysetPage(files, "newest first", page.after);
  return db
    .select()
    .from(files)
    .where(and(...conditions, keyset.condition))
    .orderBy(...keyset.orderBy)
    .limit(page.limit)
    .all();
}

/** Deletes the tenant's file row; null when the tenant has no such file. */
export async function deleteTenantFile(db: Database, tenantId: string, id: string): Promise<FileRow | null> {
  const [row] = await db
    .delete(files)
    .where(and(eq(files.id, id), eq(files.tenantId, tenantId)))
    .returning();
  return row ?? null;
}
