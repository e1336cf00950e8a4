import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { database } from "../src/db/client.ts";
import { adapters } from "../src/db/schema.ts";
import { call, errorOf, tenantWithKey } from "./helpers.ts";

describe("GET /v1/adapters", () => {
  it("pages through the tenant's adapters newest first with after and limit, and names a bad cursor", async () => {
    const { tenantId, key } = await tenantWithKey();
    const other = await tenantWithKey();
    const row = (id: string, tenant: string, createdAt: number) => ({
      id,
      tenantId: tenant,
      baseModel: "pica-base-4m",
      blobKey: `k/${id}`,
      sha256: "0".repeat(64),
      bytes: 1,
      source: "fine_tune",
      createdAt,
    });
    await database(env.DB)
      .insert(adapters)
      .values([
        ...[1, 2, 3, 4, 5].map((i) => row(`ft:pica-base-4m:${tenantId}::job${i}`, tenantId, 1000 + i)),
        row(`ft:pica-base-4m:${other.tenantId}::other`, other.tenantId, 2000),
      ]);
    const seen: string[] = [];
    let after: string | null = null;
    for (let page = 0; page < 5; page++) {
      const query: string = after === null ? "?limit=2" : `?limit=2&after=${encodeURIComponent(after)}`;
      const body = (await (await call("GET", `/v1/adapters${query}`, { key })).json()) as { data: { id: string }[]; has_more: boolean; last_id: string };
      seen.push(...body.data.map((a) => a.id));
      if (!body.has_more) break;
      after = body.last_id;
    }
    expect(seen).toEqual([5, 4, 3, 2, 1].map((i) => `ft:pica-base-4m:${tenantId}::job${i}`));
    const foreignCursor = await call("GET", `/v1/adapters?after=${encodeURIComponent(`ft:pica-base-4m:${other.tenantId}::other`)}`, { key });
    expect(foreignCursor.status).toBe(400);
    expect(await errorOf(foreignCursor)).toMatchObject({ type: "invalid_request_error", param: "after", code: "invalid_cursor" });
    expect((await errorOf(await call("GET", "/v1/adapters?limit=0", { key }))).param).toBe("limit");
  });
});
