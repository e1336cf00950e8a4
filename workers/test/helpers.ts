/** Test helpers for the edge: tenants and keys made through the admin API, JSON requests. */
import { createExecutionContext, createMessageBatch, env, getQueueResult, SELF } from "cloudflare:test";
import { consumeTasks } from "../src/queue/consumer.ts";
import type { TaskMessage } from "../src/queue/messages.ts";

export const ADMIN = { authorization: "Bearer test-admin-token" };

export async function call(method: string, path: string, options: RequestOptions = {}): Promise<Response> {
  return SELF.fetch(edgeRequest(method, path, options));
}

export interface RequestOptions {
  key?: string;
  headers?: Record<string, string>;
  json?: unknown;
  body?: BodyInit;
}

/** A request to the edge: a tenant key as bearer token, a JSON body or a raw one. */
export function edgeRequest(method: string, path: string, options: RequestOptions = {}): Request {
  const headers: Record<string, string> = { ...options.headers };
  if (options.key !== undefined) headers.authorization = `Bearer ${options.key}`;
  let body = options.body;
  if (options.json !== undefined) {
    headers["content-type"] = "application/json";
    body = JSON.stringify(options.json);
  }
  return new Request(`http://edge.test${path}`, { method, headers, body });
}

/** Runs the queue consumer on one message, as the queue would on its `attempts`-th delivery. */
export async function consumeTask(task: TaskMessage, attempts = 1) {
  const batch = createMessageBatch<TaskMessage>("pica-tasks", [{ id: crypto.randomUUID(), timestamp: new Date(), attempts, body: task }]);
  const ctx = createExecutionContext();
  await consumeTasks(batch, env);
  return getQueueResult(batch, ctx);
}

/** Whether the consumer acknowledged one message or asked for it again. */
export async function consumeOnce(task: TaskMessage, attempts = 1): Promise<{ acked: boolean; retried: boolean }> {
  const result = await consumeTask(task, attempts);
  return { acked: result.explicitAcks.length === 1, retried: result.retryMessages.length === 1 };
}

/** A new tenant with one key of the given scopes. */
export async function tenantWithKey(scopes: string[] = ["inference", "fine_tuning"]): Promise<{ tenantId: string; key: string; keyId: string }> {
  const tenant = (await (await call("POST", "/admin/tenants", { headers: ADMIN, json: { name: "acme" } })).json()) as { id: string };
  const issued = (await (await call("POST", `/admin/tenants/${tenant.id}/keys`, { headers: ADMIN, json: { name: "k", scopes } })).json()) as {
    id: string;
    key: string;
  };
  return { tenantId: tenant.id, key: issued.key, keyId: issued.id };
}

/** The OpenAI-shaped error of a response. */
export async function errorOf(response: Response): Promise<{ message: string; type: string; param: string | null; code: string | null }> {
  return ((await response.json()) as { error: { message: string; type: string; param: string | null; code: string | null } }).error;
}
