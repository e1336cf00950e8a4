// OpenAI's error shape and the one exception type the edge and the runner throw for it.
// Handlers catch ApiError and answer `status` with `toBody()`; anything else is a 500.
import type { z } from "zod";
import type { LineError } from "./training-data.ts";

/** The `error.type` values OpenAI clients understand. */
export type OpenAIErrorType = "invalid_request_error" | "authentication_error" | "permission_error" | "not_found_error" | "rate_limit_error" | "server_error";

/** The JSON body of every error response: `{error: {message, type, param, code}}`. */
export interface OpenAIErrorBody {
  error: {
    message: string;
    type: OpenAIErrorType;
    param: string | null;
    code: string | null;
    /** A refused file's bad lines (1-based), the first ones of them, where the error is about lines. */
    lines?: LineError[];
  };
}

/** An error that knows its HTTP status and its OpenAI-shaped body. */
export class ApiError extends Error {
  override readonly name = "ApiError";

  constructor(
    readonly status: number,
    readonly type: OpenAIErrorType,
    message: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
    /** Seconds a client should wait before retrying (429s and retriable 503s). */
    readonly retryAfterSeconds: number | null = null,
  ) {
    super(message);
  }

  /** The bad lines of a refused file, when that is what this error is about. */
  lines: LineError[] | null = null;

  /** The response body for this error. */
  toBody(): OpenAIErrorBody {
    const body: OpenAIErrorBody = { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
    if (this.lines !== null) body.error.lines = this.lines;
    return body;
  }
}

/** 400: the request is malformed; `param` names the offending field. */
export function badRequest(message: string, param: string | null = null, code: string | null = null): ApiError {
  return new ApiError(400, "invalid_request_error", message, param, code);
}

/** 401: missing or invalid credentials. */
export function unauthorized(message: string, code: string | null = "invalid_api_key"): ApiError {
  return new ApiError(401, "authentication_error", message, null, code);
}

/** 403: valid credentials without the right to do this. */
export function forbidden(message: string, param: string | null = null, code: string | null = null): ApiError {
  return new ApiError(403, "permission_error", message, param, code);
}

/** 404: the named resource does not exist (or is not visible to the caller). */
export function notFound(message: string, param: string | null = null, code: string | null = null): ApiError {
  return new ApiError(404, "not_found_error", message, param, code);
}

/** 429: over a rate limit; the caller should set `Retry-After` from `retryAfterSeconds`. */
export function rateLimited(message: string, retryAfterSeconds: number): ApiError {
  return new ApiError(429, "rate_limit_error", message, null, "rate_limit_exceeded", retryAfterSeconds);
}

/** 503: temporarily unable to serve this; a retry after `retryAfterSeconds` may succeed. */
export function serviceUnavailable(message: string, code: string, retryAfterSeconds: number): ApiError {
  return new ApiError(503, "server_error", message, null, code, retryAfterSeconds);
}

/** 500: our fault; the message must not leak internals. */
export function serverError(message = "The server had an error while processing your request.", code: string | null = null): ApiError {
  return new ApiError(500, "server_error", message, null, code);
}

/** Formats a zod path the way OpenAI names parameters: `messages[1].content[0].text`. */
export function formatParamPath(path: readonly PropertyKey[], root?: string): string | null {
  let out = root ?? "";
  for (const key of path) {
    if (typeof key === "number") out += `[${key}]`;
    else out += out === "" ? String(key) : `.${String(key)}`;
  }
  return out === "" ? null : out;
}

/**
 * Turns the first zod issue into a 400 that names the field, as OpenAI does
 * ("Invalid value for 'temperature': …"). `root` prefixes the path when a sub-object was parsed.
 */
export function fromZodError(error: z.ZodError, root?: string): ApiError {
  const first = error.issues[0];
  if (first === undefined) return badRequest("Invalid request body.");
  const { issue, path } = mostSpecificIssue(first, first.path);
  if (issue.code === "unrecognized_keys") {
    // OpenAI's wording for a field it does not know, naming the first such field.
    const unknown = formatParamPath([...path, issue.keys[0]], root);
    return badRequest(`Unrecognized request argument supplied: ${unknown}`, unknown, "unknown_parameter");
  }
  const param = formatParamPath(path, root);
  const name = param === null ? "the request body" : `'${param}'`;

  const expected = expectedType(issue);
  if (expected !== null) {
    const received = receivedType(issue);
    if (received === "undefined" && param !== null) {
      return badRequest(`Missing required parameter: ${name}.`, param, "missing_required_parameter");
    }
    if (param === null) return badRequest("The request body must be a JSON object.", null, "invalid_type");
    return badRequest(`Invalid type for ${name}: expected ${expected}, but got ${received} instead.`, param, "invalid_type");
  }
  // A custom issue may carry its own code (e.g. `unsupported_parameter`).
  const code = issue.code === "custom" && typeof issue.params?.code === "string" ? issue.params.code : "invalid_value";
  return badRequest(`Invalid value for ${name}: ${issue.message}`, param, code);
}

type Issue = z.core.$ZodIssue;

// A union issue ("Invalid input") says nothing useful. When exactly one branch accepted the
// value's type (e.g. `stop` is an array, but too long), that branch's issue is the real one.
function mostSpecificIssue(issue: Issue, path: readonly PropertyKey[]): { issue: Issue; path: readonly PropertyKey[] } {
  if (issue.code !== "invalid_union") return { issue, path };
  const typeMatched = issue.errors.filter((branch) => {
    const head = branch[0];
    return head !== undefined && !(head.code === "invalid_type" && head.path.length === 0);
  });
  const only = typeMatched.length === 1 ? typeMatched[0][0] : undefined;
  if (only === undefined) return { issue, path };
  return mostSpecificIssue(only, [...path, ...only.path]);
}

// The expected type for a type mismatch, also when every branch of a union rejected the type.
function expectedType(issue: Issue): string | null {
  if (issue.code === "invalid_type") return describeExpected(issue.expected);
  if (issue.code !== "invalid_union") return null;
  const heads = issue.errors.map((branch) => branch[0]);
  if (heads.length === 0 || !heads.every((head) => head?.code === "invalid_type" && head.path.length === 0)) return null;
  return heads.map((head) => describeExpected((head as z.core.$ZodIssueInvalidType).expected)).join(" or ");
}

// zod reports the input only when parsed with `reportInput: true`; otherwise read its message.
function receivedType(issue: Issue): string {
  if ("input" in issue) return describeValue(issue.input);
  const union = issue.code === "invalid_union" ? issue.errors[0]?.[0] : issue;
  return union !== undefined && /received undefined$/.test(union.message) ? "undefined" : "a value of another type";
}

function describeExpected(expected: string): string {
  switch (expected) {
    case "int":
      return "an integer";
    case "number":
      return "a number";
    case "string":
      return "a string";
    case "boolean":
      return "a boolean";
    case "array":
      return "an array";
    case "object":
      return "an object";
    default:
      return expected;
  }
}

function describeValue(value: unknown): string {
  if (value === undefined) return "undefined";
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "number") return Number.isInteger(value) ? "an integer" : "a decimal";
  if (typeof value === "string") return "a string";
  if (typeof value === "boolean") return "a boolean";
  if (typeof value === "object") return "an object";
  return typeof value;
}
