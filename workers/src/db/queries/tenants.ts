/** Tenants and their API keys. Key lookups go by hash; a key row is never returned with it. */
import { and, eq, isNull } from "drizzle-orm";
import type { KeyScope } from "../../auth/keys.ts";
import type { Database } from "../client.ts";
import { apiKeys, tenants } from "../schema.ts";
import { keysetPage } from "./keyset-page.ts";

export interface NewTenant {
  id: string;
  name: string;
  requestsPerMinute?: number;
  concurrentStreams?: number;
}

export async function createTenant(db: Database, tenant: NewTenant) {
  const [row] = await db.insert(tenants).values(tenant).returning();
  return row;
}

export async function getTenant(db: Database, id: string) {
  return (await db.select().from(tenants).where(eq(tenants.id, id)).get()) ?? null;
}

export async function updateTenantLimits(db: Database, id: string, limits: { requestsPerMinute?: number; concurrentStreams?: number }) {
  const [row] = await db.update(tenants).set(limits).where(eq(tenants.id, id)).returning();
  return row ?? null;
}

export interface NewApiKey {
  id: string;
  tenantId: string;
  name: string;
  prefix: string;
  hash: string;
  scopes: KeyScope[];
}

export async function createApiKey(db: Database, key: NewApiKey) {
  const [row] = await db.insert(apiKeys).values(key).returning();
  return publicKey(row);
}

/** The live key with this hash and its tenant's limits; null when unknown or revoked. */
export async function findLiveKeyByHash(db: Database, hash: string) {
  const row = await db
    .select({ id: apiKeys.id, tenantId: apiKeys.tenantId, hash: apiKeys.hash, scopes: apiKeys.scopes })
    .from(apiKeys)
    .where(and(eq(apiKeys.hash, hash), isNull(apiKeys.revokedAt)))
    .get();
  return row ?? null;
}

/** The live key with this id (what a console session names); null when unknown or revoked. */
export async function findLiveKeyById(db: Database, id: string) {
  const row = await db
    .select({ id: apiKeys.id, tenantId: apiKeys.tenantId, hash: apiKeys.hash, scopes: apiKeys.scopes, name: apiKeys.name })
    .from(apiKeys)
    .where(and(eq(apiKeys.id, id), isNull(apiKeys.revokedAt)))
    .get();
  return row ?? null;
}

/** The tenant's key with this id (revoked ones too), as the API shows it; null when it has none. */
export async function findApiKey(db: Database, tenantId: string, keyId: string) {
  const row = await db
    .select()
    .from(apiKeys)
    .where(and(eq(apiKeys.id, keyId), eq(apiKeys.tenantId, tenantId)))
    .get();
  return row ? publicKey(row) : null;
}

/** One page of the tenant's keys (revoked ones too), oldest first, after the key `after`. */
export async function listApiKeys(db: Database, tenantId: string, page: { limit: number; after: { id: string; created_at: number } | null }) {
  const after = page.after === null ? null : { createdAt: page.after.created_at, id: page.after.id };
  const keyset = keysetPage(apiKeys, "oldest first", after);
  const rows = await db
    .select()
    .from(apiKeys)
    .where(and(eq(apiKeys.tenantId, tenantId), keyset.condition))
    .orderBy(...keyset.orderBy)
    .limit(page.limit)
    .all();
  return rows.map(publicKey);
}

/** Revokes a tenant's key; null when the tenant has no such key. */
export async function revokeApiKey(db: Database, tenantId: string, keyId: string) {
  const [row] = await db
    .update(apiKeys)
    .set({ revokedAt: Math.floor(Date.now() / 1000) })
    .where(and(eq(apiKeys.id, keyId), eq(apiKeys.tenantId, tenantId)))
    .returning();
  return row ? publicKey(row) : null;
}

export async function touchApiKey(db: Database, keyId: string) {
  await db
    .update(apiKeys)
    .set({ lastUsedAt: Math.floor(Date.now() / 1000) })
    .where(eq(apiKeys.id, keyId));
}

/** A key as the API shows it: never the hash, never the secret. */
function publicKey(row: typeof apiKeys.$inferSelect) {
  return {
    id: row.id,
    object: "api_key" as const,
    name: row.name,
    prefix: row.prefix,
    scopes: row.scopes,
    created_at: row.createdAt,
    last_used_at: row.lastUsedAt,
    revoked_at: row.revokedAt,
  };
}
