/**
 * The operator's side of the edge for scripts, benchmarks and tests: a tenant (with its limits)
 * and an API key for it, through the admin API.
 */

export interface TenantRequest {
  name: string;
  requests_per_minute?: number;
  concurrent_streams?: number;
}

export interface TenantKey {
  tenantId: string;
  key: string;
}

/** What a key may do. */
export type Scope = "inference" | "fine_tuning" | "admin";

/** Creates a tenant and one key for it; throws with the edge's answer when either is refused. */
export async function createTenantWithKey(
  edgeUrl: string,
  adminToken: string,
  tenant: TenantRequest,
  scopes: Scope[] = ["inference", "fine_tuning"],
): Promise<TenantKey> {
  const headers = { authorization: `Bearer ${adminToken}`, "content-type": "application/json" };
  const created = await fetch(`${edgeUrl}/admin/tenants`, { method: "POST", headers, body: JSON.stringify(tenant) });
  if (created.status !== 201) throw new Error(`creating the tenant ${tenant.name} failed: ${created.status} ${await created.text()}`);
  const { id } = (await created.json()) as { id: string };
  const issued = await fetch(`${edgeUrl}/admin/tenants/${id}/keys`, { method: "POST", headers, body: JSON.stringify({ name: tenant.name, scopes }) });
  if (issued.status !== 201) throw new Error(`creating a key for ${tenant.name} failed: ${issued.status} ${await issued.text()}`);
  return { tenantId: id, key: ((await issued.json()) as { key: string }).key };
}
