import { afterEach, describe, expect, it, vi } from "vitest";
import { ApiError } from "../../src/errors.ts";
import { AdapterCacheFullError, AdapterInUseError, AdapterRejectedError } from "../adapters/adapter-cache.ts";
import { AdapterNotFoundError } from "../adapters/adapter-store.ts";
import { AdapterNotLoadedError, BasisNotReadyError } from "../engine/adapter-registry.ts";
import { GenerationError, PromptTooLongError } from "../generate/generate.ts";
import { JobConflictError, JobRequestError } from "../jobs/job-manager.ts";
import { toApiError } from "./api-errors.ts";
import { QueueFullError } from "./scheduler.ts";

const cacheState = { pinned: 2, resident: 2, residentBytes: 512, maxAdapters: 2, maxBytes: 1024 };

afterEach(() => vi.restoreAllMocks());

describe("toApiError", () => {
  it.each<[string, unknown, { status: number; type: string; param: string | null; code: string | null; retryAfterSeconds: number | null }]>([
    [
      "a prompt over the context",
      new PromptTooLongError(45, 40, 512),
      { status: 400, type: "invalid_request_error", param: "messages", code: "context_length_exceeded", retryAfterSeconds: null },
    ],
    [
      "other generation errors",
      new GenerationError("stop sequences must not be empty"),
      { status: 400, type: "invalid_request_error", param: null, code: null, retryAfterSeconds: null },
    ],
    [
      "an adapter not registered with the engine",
      new AdapterNotLoadedError("tenant-1"),
      { status: 404, type: "not_found_error", param: "model", code: "model_not_found", retryAfterSeconds: null },
    ],
    [
      "an adapter the store does not have",
      new AdapterNotFoundError("tenant-1"),
      { status: 404, type: "not_found_error", param: "model", code: "model_not_found", retryAfterSeconds: null },
    ],
    [
      "an adapter file that does not load",
      new AdapterRejectedError("tenant-1", "load", new Error("tensors_sha256 mismatch")),
      { status: 422, type: "invalid_request_error", param: "model", code: "adapter_invalid", retryAfterSeconds: null },
    ],
    [
      "an adapter the engine refuses",
      new AdapterRejectedError("tenant-1", "register", new Error("basis id b differs")),
      { status: 422, type: "invalid_request_error", param: "model", code: "adapter_invalid", retryAfterSeconds: null },
    ],
    [
      "a full adapter cache",
      new AdapterCacheFullError("tenant-1", 256, cacheState),
      { status: 429, type: "rate_limit_error", param: null, code: "rate_limit_exceeded", retryAfterSeconds: 1 },
    ],
    [
      "an adapter in use",
      new AdapterInUseError("tenant-1"),
      { status: 409, type: "invalid_request_error", param: "id", code: "adapter_in_use", retryAfterSeconds: null },
    ],
    [
      "a basis still being computed",
      new BasisNotReadyError(),
      { status: 503, type: "server_error", param: null, code: "basis_not_ready", retryAfterSeconds: 5 },
    ],
    ["a full queue", new QueueFullError(3), { status: 429, type: "rate_limit_error", param: null, code: "rate_limit_exceeded", retryAfterSeconds: 3 }],
    [
      "a job request the runner cannot train",
      new JobRequestError("hyperparameters.rank", "rank 64 is above the serving rank 8"),
      { status: 400, type: "invalid_request_error", param: "hyperparameters.rank", code: null, retryAfterSeconds: null },
    ],
    [
      "a job id reused for another request",
      new JobConflictError("job-1 exists with another request"),
      { status: 409, type: "invalid_request_error", param: "id", code: "job_conflict", retryAfterSeconds: null },
    ],
  ])("maps %s by its class", (_, error, expected) => {
    const api = toApiError(error);
    expect({ status: api.status, type: api.type, param: api.param, code: api.code, retryAfterSeconds: api.retryAfterSeconds }).toEqual(expected);
    expect(api.message).toContain((error as Error).message);
  });

  it("keeps the messages clients and tests read", () => {
    expect(toApiError(new PromptTooLongError(45, 40, 512)).message).toBe(
      "prompt has 45 tokens; this runner holds 40 tokens per sequence (its KV cache memory budget; the model's own context is 512), prompt plus completion",
    );
    expect(toApiError(new PromptTooLongError(600, 512, 512)).message).toBe("prompt has 600 tokens; the model's context is 512 tokens, prompt plus completion");
    expect(toApiError(new AdapterRejectedError("a", "load", new Error("connection reset"))).message).toBe("adapter a could not be loaded: connection reset");
    expect(toApiError(new AdapterRejectedError("a", "register", new Error("rank 9"))).message).toBe("adapter a was refused by the engine: rank 9");
    expect(toApiError(new AdapterCacheFullError("d", 256, cacheState)).message).toBe(
      "adapter cache is full: cannot load adapter d (256 bytes) with 2 of 2 resident adapters pinned (512 bytes resident; limits 2 adapters, 1024 bytes)",
    );
    expect(toApiError(new AdapterNotLoadedError("x")).message).toBe("The model does not exist or you do not have access to it (adapter x is not loaded).");
  });

  it("passes an ApiError through unchanged", () => {
    const error = new ApiError(418, "invalid_request_error", "teapot", "body", "teapot");
    expect(toApiError(error)).toBe(error);
  });

  it("does not read messages: an unforeseen error that reads like a known one is a generic 500", () => {
    const logged = vi.spyOn(console, "error").mockImplementation(() => {});
    for (const message of [
      "adapter x is not loaded",
      "adapter x could not be loaded: y",
      "adapter x was refused by the engine: y",
      "adapter cache is full",
      "prompt has 9 tokens",
    ]) {
      const api = toApiError(new Error(message));
      expect(api.status).toBe(500);
      expect(api.message).not.toContain(message);
    }
    expect(logged).toHaveBeenCalledTimes(5);
  });
});
