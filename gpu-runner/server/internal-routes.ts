/**
 * The runner's internal API, for the control plane only (bearer runner secret, compared in
 * constant time): register and evict adapters, convert PEFT adapters to and from PiCa, submit
 * training jobs, read and cancel them, and fetch a finished job's adapter. Request bodies are validated by the protocol in src/.
 */
import { Hono } from "hono";
import { bearerAuth } from "hono/bearer-auth";
import { bodyLimit } from "hono/body-limit";
import { badRequest, notFound, unauthorized } from "../../src/errors.ts";
import { parseTrainingJobRequest } from "../../src/protocol/runner.ts";
import type { AdapterCache } from "../adapters/adapter-cache.ts";
import { assertValidAdapterId } from "../adapters/adapter-store.ts";
import type { JobManager } from "../jobs/job-manager.ts";
import { exportPeftRoute, importPeftRoute, type PeftTransferOptions } from "./peft-transfer.ts";
import { jsonBody } from "../../src/request-body.ts";

export interface InternalApiOptions {
  secret: string;
  jobs: JobManager | null;
  adapters: AdapterCache | null;
  /** Stores an adapter where this runner reloads it from, and makes it resident. */
  publishAdapter: ((id: string, bytes: Uint8Array) => Promise<{ bytes: number }>) | null;
  maxAdapterBytes?: number; // largest adapter upload; default 64 MiB
  maxJobBytes?: number; // largest job submission (inline data included); default 128 MiB
  /** PEFT import and export (they need the basis: a function throws while it is computed); absent: those routes answer 404. */
  peft?: PeftTransferOptions | (() => PeftTransferOptions) | null;
}

/** The `/internal` sub-app. */
export function internalRoutes(options: InternalApiOptions): Hono {
  const app = new Hono();
  const refusal = (message: string) => () => unauthorized(message, "invalid_runner_secret").toBody();
  app.use(
    bearerAuth({
      token: options.secret,
      noAuthenticationHeader: { message: refusal("Internal routes need the runner secret as a bearer token.") },
      invalidAuthenticationHeader: { message: refusal("The Authorization header must be 'Bearer <runner secret>'.") },
      invalidToken: { message: refusal("The runner secret is wrong.") },
    }),
  );
  const tooLarge = (limit: number, what: string) =>
    bodyLimit({
      maxSize: limit,
      onError: () => {
        throw new TooLargeError(`${what} is larger than ${limit} bytes`);
      },
    });

  app.get("/adapters", (c) => {
    const adapters = requireAdapters();
    return c.json({ object: "list", data: adapters.residentIds().map((id) => ({ id, object: "runner.adapter" })), stats: adapters.stats() });
  });

  app.put("/adapters/:id{.+}", tooLarge(options.maxAdapterBytes ?? 64 * 2 ** 20, "the adapter"), async (c) => {
    const id = adapterIdParam(c.req.param("id"));
    if (options.publishAdapter === null) throw notFound("This runner has no adapter cache.");
    const bytes = new Uint8Array(await c.req.arrayBuffer());
    if (bytes.length === 0) throw badRequest("The body must be the adapter's safetensors file.", "body");
    const resident = await options.publishAdapter(id, bytes);
    return c.json({ id, object: "runner.adapter", resident: true, bytes: resident.bytes }, 201);
  });

  app.delete("/adapters/:id{.+}", (c) => {
    const id = adapterIdParam(c.req.param("id"));
    return c.json({ id, object: "runner.adapter", evicted: requireAdapters().remove(id) });
  });

  app.post("/jobs", tooLarge(options.maxJobBytes ?? 128 * 2 ** 20, "the job"), async (c) => {
    const job = await requireJobs().submit(parseTrainingJobRequest(await jsonBody(c)));
    return c.json(job, 202);
  });

  app.post("/adapters/import-peft", tooLarge(options.maxAdapterBytes ?? 64 * 2 ** 20, "the PEFT adapter"), (c) => importPeftRoute(c, requirePeft()));

  app.post("/adapters/export-peft", tooLarge(options.maxAdapterBytes ?? 64 * 2 ** 20, "the adapter"), (c) => exportPeftRoute(c, requirePeft()));

  app.get("/jobs", (c) => c.json({ object: "list", data: requireJobs().list() }));

  app.get("/jobs/:id", (c) => c.json(requireJob(c.req.param("id"))));

  app.post("/jobs/:id/cancel", async (c) => {
    const job = await requireJobs().cancel(c.req.param("id"));
    if (job === null) throw jobNotFound(c.req.param("id"));
    return c.json(job);
  });

  app.get("/jobs/:id/adapter", async (c) => {
    const job = requireJob(c.req.param("id"));
    const bytes = await requireJobs().adapterBytes(job.id);
    if (bytes === null) throw notFound(`Job ${job.id} has no adapter (status ${job.status}).`, "id", "adapter_not_ready");
    return c.body(new Uint8Array(bytes), 200, { "content-type": "application/octet-stream", "x-content-sha256": job.adapter_sha256 ?? "" });
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

/** A request body over its limit. */
export class TooLargeError extends Error {
  override readonly name = "TooLargeError";
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
