/**
 * A job's callbacks, called by the runner that trains it (runner secret), under the
 * `callback_url` the dispatcher gave it (`/internal/jobs/{id}`): events, checkpoints, trainer
 * state and the finished adapter (src/protocol/runner.ts, CALLBACK_PATHS). Runners retry, so each
 * is idempotent; every blob is verified against its `x-content-sha256` before it is kept. A new
 * checkpoint retires the job's older ones past CHECKPOINTS_KEPT (jobs/checkpoint-retention.ts).
 */
import { Hono, type Context } from "hono";
import { z } from "zod";
import { ApiError, badRequest, notFound } from "../../../src/errors.ts";
import type { FineTuningCheckpoint } from "../../../src/protocol/platform-objects.ts";
import {
  CALLBACK_PATHS,
  CONTENT_SHA256_HEADER,
  EDGE_PATHS,
  JOB_MOVED_CODE,
  jobEventSchema,
  PLACEMENT_HEADER,
  pathUnder,
} from "../../../src/protocol/runner.ts";
import { jsonBody } from "../../../src/request-body.ts";
import { randomId, sha256Hex } from "../auth/keys.ts";
import { requireRunner } from "../auth/middleware.ts";
import { database } from "../db/client.ts";
import { findJobForRunner, setJobStateKey, type JobRow } from "../db/queries/fine-tuning-jobs.ts";
import { findJobEvent, recordCheckpoint } from "../db/queries/job-results.ts";
import type { AppEnv } from "../env.ts";
import { pruneCheckpoints } from "../jobs/checkpoint-retention.ts";
import { applyRunnerEvents, jobAdapterRow, storeFinishedAdapter } from "../jobs/job-outcomes.ts";
import { checkpointBlobKey, stateBlobKey } from "../storage/blob-keys.ts";
import { parse } from "./parse.ts";

const eventsBodySchema = z.object({ events: z.array(jobEventSchema).max(1000) }).strict();

/** A callback of a job as this sub-app, mounted at EDGE_PATHS.jobs, registers it. */
const callback = <Path extends string>(path: Path) => `${pathUnder(EDGE_PATHS.jobs, EDGE_PATHS.jobCallbacks(":id"))}${path}` as const;

export const jobCallbackRoutes = new Hono<AppEnv>();
jobCallbackRoutes.use(requireRunner());

jobCallbackRoutes.post(callback(CALLBACK_PATHS.events), async (c) => {
  const job = await jobOr404(c);
  const body = parse(eventsBodySchema, await jsonBody(c));
  await applyRunnerEvents(c.env, job, body.events);
  return c.json({ received: body.events.length });
});

jobCallbackRoutes.put(callback(CALLBACK_PATHS.checkpoint(":step")), async (c) => {
  const job = await jobOr404(c);
  const step = Number(c.req.param("step"));
  if (!Number.isSafeInteger(step) || step < 0) throw badRequest(`Invalid checkpoint step ${JSON.stringify(c.req.param("step"))}.`, "step", "invalid_value");
  const { bytes, sha256 } = await verifiedBlob(c);
  const blobKey = checkpointBlobKey(job.tenantId, job.id, step);
  await c.env.BLOBS.put(blobKey, bytes, { sha256 });
  // The step's metrics event travels before the checkpoint on the runner's ordered callbacks.
  const stepEvent = await findJobEvent(database(c.env.DB), job.id, `${job.id}:step:${step}`);
  const adapterId = `${job.fineTunedModel}:ckpt-step-${step}`;
  await recordCheckpoint(
    database(c.env.DB),
    { id: randomId("ftckpt-"), jobId: job.id, tenantId: job.tenantId, step, metrics: checkpointMetrics(step, stepEvent?.data ?? null), adapterId },
    await jobAdapterRow(database(c.env.DB), job, { id: adapterId, blobKey, sha256, bytes: bytes.byteLength, source: "checkpoint" }),
  );
  await pruneCheckpoints(c.env, job.id);
  return c.json({ step, adapter_id: adapterId });
});

jobCallbackRoutes.put(callback(CALLBACK_PATHS.state), async (c) => {
  const job = await jobOr404(c);
  const { bytes, sha256 } = await verifiedBlob(c);
  const key = stateBlobKey(job.tenantId, job.id);
  await c.env.BLOBS.put(key, bytes, { sha256 });
  await setJobStateKey(database(c.env.DB), job.id, key);
  return c.json({ bytes: bytes.byteLength });
});

// The trainer state, for the runner a job moved to (see jobs/relocation.ts).
jobCallbackRoutes.get(callback(CALLBACK_PATHS.state), async (c) => {
  const job = await jobOr404(c);
  const blob = job.stateKey === null ? null : await c.env.BLOBS.get(job.stateKey);
  if (blob === null) throw notFound(`Job ${job.id} has no trainer state.`, "id", "state_not_found");
  return new Response(blob.body, { headers: { "content-type": "application/octet-stream", "content-length": String(blob.size) } });
});

jobCallbackRoutes.put(callback(CALLBACK_PATHS.adapter), async (c) => {
  const job = await jobOr404(c);
  if (job.status === "failed" || job.status === "cancelled") {
    throw new ApiError(409, "invalid_request_error", `Job ${job.id} has ${job.status}; its adapter is not kept.`, null, "job_finished");
  }
  const { bytes, sha256 } = await verifiedBlob(c);
  if (job.status === "succeeded") return c.json({ id: job.fineTunedModel, status: job.status }); // a repeated delivery
  const after = await storeFinishedAdapter(c.env, job, bytes, sha256);
  return c.json({ id: job.fineTunedModel, status: after?.status ?? job.status });
});

/**
 * The job a callback is about. A runner states the placement it was given; a runner whose job was
 * moved to another (its own was judged lost) is told so with 409 `job_moved`, and stops the job.
 */
async function jobOr404(c: Context<AppEnv>): Promise<JobRow> {
  const job = await findJobForRunner(database(c.env.DB), c.req.param("id")!);
  if (job === null) throw notFound(`No fine-tuning job ${c.req.param("id")}.`, "id", "fine_tuning_job_not_found");
  const placement = c.req.header(PLACEMENT_HEADER);
  if (placement !== undefined && job.runnerId !== null && placement !== job.runnerId) {
    throw new ApiError(409, "invalid_request_error", `Job ${job.id} now runs on another runner.`, null, JOB_MOVED_CODE);
  }
  return job;
}

// The runner states the sha256 of every blob; a blob that does not match is refused whole.
async function verifiedBlob(c: Context<AppEnv>): Promise<{ bytes: Uint8Array; sha256: string }> {
  const stated = c.req.header(CONTENT_SHA256_HEADER)?.toLowerCase();
  if (stated === undefined || !/^[0-9a-f]{64}$/.test(stated)) {
    throw badRequest(`Blob uploads need their SHA-256 as 64 hex digits in ${CONTENT_SHA256_HEADER}.`, CONTENT_SHA256_HEADER, "missing_sha256");
  }
  const bytes = new Uint8Array(await c.req.arrayBuffer());
  if (bytes.byteLength === 0) throw badRequest("The blob is empty.", null, "empty_blob");
  const actual = await sha256Hex(bytes);
  if (actual !== stated) {
    throw new ApiError(
      422,
      "invalid_request_error",
      `The blob's SHA-256 is ${actual}, but ${CONTENT_SHA256_HEADER} says ${stated}.`,
      CONTENT_SHA256_HEADER,
      "sha256_mismatch",
    );
  }
  return { bytes, sha256: actual };
}

// OpenAI's checkpoint metrics, from the runner's metrics event of the same step when it is known.
function checkpointMetrics(step: number, data: Record<string, unknown> | null): FineTuningCheckpoint["metrics"] {
  const number = (value: unknown) => (typeof value === "number" ? value : null);
  return { step, train_loss: number(data?.train_loss), learning_rate: number(data?.learning_rate) };
}
