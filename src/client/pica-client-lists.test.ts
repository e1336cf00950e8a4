/** The client's lists: the page iterator and the paths and cursors each list method asks for. */
import { describe, expect, it } from "vitest";
import { PicaApiError, PicaClient } from "./pica-client.ts";

/** A client whose fetch answers from `pages` by the request's `after`, recording every URL asked. */
function clientOver(pages: Record<string, unknown>) {
  const asked: string[] = [];
  const client = new PicaClient({
    baseUrl: "http://edge.test/",
    apiKey: "sk-pica-test",
    fetch: async (input) => {
      const url = new URL(String(input));
      asked.push(`${url.pathname}${url.search}`);
      const page = pages[url.searchParams.get("after") ?? ""];
      if (page === undefined)
        return Response.json({ error: { message: "bad cursor", type: "invalid_request_error", param: "after", code: "invalid_cursor" } }, { status: 400 });
      return Response.json(page);
    },
  });
  return { client, asked };
}

const page = (ids: string[], hasMore: boolean) => ({
  object: "list",
  data: ids.map((id) => ({ id })),
  first_id: ids[0] ?? null,
  last_id: ids.at(-1) ?? null,
  has_more: hasMore,
});

describe("PicaClient.pages", () => {
  it("follows last_id while has_more, with the limit on every request", async () => {
    const { client, asked } = clientOver({ "": page(["c", "b"], true), b: page(["a", "z"], true), z: page(["y"], false) });
    const seen: string[] = [];
    for await (const each of client.pages((params) => client.listAdapters(params), { limit: 2 })) seen.push(...each.data.map((item) => item.id));
    expect(seen).toEqual(["c", "b", "a", "z", "y"]);
    expect(asked).toEqual(["/v1/adapters?limit=2", "/v1/adapters?limit=2&after=b", "/v1/adapters?limit=2&after=z"]);
  });

  it("starts after a given id, lets the caller stop early, and names every list's path", async () => {
    const { client, asked } = clientOver({ j: page(["k"], true), k: page(["l"], false) });
    for await (const each of client.pages((params) => client.listCheckpoints("ftjob-1", params), { after: "j" })) {
      expect(each.data).toEqual([{ id: "k" }]);
      break;
    }
    await client.listModels({ after: "j" });
    await client.listFiles({ after: "j", limit: 5 });
    await client.listJobs({ after: "j" });
    expect(asked).toEqual([
      "/v1/fine_tuning/jobs/ftjob-1/checkpoints?after=j",
      "/v1/models?after=j",
      "/v1/files?limit=5&after=j",
      "/v1/fine_tuning/jobs?after=j",
    ]);
  });

  it("refuses a page that says more follow but names no new last item, and throws the API's errors", async () => {
    const stuck = clientOver({ "": { ...page([], true), last_id: null } });
    await expect(async () => {
      for await (const _ of stuck.client.pages((params) => stuck.client.listJobs(params))) void _;
    }).rejects.toThrow(/names no new last item/);
    const refused = clientOver({});
    const error = await refused.client.listFiles({ after: "nope" }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(PicaApiError);
    expect((error as PicaApiError).body).toMatchObject({ param: "after", code: "invalid_cursor" });
  });
});
