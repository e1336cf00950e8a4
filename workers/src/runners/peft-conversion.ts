/**
 * Asks a runner to convert between PEFT LoRA and PiCa (the projection needs the basis, which only
 * runners hold). Runners are tried in the registry's order: a network error, a 5xx or a runner
 * that cannot convert counts against it and moves on; a 400 is the verdict on the upload itself
 * and goes back to the tenant as is.
 */
import { ApiError } from "../../../src/errors.ts";
import {
  CONTENT_SHA256_HEADER,
  PEFT_IMPORT_REPORT_HEADER,
  PEFT_PARTS,
  PEFT_PATHS,
  peftImportReportSchema,
  runnerAuthorization,
  type PeftImportReport,
} from "../../../src/protocol/runner.ts";
import { sha256Hex } from "../auth/keys.ts";
import type { Database } from "../db/client.ts";
import { clearRunnerFailures, recordRunnerFailure } from "../db/queries/runners.ts";
import { runnerUnavailable } from "../inference/forward.ts";
import { healthyRunners, servesBasis, type RunnerInfo } from "./registry.ts";

export interface PeftUpload {
  adapterConfig: Blob;
  adapterModel: Blob;
  rank?: number;
  sharing: "shared" | "per_layer";
}

/** The runner's PiCa adapter for a PEFT upload, its sha256 and the projection report. */
export async function importPeftOnRunner(env: Env, db: Database, upload: PeftUpload): Promise<{ bytes: Uint8Array; sha256: string; report: PeftImportReport }> {
  const runners = (await healthyRunners(db, env)).filter((runner) => runner.baseModel === null || runner.baseModel === env.BASE_MODEL);
  return onFirstRunner(db, runners, "import", async (runner) => {
    const form = new FormData();
    form.append(PEFT_PARTS.config, upload.adapterConfig, "adapter_config.json");
    form.append(PEFT_PARTS.model, upload.adapterModel, "adapter_model.safetensors");
    if (upload.rank !== undefined) form.append("rank", String(upload.rank));
    form.append("sharing", upload.sharing);
    const response = await fetch(`${runner.url}${PEFT_PATHS.import}`, { method: "POST", headers: runnerAuthorization(env.RUNNER_SECRET), body: form });
    if (!response.ok) return response;
    const bytes = new Uint8Array(await response.arrayBuffer());
    const sha256 = await sha256Hex(bytes);
    if (sha256 !== response.headers.get(CONTENT_SHA256_HEADER)) return `${runner.url} sent an adapter whose sha256 does not match its header`;
    const report = peftImportReportSchema.safeParse(JSON.parse(response.headers.get(PEFT_IMPORT_REPORT_HEADER) ?? "null"));
    if (!report.success) return `${runner.url} sent no valid ${PEFT_IMPORT_REPORT_HEADER}`;
    return { bytes, sha256, report: report.data };
  });
}

/** The runner's multipart PEFT files (adapter_config, adapter_model) for a stored PiCa adapter. */
export async function exportPeftOnRunner(env: Env, db: Database, adapter: { bytes: Uint8Array; basisId: string | null }): Promise<Response> {
  const runners = (await healthyRunners(db, env)).filter((runner) => servesBasis(runner, adapter.basisId));
  const { files } = await onFirstRunner(db, runners, "export", async (runner) => {
    const response = await fetch(`${runner.url}${PEFT_PATHS.export}`, {
      method: "POST",
      headers: { ...runnerAuthorization(env.RUNNER_SECRET), "content-type": "application/octet-stream" },
      body: adapter.bytes,
    });
    if (!response.ok) {
      // A listed runner whose basis we do not know yet may hold another one: try the next.
      await response.body?.cancel();
      return `${runner.url} answered ${response.status}`;
    }
    return { files: response }; // wrapped: a bare Response reads as a refusal in onFirstRunner
  });
  return files;
}

/**
 * Runs `attempt` on each runner until one succeeds. `attempt` answers a result, a reason the
 * runner failed (a string), or a runner response that is not OK (a 400 ends the search).
 */
async function onFirstRunner<Result>(
  db: Database,
  runners: RunnerInfo[],
  what: string,
  attempt: (runner: RunnerInfo) => Promise<Result | Response | string>,
): Promise<Result> {
  const reasons: string[] = [];
  for (const runner of runners) {
    const outcome = await attempt(runner).catch((error: unknown) => `${runner.url}: ${(error as Error).message}`);
    if (outcome instanceof Response) {
      if (outcome.status === 400 || outcome.status === 413) throw await refusal(outcome);
      await outcome.body?.cancel();
      reasons.push(`${runner.url} answered ${outcome.status}`);
      if (outcome.status >= 500) await recordRunnerFailure(db, runner.url);
      continue;
    }
    if (typeof outcome === "string") {
      reasons.push(outcome);
      await recordRunnerFailure(db, runner.url);
      continue;
    }
    await clearRunnerFailures(db, runner.url);
    return outcome;
  }
  console.error(`PEFT ${what}: no runner converted it (${reasons.join("; ") || "no runners"})`);
  throw runnerUnavailable(`No runner can convert PEFT adapters right now; please retry shortly.`);
}

// The runner's OpenAI-shaped 400, as ours (its message names the part or tensor at fault).
async function refusal(response: Response): Promise<ApiError> {
  const body = (await response.json().catch(() => null)) as { error?: { message?: string; param?: string | null; code?: string | null } } | null;
  const error = body?.error;
  return new ApiError(response.status, "invalid_request_error", error?.message ?? "The runner refused the adapter.", error?.param ?? null, error?.code ?? null);
}
