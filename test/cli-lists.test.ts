/**
 * The `pica` CLI's lists against a small fake of the edge's cursor pages: every item of a long
 * list is printed once, `--limit` and `--after` print a slice, and stderr says how to go on
 * when items remain; and `jobs create`, which prints the new job and how to follow it. The
 * command runs as users run it, through cli/pica.mjs.
 */
import { execFile } from "node:child_process";
import { once } from "node:events";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PAGE_LIMITS } from "../src/protocol/list-page.ts";

const adapters = Array.from({ length: 250 }, (_, i) => ({ id: `ft:base:tenant::job${String(249 - i).padStart(3, "0")}`, source: "fine_tune" }));
const models = [{ id: "pica-base-4m", owned_by: "system" }, ...adapters.slice(0, 3).map((adapter) => ({ id: adapter.id, owned_by: "tenant" }))];
const checkpoints = [30, 20, 10].map((step) => ({
  id: `ftckpt-${step}`,
  step_number: step,
  metrics: { step, train_loss: step / 100, learning_rate: null },
  fine_tuned_model_checkpoint: `ft:base:tenant::job1:ckpt-step-${step}`,
}));
const files = Array.from({ length: 5 }, (_, i) => ({ id: `file-${i}`, filename: `train-${i}.jsonl`, bytes: 100 + i }));
const jobs = Array.from({ length: 45 }, (_, i) => ({
  id: `ftjob-${String(i).padStart(2, "0")}`,
  status: "succeeded",
  fine_tuned_model: `ft:base:tenant::ftjob-${i}`,
}));

const LISTS: Record<string, { id: string }[]> = {
  "/v1/adapters": adapters,
  "/v1/models": models,
  "/v1/files": files,
  "/v1/fine_tuning/jobs": jobs,
  "/v1/fine_tuning/jobs/ftjob-01/checkpoints": checkpoints,
};

/** What the fake edge was asked, one `path?query` per request (`POST path` for a creation). */
const requests: string[] = [];
/** The body of the last creation the fake edge was sent. */
let created: unknown = null;

// A job as the edge answers its creation: no fine-tuned model yet.
const NEW_JOB = { object: "fine_tuning.job", id: "ftjob-new", model: "pica-base-4m", status: "validating_files", fine_tuned_model: null, error: null };
let server: Server;
let edgeUrl = "";

// OpenAI's cursor pages over a fixed list: limit (default 20), after an id, has_more.
function answer(url: URL): { status: number; body: unknown } {
  const items = LISTS[url.pathname];
  if (items === undefined) return { status: 404, body: { error: { message: "No such job.", type: "not_found_error", param: null, code: "not_found" } } };
  const limit = Number(url.searchParams.get("limit") ?? 20);
  const after = url.searchParams.get("after");
  const start = after === null ? 0 : items.findIndex((item) => item.id === after) + 1;
  if (after !== null && start === 0) {
    return { status: 400, body: { error: { message: `No item ${after}.`, type: "invalid_request_error", param: "after", code: "invalid_cursor" } } };
  }
  const data = items.slice(start, start + limit);
  return {
    status: 200,
    body: { object: "list", data, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null, has_more: start + limit < items.length },
  };
}

beforeAll(async () => {
  server = createServer((request, response) => {
    const url = new URL(request.url ?? "/", "http://edge.test");
    const send = ({ status, body }: { status: number; body: unknown }) =>
      response.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
    if (request.method === "POST" && url.pathname === "/v1/fine_tuning/jobs") {
      requests.push(`POST ${url.pathname}`);
      let text = "";
      request.on("data", (chunk: Buffer) => (text += chunk.toString()));
      request.on("end", () => {
        created = JSON.parse(text);
        send({ status: 201, body: NEW_JOB });
      });
      return;
    }
    requests.push(`${url.pathname}${url.search}`);
    send(answer(url));
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  edgeUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => server?.close());

/** Runs `pica ARGS` against the fake edge. */
async function pica(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  requests.length = 0;
  const env = { ...process.env, PICA_URL: edgeUrl, PICA_API_KEY: "sk-pica-test", PICA_CONFIG: join(import.meta.dirname, "no-such-config.json") };
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, ["cli/pica.mjs", ...args], { cwd: join(import.meta.dirname, ".."), env });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code: number; stdout: string; stderr: string };
    return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr };
  }
}

const lines = (text: string) => text.split("\n").filter((line) => line !== "");

describe("pica lists", () => {
  it("prints every adapter of a long list once, page by page, and says nothing of more", async () => {
    const run = await pica("adapters", "list");
    expect(run.code).toBe(0);
    expect(lines(run.stdout)).toEqual(adapters.map((adapter) => `${adapter.id}  fine_tune`));
    expect(run.stderr).toBe("");
    const pageSize = PAGE_LIMITS.adapters.max;
    expect(requests).toEqual([
      `/v1/adapters?limit=${pageSize}`,
      `/v1/adapters?limit=${pageSize}&after=${encodeURIComponent(adapters[pageSize - 1].id)}`,
      `/v1/adapters?limit=${pageSize}&after=${encodeURIComponent(adapters[2 * pageSize - 1].id)}`,
    ]);
  }, 60_000);

  it("prints --limit items from --after, and tells how to continue when more exist", async () => {
    const first = await pica("adapters", "list", "--limit", "30");
    expect(lines(first.stdout)).toEqual(adapters.slice(0, 30).map((adapter) => `${adapter.id}  fine_tune`));
    expect(first.stderr).toBe(`more items follow; continue with: pica adapters list --after ${adapters[29].id}\n`);
    expect(requests).toEqual(["/v1/adapters?limit=30"]);

    const next = await pica("adapters", "list", "--limit", "220", "--after", adapters[29].id);
    expect(lines(next.stdout)).toEqual(adapters.slice(30).map((adapter) => `${adapter.id}  fine_tune`));
    expect(next.stderr).toBe("");

    const spanning = await pica("jobs", "list", "--limit", "44");
    expect(lines(spanning.stdout)).toHaveLength(44);
    expect(spanning.stderr).toContain(`--after ${jobs[43].id}`);
  }, 60_000);

  it("lists models, files, jobs and a job's checkpoints", async () => {
    const listed = await pica("models", "list");
    expect(lines(listed.stdout)).toEqual(models.map((model) => `${model.id}  ${model.owned_by}`));
    expect(lines((await pica("files", "list")).stdout)).toEqual(files.map((file) => `${file.id}  ${file.filename}  ${file.bytes} bytes`));
    expect(lines((await pica("jobs", "list")).stdout).map((line) => line.split(" ")[0])).toEqual(jobs.map((job) => job.id));

    const checkpointsRun = await pica("jobs", "checkpoints", "ftjob-01", "--limit", "2");
    expect(lines(checkpointsRun.stdout)).toEqual([
      "ftckpt-30  step 30  loss 0.3000  ft:base:tenant::job1:ckpt-step-30",
      "ftckpt-20  step 20  loss 0.2000  ft:base:tenant::job1:ckpt-step-20",
    ]);
    expect(checkpointsRun.stderr).toBe("more items follow; continue with: pica jobs checkpoints ftjob-01 --after ftckpt-20\n");
  }, 60_000);

  it("refuses a bad --limit before calling the API, and shows the API's error for a bad cursor or job", async () => {
    for (const bad of ["0", "-3", "2.5", "many"]) {
      const run = await pica("files", "list", "--limit", bad);
      expect(run.code, bad).toBe(2);
      expect(run.stderr, bad).toMatch(/--limit/);
    }
    const cursor = await pica("adapters", "list", "--after", "nope");
    expect(cursor.code).toBe(1);
    expect(cursor.stderr).toBe("error (400): No item nope. [after]\n");
    expect((await pica("jobs", "checkpoints", "ftjob-nope")).code).toBe(1);
    expect((await pica("jobs", "checkpoints")).code).toBe(2);
  }, 60_000);
});

describe("pica jobs create", () => {
  it("sends the job and prints its id and status, then how to follow it, never a model id it does not have yet", async () => {
    const run = await pica("jobs", "create", "--file", "file-3", "--suffix", "mood", "--epochs", "8", "--rank", "16");
    expect(run.code).toBe(0);
    expect(requests).toEqual(["POST /v1/fine_tuning/jobs"]);
    expect(created).toEqual({
      model: "pica-base-4m",
      training_file: "file-3",
      suffix: "mood",
      method: { type: "supervised", supervised: { hyperparameters: { n_epochs: 8, rank: 16 } } },
    });
    expect(run.stdout).toBe("ftjob-new  validating_files\n");
    expect(run.stderr).toBe("follow it with: pica jobs watch ftjob-new\n");
    expect((await pica("jobs", "create")).code).toBe(2);
  }, 60_000);
});
