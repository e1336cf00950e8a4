/**
 * A tenant's own API keys (admin-scoped key): issue, list (cursor pages, oldest first), revoke.
 * Issuing returns the secret once; listing shows only the display prefix.
 */
import { Hono } from "hono";
import { z } from "zod";
import { notFound } from "../../../src/errors.ts";
import type { ListPage } from "../../../src/protocol/list-page.ts";
import type { ApiKeyObject, IssuedApiKey } from "../../../src/protocol/platform-objects.ts";
import { jsonBody } from "../../../src/request-body.ts";
import { generateApiKey, KEY_SCOPES, randomId } from "../auth/keys.ts";
import { forgetKeys } from "../auth/key-cache.ts";
import { requireKey } from "../auth/middleware.ts";
import { database, type Database } from "../db/client.ts";
import { createApiKey, findApiKey, listApiKeys, revokeApiKey } from "../db/queries/tenants.ts";
import type { AppEnv } from "../env.ts";
import { cursorRow, listPage, listQuerySchema } from "./list-page.ts";
import { parse } from "./parse.ts";

/** The body of `POST /v1/api_keys` (and of the admin route that issues a new tenant's keys). */
export const keyRequestSchema = z
  .object({
    name: z.string().min(1).max(200).default("default"),
    scopes: z
      .array(z.enum(KEY_SCOPES as [string, ...string[]]))
      .min(1)
      .default(["inference", "fine_tuning"]),
  })
  .strict();

/** Creates a key for a tenant; the response is the only place its secret ever appears. */
export async function issueKey(db: Database, tenantId: string, request: z.output<typeof keyRequestSchema>): Promise<IssuedApiKey> {
  const { key, hash, prefix } = await generateApiKey();
  const row = await createApiKey(db, { id: randomId("key_"), tenantId, name: request.name, prefix, hash, scopes: [...new Set(request.scopes)] as never });
  return { ...row, key };
}

/** The query of `GET /v1/api_keys`. */
export const keysQuerySchema = listQuerySchema("keys");

export const keyRoutes = new Hono<AppEnv>();
keyRoutes.use(requireKey("admin"));

keyRoutes.post("/", async (c) => {
  const body = parse(keyRequestSchema, await jsonBody(c));
  return c.json(await issueKey(database(c.env.DB), c.get("caller").tenantId, body), 201);
});

keyRoutes.get("/", async (c) => {
  const query = parse(keysQuerySchema, c.req.query());
  const db = database(c.env.DB);
  const tenantId = c.get("caller").tenantId;
  const after = await cursorRow(query.after, "API key", (id) => findApiKey(db, tenantId, id));
  const rows = await listApiKeys(db, tenantId, { limit: query.limit + 1, after });
  return c.json(listPage(rows, query.limit) satisfies ListPage<ApiKeyObject>);
});

keyRoutes.delete("/:key", async (c) => {
  const revoked = await revokeApiKey(database(c.env.DB), c.get("caller").tenantId, c.req.param("key"));
  forgetKeys(); // a revoked key stops working in this isolate at once
  if (revoked === null) throw notFound(`No API key ${c.req.param("key")}.`, "key", "api_key_not_found");
  return c.json(revoked satisfies ApiKeyObject);
});
