/**
 * The edge's HTTP policy, applied in index.ts before any route: a request id on every response,
 * CORS for the public API only (browsers may call /v1 with a tenant key; /admin and /internal are
 * never called from a page), and request body limits per route family with a 413 an OpenAI
 * client can read.
 */
import type { MiddlewareHandler } from "hono";
import { cors } from "hono/cors";
import { requestId } from "hono/request-id";
import { JSON_BODY_LIMIT, limitBody } from "../../../src/request-body.ts";
import type { AppEnv } from "../env.ts";

const MiB = 1024 * 1024;
/** JSON APIs: far above any legitimate chat request, far below what would strain an isolate. */
export { JSON_BODY_LIMIT };
/** Training files, imported adapters and internal blob uploads (adapters, trainer state). */
export const UPLOAD_BODY_LIMIT = 64 * MiB;

// Routes that take uploads; every other route gets the JSON limit.
const UPLOAD_ROUTES: { method: string; pattern: RegExp }[] = [
  { method: "POST", pattern: /^\/v1\/files\/?$/ },
  { method: "POST", pattern: /^\/v1\/adapters\/import\/?$/ },
  { method: "*", pattern: /^\/internal\// },
];

/** The most bytes a request to `method path` may carry. */
export function maxBodyBytes(method: string, path: string): number {
  const upload = UPLOAD_ROUTES.some((route) => (route.method === "*" || route.method === method) && route.pattern.test(path));
  return upload ? UPLOAD_BODY_LIMIT : JSON_BODY_LIMIT;
}

/** Refuses a body over its route's limit with a 413 (by Content-Length at once, else while read). */
export function limitBodies(): MiddlewareHandler<AppEnv> {
  return async (c, next) => limitBody(maxBodyBytes(c.req.method, c.req.path))(c, next);
}

/** CORS for the public API: any origin may call it with a bearer key (no cookies are involved). */
export function publicCors(): MiddlewareHandler<AppEnv> {
  return cors({
    origin: "*",
    allowMethods: ["GET", "POST", "DELETE", "OPTIONS"],
    allowHeaders: ["Authorization", "Content-Type"],
    exposeHeaders: ["Retry-After", "x-request-id"],
    maxAge: 600,
  });
}

/**
 * `x-request-id` on every response (the caller's own when it sent a sane one, else a new UUID),
 * also on responses a handler built itself, such as a stream passed through from a runner.
 */
export function requestIds(): MiddlewareHandler<AppEnv> {
  const assign = requestId({ headerName: "x-request-id" });
  return async (c, next) => {
    await assign(c, next);
    const id = c.get("requestId");
    if (c.res.headers.get("x-request-id") === id) return;
    try {
      c.res.headers.set("x-request-id", id);
    } catch {
      c.res = new Response(c.res.body, c.res); // a fetched response's headers are immutable
      c.res.headers.set("x-request-id", id);
    }
  };
}
