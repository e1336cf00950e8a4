/**
 * Every failure the runner can answer, as the OpenAI-shaped error a client reads: the status, the
 * message, the field at fault. Anything unforeseen is a 500 with a generic message (and logged).
 */
import { ApiError, badRequest, notFound, rateLimited, serverError, serviceUnavailable } from "../../src/errors.ts";
import { AdapterNotLoadedError, BasisNotReadyError } from "../engine/adapter-registry.ts";
import { AdapterCacheFullError, AdapterInUseError, AdapterRejectedError } from "../adapters/adapter-cache.ts";
import { AdapterNotFoundError } from "../adapters/adapter-store.ts";
import { GenerationError, PromptTooLongError } from "../generate/generate.ts";
import { JobConflictError, JobRequestError } from "../jobs/job-manager.ts";
import { QueueFullError } from "./scheduler.ts";

/** How long a client waits before asking again for an adapter while the basis is computed. */
const BASIS_RETRY_SECONDS = 5;

/** The OpenAI-shaped error for anything a runner route throws. */
export function toApiError(error: unknown): ApiError {
  if (error instanceof ApiError) return error;
  if (error instanceof QueueFullError) return rateLimited(error.message, error.retryAfterSeconds);
  if (error instanceof BasisNotReadyError) return serviceUnavailable(error.message, "basis_not_ready", BASIS_RETRY_SECONDS);
  if (error instanceof PromptTooLongError) return badRequest(error.message, "messages", "context_length_exceeded");
  if (error instanceof GenerationError) return badRequest(error.message);
  if (error instanceof JobRequestError) return badRequest(error.message, error.param);
  if (error instanceof JobConflictError) return new ApiError(409, "invalid_request_error", error.message, "id", "job_conflict");
  if (error instanceof AdapterInUseError) return new ApiError(409, "invalid_request_error", error.message, "id", "adapter_in_use");
  if (error instanceof AdapterNotFoundError || error instanceof AdapterNotLoadedError) {
    return notFound(`The model does not exist or you do not have access to it (${error.message}).`, "model", "model_not_found");
  }
  // A stored adapter that fails its hash or basis checks: the tenant can read why.
  if (error instanceof AdapterRejectedError) {
    return new ApiError(422, "invalid_request_error", error.message, "model", "adapter_invalid");
  }
  if (error instanceof AdapterCacheFullError) return rateLimited(error.message, 1);
  console.error(error);
  return serverError();
}
