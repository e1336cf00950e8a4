/**
 * The operator's routes (admin token): create tenants, set their limits, and issue, list and
 * revoke their API keys. A new key's secret is in the creation response and nowhere else.
 */
import { Hono } from "hono";
import { z } from "zod";
import { badRequest, notFound } from "../../../src/errors.ts";
import { jsonBody } from "../../../src/request-body.ts";
import { KEY_SCOPES, randomId } from "../auth/keys.ts";
import { forgetKeys } from "../auth/key-cache.ts";
import { requireAdmin } from "../auth/middleware.ts";
import { database } from "../db/client.ts";
import { createTenant, findApiKey, getTenant, listApiKeys, revokeApiKey, updateTenantLimits } from "../db/queries/tenants.ts";
import type { AppEnv } from "../env.ts";
import { forgetTenantLimits } from "../inference/lookup-cache.ts";
import { issueKey, keyRequestSchema } from "./keys.ts";
import { cursorRow, listPage, listQuerySchema } from "./list-page.ts";
import { parse } from "./parse.ts";

const limitsSchema = z.object({
  requests_per_minute: z.int().min(1).max(1_000_000).optional(),
  concurrent_streams: z.int().min(1).max(10_000).optional(),
});
const tenantRequestSchema = z
  .object({ name: z.string().min(1).max(200) })
  .extend(limitsSchema.shape)
  .strict();

export const adminRoutes = new Hono<AppEnv>();
adminRoutes.use(requireAdmin());

adminRoutes.post("/tenants", async (c) => {
  const body = parse(tenantRequestSchema, await jsonBody(c));
  const tenant = await createTenant(database(c.env.DB), {
    id: randomId("tenant_"),
    name: body.name,
    requestsPerMinute: body.requests_per_minute,
    concurrentStreams: body.concurrent_streams,
  });
  return c.json(publicTenant(tenant), 201);
});

adminRoutes.get("/tenants/:tenant", async (c) => c.json(publicTenant(await tenantOr404(c.env.DB, c.req.param("tenant")))));

adminRoutes.patch("/tenants/:tenant", async (c) => {
  const body = parse(limitsSchema.strict(), await jsonBody(c));
  if (body.requests_per_minute === undefined && body.concurrent_streams === undefined) {
    throw badRequest("Give requests_per_minute, concurrent_streams or both.", null, "nothing_to_change");
  }
  const tenant = await updateTenantLimits(database(c.env.DB), c.req.param("tenant"), {
    requestsPerMinute: body.requests_per_minute,
    concurrentStreams: body.concurrent_streams,
  });
  if (tenant === null) throw tenantNotFound(c.req.param("tenant"));
  forgetTenantLimits(tenant.id);
  return c.json(publicTenant(tenant));
});

adminRoutes.post("/tenants/:tenant/keys", async (c) => {
  const tenant = await tenantOr404(c.env.DB, c.req.param("tenant"));
  const body = parse(keyRequestSchema, await jsonBody(c));
  return c.json(await issueKey(database(c.env.DB), tenant.id, body), 201);
});

adminRoutes.get("/tenants/:tenant/keys", async (c) => {
  const tenant = await tenantOr404(c.env.DB, c.req.param("tenant"));
  const query = parse(listQuerySchema("keys"), c.req.query());
  const db = database(c.env.DB);
  const after = await cursorRow(query.after, "API key", (id) => findApiKey(db, tenant.id, id));
  return c.json(listPage(await listApiKeys(db, tenant.id, { limit: query.limit + 1, after }), query.limit));
});

adminRoutes.delete("/tenants/:tenant/keys/:key", async (c) => {
  const revoked = await revokeApiKey(database(c.env.DB), c.req.param("tenant"), c.req.param("key"));
  forgetKeys(); // a revoked key stops working in this isolate at once
  if (revoked === null) throw notFound(`No API key ${c.req.param("key")} for this tenant.`, "key", "api_key_not_found");
  return c.json(revoked);
});

async function tenantOr404(d1: D1Database, id: string) {
  const tenant = await getTenant(database(d1), id);
  if (tenant === null) throw tenantNotFound(id);
  return tenant;
}

function tenantNotFound(id: string) {
  return notFound(`No tenant ${JSON.stringify(id)}.`, "tenant", "tenant_not_found");
}

function publicTenant(row: { id: string; name: string; requestsPerMinute: number; concurrentStreams: number; createdAt: number }) {
  return {
    id: row.id,
    object: "tenant",
    name: row.name,
    requests_per_minute: row.requestsPerMinute,
    concurrent_streams: row.concurrentStreams,
    created_at: row.createdAt,
  };
}

export { KEY_SCOPES };
