/** Test helpers for the edge: tenants and keys made through the admin API, JSON requests. */
import { SELF } from "cloudflare:test";

export const ADMIN = { authorization: "Bearer test-admin-token" };

export async function call(method: string, path: string, options: { key?: string; headers?: Record<string, string>; json?: unknown; body?: BodyInit } = {}): Promise<Response> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.key !== undefined) headers.authorization = `Bearer ${options.key}`;
  let body = options.body;
  if (options.json !== undefined) {
    headers["content-type"] = "application/json";
    body = JSON.stringify(options.json);
  }
  return SELF.fetch(`http://edge.test${path}`, { method, headers, body });
}

/** A new tenant with one key of the given scopes. */
export async function tenantWithKey(scopes: string[] = ["inference", "fine_tuning"]): Promise<{ tenantId: string; key: string; keyId: string }> {
  const tenant = (await (await call("POST", "/admin/tenants", { headers: ADMIN, json: { name: "acme" } })).json()) as { id: string };
  const issued = (await (await call("POST", `/admin/tenants/${tenant.id}/keys`, { headers: ADMIN, json: { name: "k", scopes } })).json()) as { id: string; key: string };
  return { tenantId: tenant.id, key: issued.key, keyId: issued.id };
}

/** The OpenAI-shaped error of a response. */
export async function errorOf(response: Response): Promise<{ message: string; type: string; param: string | null; code: string | null }> {
  return ((await response.json()) as { error: { message: string; type: string; param: string | null; code: string | null } }).error;
}
