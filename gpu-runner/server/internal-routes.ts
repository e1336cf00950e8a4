/**
 * The runner's internal API, for the control plane only: register and evict adapters, convert
 * PEFT adapters to and from PiCa, submit training jobs, read and cancel them, and fetch a finished
 * job's adapter. It has no check of its own: createRunnerApp mounts it only behind the runner
 * secret (runner-auth.ts), which guards every route. Request bodies are validated by the protocol
 * in src/ and bounded per route (uploads are larger than anything the public API takes).
 */
import { Hono } from "hono";
import { badRequest, notFound } from "../../src/errors.ts";
import { CONTENT_SHA256_HEADER, parseTrainingJobRequest, PEFT_PATHS, RUNNER_PATHS } from "../../src/protocol/runner.ts";
import { jsonBody, limitBody } from "../../src/request-body.ts";
import type { AdapterCache } from "../adapters/adapter-cache.ts";
import { assertValidAdapterId } from "../adapters/adapter-store.ts";
import type { JobManager } from "../jobs/job-manager.ts";
import { exportPeftRoute, importPeftRoute, type PeftTransferOptions } from "./peft-transfer.ts";

export interface InternalApiOptions {
  jobs: JobManager | null;
  adapters: AdapterCache | null;
  /** Stores an adapter where this runner reloads it from, and makes it resident. */
  publishAdapter: ((id: string, bytes: Uint8Array) => Promise<{ bytes: number }>) | null;
  maxAdapterBytes?: number; // largest adapter upload; default 64 MiB
  maxJobBytes?: number; // largest job submission (inline data included); default 128 MiB
  /** PEFT import and export (they need the basis: a function throws while it is computed); absent: those routes answer 404. */
  peft?: PeftTransferOptions | (() => PeftTransferOptions) | null;
}

/** A path of RUNNER_PATHS as the sub-app mounted at RUNNER_PATHS.internal sees it. */
function under<Path extends string>(path: `${typeof RUNNER_PATHS.internal}${Path}`): Path {
  return path.slice(RUNNER_PATHS.internal.length) as Path;
}

/** The `/internal` sub-app; mount it at RUNNER_PATHS.internal behind runnerAuth. */
export function internalRoutes(options: InternalApiOptions): Hono {
  const app = new Hono();
  const maxAdapterBytes = options.maxAdapterBytes ?? 64 * 2 ** 20;

  app.get(under(RUNNER_PATHS.adapters), (c) => {
    const adapters = requireAdapters();
    return c.json({ object: "list", data: adapters.residentIds().map((id) => ({ id, object: "runner.adapter" })), stats: adapters.stats() });
  });

  app.put(under(RUNNER_PATHS.adapter(":id{.+}")), limitBody(maxAdapterBytes, "The adapter"), async (c) => {
    const id = adapterIdParam(c.req.param("id"));
    if (options.publishAdapter === null) throw notFound("This runner has no adapter cache.");
    const bytes = new Uint8Array(await c.req.arrayBuffer());
    if (bytes.length === 0) throw badRequest("The body must be the adapter's safetensors file.", "body");
    const resident = await options.publishAdapter(id, bytes);
    return c.json({ id, object: "runner.adapter", resident: true, bytes: resident.bytes }, 201);
  });

  app.delete(under(RUNNER_PATHS.adapter(":id{.+}")), (c) => {
    const id = adapterIdParam(c.req.param("id"));
    return c.json({ id, object: "runner.adapter", evicted: requireAdapters().remove(id) });
  });

  app.post(under(RUNNER_PATHS.jobs), limitBody(options.maxJobBytes ?? 128 * 2 ** 20, "The job"), async (c) => {
    const job = await requireJobs().submit(parseTrainingJobRequest(await jsonBody(c)));
    return c.json(job, 202);
  });

  app.post(under(PEFT_PATHS.import), limitBody(maxAdapterBytes, "The PEFT adapter"), (c) => importPeftRoute(c, requirePeft()));

  app.post(under(PEFT_PATHS.export), limitBody(maxAdapterBytes, "The adapter"), (c) => exportPeftRoute(c, requirePeft()));

  app.get(under(RUNNER_PATHS.jobs), (c) => c.json({ object: "list", data: requireJobs().list() }));

  app.get(under(RUNNER_PATHS.job(":id")), (c) => c.json(requireJob(c.req.param("id"))));

  app.post(under(RUNNER_PATHS.cancelJob(":id")), async (c) => {
    const job = await requireJobs().cancel(c.req.param("id"));
    if (job === null) throw jobNotFound(c.req.param("id"));
    return c.json(job);
  });

  app.get(under(RUNNER_PATHS.jobAdapter(":id")), async (c) => {
    const job = requireJob(c.req.param("id"));
    const bytes = await requireJobs().adapterBytes(job.id);
    if (bytes === null) throw notFound(`Job ${job.id} has no adapter (status ${job.status}).`, "id", "adapter_not_ready");
    return c.body(new Uint8Array(bytes), 200, { "content-type": "application/octet-stream", [CONTENT_SHA256_HEADER]: job.adapter_sha256 ?? "" });
  });

  function requireJobs(): JobManager {
    if (options.jobs === null) throw notFound("This runner does not train.");
    return options.jobs;
  }

  function requireJob(id: string) {
    const job = requireJobs().get(id);
    if (job === null) throw jobNotFound(id);
    return job;
  }

  function requirePeft(): PeftTransferOptions {
    if (!options.peft) throw notFound("This runner does not convert PEFT adapters.");
    return typeof options.peft === "function" ? options.peft() : options.peft;
  }

  function requireAdapters(): AdapterCache {
    if (options.adapters === null) throw notFound("This runner has no adapter cache.");
    return options.adapters;
  }

  return app;
}

function adapterIdParam(raw: string): string {
  const id = decodeURIComponent(raw);
  try {
    assertValidAdapterId(id);
  } catch (error) {
    throw badRequest((error as Error).message, "id");
  }
  return id;
}

function jobNotFound(id: string) {
  return notFound(`No job with id ${JSON.stringify(id)} on this runner.`, "id", "job_not_found");
}
