/** Adapters that enter by PEFT import rather than by training (their reads live in adapters.ts). */
import type { Database } from "../client.ts";
import { adapters } from "../schema.ts";

export interface ImportedAdapter {
  id: string;
  tenantId: string;
  baseModel: string;
  basisId: string;
  rank: number;
  sharing: string;
  blobKey: string;
  sha256: string;
  bytes: number;
  importReport: Record<string, unknown>;
}

/** Records a tenant's imported adapter, ready to serve (its blob is already in R2). */
export async function insertImportedAdapter(db: Database, adapter: ImportedAdapter) {
  const [row] = await db
    .insert(adapters)
    .values({ ...adapter, status: "ready", source: "peft_import", sourceJobId: null })
    .returning();
  return row;
}
