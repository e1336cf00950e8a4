/**
 * `GET /v1/models` (and `/v1/models/{id}`), OpenAI-shaped: the base model and the tenant's
 * ready adapters, i.e. exactly the ids the tenant may send as `model`.
 */
import { Hono } from "hono";
import { notFound } from "../../../src/errors.ts";
import type { ModelObject } from "../../../src/protocol/openai.ts";
import { requireKey } from "../auth/middleware.ts";
import { database } from "../db/client.ts";
import { findTenantAdapter, listTenantAdapters, type AdapterRow } from "../db/queries/adapters.ts";
import type { AppEnv } from "../env.ts";

export const modelRoutes = new Hono<AppEnv>();
modelRoutes.use(requireKey("inference"));

/** OpenAI's model list has no pages; past this many adapters, /v1/adapters pages through them. */
const MAX_LISTED_MODELS = 10_000;

modelRoutes.get("/", async (c) => {
  const adapters = await listTenantAdapters(database(c.env.DB), c.get("caller").tenantId, { limit: MAX_LISTED_MODELS, after: null });
  const data = [baseModel(c.env.BASE_MODEL), ...adapters.filter((row) => row.status === "ready").map(adapterModel)];
  return c.json({ object: "list", data });
});

modelRoutes.get("/:model{.+}", async (c) => {
  const id = c.req.param("model");
  if (id === c.env.BASE_MODEL) return c.json(baseModel(id));
  const adapter = await findTenantAdapter(database(c.env.DB), c.get("caller").tenantId, id);
  if (adapter === null || adapter.status !== "ready")
    throw notFound(`The model '${id}' does not exist or you do not have access to it.`, "model", "model_not_found");
  return c.json(adapterModel(adapter));
});

function baseModel(id: string): ModelObject {
  return { id, object: "model", created: 0, owned_by: "system" };
}

function adapterModel(row: AdapterRow): ModelObject {
  return { id: row.id, object: "model", created: row.createdAt, owned_by: row.tenantId };
}
