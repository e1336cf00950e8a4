/**
 * The runner registry's internal routes (runner secret): `POST /internal/runners/heartbeat`
 * keeps a runner in the rotation (and clears its failures); `GET /internal/runners` lists them.
 */
import { Hono } from "hono";
import { HEARTBEAT_PATH, parseRunnerHeartbeat } from "../../../src/protocol/heartbeat.ts";
import { EDGE_PATHS, pathUnder } from "../../../src/protocol/runner.ts";
import { jsonBody } from "../../../src/request-body.ts";
import { requireRunner } from "../auth/middleware.ts";
import { database } from "../db/client.ts";
import { listRunners, upsertRunnerHeartbeat } from "../db/queries/runners.ts";
import type { AppEnv } from "../env.ts";
import { forgetRunnerRows } from "../inference/lookup-cache.ts";
import { healthyFromRows } from "../runners/registry.ts";

export const runnerRoutes = new Hono<AppEnv>();
runnerRoutes.use(requireRunner());

runnerRoutes.post(pathUnder(EDGE_PATHS.runners, HEARTBEAT_PATH), async (c) => {
  const beat = parseRunnerHeartbeat(await jsonBody(c));
  await upsertRunnerHeartbeat(database(c.env.DB), {
    id: beat.id,
    url: new URL(beat.url).origin,
    baseModel: beat.base_model,
    basisId: beat.basis_id,
    compatibleBasisIds: beat.compatible_basis_ids ?? null,
    running: beat.running,
    waiting: beat.waiting,
    residentAdapters: beat.resident_adapters,
    rankLimits: beat.rank_limits ?? null,
    trainingFigures: beat.training ?? null,
  });
  forgetRunnerRows();
  return c.json({ ok: true });
});

runnerRoutes.get("/", async (c) => {
  const rows = await listRunners(database(c.env.DB));
  const inRotation = new Set(healthyFromRows(rows, c.env).map((runner) => runner.url));
  return c.json({
    object: "list",
    data: rows.map((row) => ({
      id: row.id,
      url: row.url,
      base_model: row.baseModel,
      basis_id: row.basisId,
      compatible_basis_ids: row.compatibleBasisIds ?? [],
      running: row.running,
      waiting: row.waiting,
      resident_adapters: row.residentAdapters,
      rank_limits: row.rankLimits,
      training: row.trainingFigures,
      failures: row.failures,
      last_heartbeat: row.lastHeartbeat,
      in_rotation: inRotation.has(row.url.replace(/\/+$/, "")), // what routing and job placement may use now
    })),
  });
});
