/**
 * `GET /v1/models` (and `/v1/models/{id}`), OpenAI-shaped: the base model first, then the
 * tenant's ready fine-tuned and imported adapters, newest first, in cursor pages. Checkpoints are
 * listed under their job (`/v1/fine_tuning/jobs/{id}/checkpoints`), not here, but each is still a
 * model: retrieving one by id works, and so does sending its id as `model`.
 */
import { Hono } from "hono";
import { notFound } from "../../../src/errors.ts";
import type { ListPage } from "../../../src/protocol/list-page.ts";
import type { ModelObject } from "../../../src/protocol/openai.ts";
import { requireKey } from "../auth/middleware.ts";
import { database } from "../db/client.ts";
import { findListedAdapter, findTenantAdapter, listTenantAdapters, type AdapterRow } from "../db/queries/adapters.ts";
import type { AppEnv } from "../env.ts";
import { cursorRow, listPage, listQuerySchema } from "./list-page.ts";
import { parse } from "./parse.ts";

/** The query of `GET /v1/models`. */
export const modelsQuerySchema = listQuerySchema("models");

export const modelRoutes = new Hono<AppEnv>();
modelRoutes.use(requireKey("inference"));

modelRoutes.get("/", async (c) => {
  const query = parse(modelsQuerySchema, c.req.query());
  const db = database(c.env.DB);
  const tenantId = c.get("caller").tenantId;
  // The base model sorts before every adapter: it heads the first page, and as a cursor it means "from the first adapter".
  const fromStart = query.after === undefined || query.after === c.env.BASE_MODEL;
  const after = fromStart ? null : await cursorRow(query.after, "model", (id) => findListedAdapter(db, tenantId, id, "models"));
  const head = query.after === undefined ? [baseModel(c.env.BASE_MODEL)] : [];
  const rows = await listTenantAdapters(db, tenantId, { limit: query.limit + 1 - head.length, after }, "models");
  return c.json(listPage([...head, ...rows.map(adapterModel)], query.limit) satisfies ListPage<ModelObject>);
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
