// Reading a request's body the same way at the edge and on the runner: bounded in size, and
// JSON that does not parse is a 400 an OpenAI client can read.
import type { MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { ApiError, badRequest } from "./errors.ts";

/** What a JSON API route accepts at most, at the edge and (at least) on a runner's public routes. */
export const JSON_BODY_LIMIT = 1024 * 1024;

/** Anything with a Hono-style request (`c.req.json()`). */
export interface HasJsonRequest {
  req: { json(): Promise<unknown> };
}

/** The request's JSON body; a body that is not JSON is a 400 an OpenAI client can read. */
export async function jsonBody(c: HasJsonRequest): Promise<unknown> {
  try {
    return await c.req.json();
  } catch {
    throw badRequest("We could not parse the JSON body of your request. The body must be a JSON object.", null, "invalid_json");
  }
}

/** 413: a body over `maxBytes`. */
export function tooLarge(maxBytes: number, what = "The request body"): ApiError {
  return new ApiError(413, "invalid_request_error", `${what} is larger than this route accepts (${maxBytes} bytes).`, null, "request_too_large");
}

/**
 * Refuses a body over `maxBytes` with a 413: at once when its Content-Length says so, else as soon
 * as the bytes read pass the limit (a chunked body is never read further).
 */
export function limitBody(maxBytes: number, what?: string): MiddlewareHandler {
  return bodyLimit({ maxSize: maxBytes, onError: (c) => c.json(tooLarge(maxBytes, what).toBody(), 413) });
}
