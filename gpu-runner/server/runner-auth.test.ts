/**
 * The runner secret guards every route: the table below lists every method and path the runner
 * app has (checked against the app's own route list, so a new route cannot slip past), and each
 * is refused without the secret, with a wrong or malformed one, and served with the right one.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { INVALID_RUNNER_SECRET_CODE, PEFT_PATHS, RUNNER_PATHS, runnerAuthorization } from "../../src/protocol/runner.ts";
import { LlamaEngine } from "../engine/llama-engine.ts";
import { tinyModel } from "../testing/tiny-checkpoints.ts";
import { makeByteLevelTokenizerFiles } from "../tokenizer/byte-level.ts";
import { TextTokenizer } from "../tokenizer/tokenizer.ts";
import { createRunnerApp } from "./app.ts";
import { RunnerMetrics } from "./metrics.ts";
import { assertUsableSecret } from "./runner-auth.ts";
import { Scheduler } from "./scheduler.ts";

const files = makeByteLevelTokenizerFiles();
const tokenizer = TextTokenizer.fromJson(files.tokenizerJson, files.tokenizerConfig);
const { config, weights } = tinyModel("llama-gqa");
const SECRET = "runner-auth-test-secret";

const completion = JSON.stringify({ model: "tiny", prompt: "hi", max_tokens: 2, temperature: 0 });
const chat = JSON.stringify({ model: "tiny", messages: [{ role: "user", content: "hi" }], max_tokens: 2, temperature: 0 });

/** Every route, its Hono pattern, a request to it, and what it answers once the secret is right. */
const ROUTES: { method: string; pattern: string; path: string; body?: string; served: number }[] = [
  { method: "GET", pattern: RUNNER_PATHS.metrics, path: RUNNER_PATHS.metrics, served: 200 },
  { method: "GET", pattern: RUNNER_PATHS.health, path: RUNNER_PATHS.health, served: 200 },
  { method: "GET", pattern: RUNNER_PATHS.models, path: RUNNER_PATHS.models, served: 200 },
  { method: "POST", pattern: RUNNER_PATHS.chatCompletions, path: RUNNER_PATHS.chatCompletions, body: chat, served: 200 },
  { method: "POST", pattern: RUNNER_PATHS.completions, path: RUNNER_PATHS.completions, body: completion, served: 200 },
  // This runner neither trains nor caches adapters: its internal routes say so with a 404.
  { method: "GET", pattern: RUNNER_PATHS.adapters, path: RUNNER_PATHS.adapters, served: 404 },
  { method: "PUT", pattern: RUNNER_PATHS.adapter(":id{.+}"), path: RUNNER_PATHS.adapter("a"), body: "x", served: 404 },
  { method: "DELETE", pattern: RUNNER_PATHS.adapter(":id{.+}"), path: RUNNER_PATHS.adapter("a"), served: 404 },
  { method: "POST", pattern: RUNNER_PATHS.jobs, path: RUNNER_PATHS.jobs, body: JSON.stringify({ id: "j", training_file: { content: "x" } }), served: 404 },
  { method: "POST", pattern: PEFT_PATHS.import, path: PEFT_PATHS.import, body: "x", served: 404 },
  { method: "POST", pattern: PEFT_PATHS.export, path: PEFT_PATHS.export, body: "x", served: 404 },
  { method: "GET", pattern: RUNNER_PATHS.jobs, path: RUNNER_PATHS.jobs, served: 404 },
  { method: "GET", pattern: RUNNER_PATHS.job(":id"), path: RUNNER_PATHS.job("j"), served: 404 },
  { method: "POST", pattern: RUNNER_PATHS.cancelJob(":id"), path: RUNNER_PATHS.cancelJob("j"), served: 404 },
  { method: "GET", pattern: RUNNER_PATHS.jobAdapter(":id"), path: RUNNER_PATHS.jobAdapter("j"), served: 404 },
];

const REFUSED: [string, Record<string, string>][] = [
  ["no header", {}],
  ["a wrong secret", runnerAuthorization("not-the-runner-secret")],
  ["the secret with a byte more", runnerAuthorization(`${SECRET}x`)],
  ["the secret cut short", runnerAuthorization(SECRET.slice(0, -1))],
  ["another scheme", { authorization: `Basic ${SECRET}` }],
  ["a malformed token", { authorization: `Bearer ${SECRET} extra` }],
  ["an empty token", { authorization: "Bearer " }],
];

describe("the runner secret", () => {
  let engine: LlamaEngine;
  let app: ReturnType<typeof createRunnerApp>;
  beforeAll(async () => {
    engine = await LlamaEngine.create(config, weights);
    const scheduler = new Scheduler(engine, tokenizer, { maxBatch: 2, maxQueue: 8 });
    app = createRunnerApp({
      engine,
      tokenizer,
      scheduler,
      modelId: "tiny",
      metrics: new RunnerMetrics({ scheduler: () => scheduler.stats }),
      secret: SECRET,
      internal: { jobs: null, adapters: null, publishAdapter: null },
    });
  });
  afterAll(() => engine.dispose());

  const send = (route: { method: string; path: string; body?: string }, headers: Record<string, string>) =>
    Promise.resolve(app.request(route.path, { method: route.method, headers: { "content-type": "application/json", ...headers }, body: route.body }));

  it("the table lists every route the app has", () => {
    const routes = app.routes.filter((route) => route.method !== "ALL").map((route) => `${route.method} ${route.path}`);
    expect(new Set(routes)).toEqual(new Set(ROUTES.map((route) => `${route.method} ${route.pattern}`)));
  });

  for (const route of ROUTES) {
    it(`${route.method} ${route.pattern} is refused without the right secret and served with it`, async () => {
      for (const [what, headers] of REFUSED) {
        const response = await send(route, headers);
        expect(response.status, what).toBe(401);
        expect(response.headers.get("www-authenticate"), what).toBe("Bearer");
        expect(await response.json(), what).toMatchObject({ error: { type: "authentication_error", param: null, code: INVALID_RUNNER_SECRET_CODE } });
      }
      const served = await send(route, runnerAuthorization(SECRET));
      expect(served.status).toBe(route.served);
      if (route.served >= 400) expect(((await served.json()) as { error: { code: string | null } }).error.code).not.toBe(INVALID_RUNNER_SECRET_CODE);
      else await served.body?.cancel();
    });
  }

  it("an unknown route is a 401 without the secret and a 404 with it", async () => {
    const unknown = { method: "GET", path: "/v1/nothing-here" };
    expect((await send(unknown, {})).status).toBe(401);
    const found = await send(unknown, runnerAuthorization(SECRET));
    expect(found.status).toBe(404);
    expect(((await found.json()) as { error: { message: string } }).error.message).toContain("/v1/nothing-here");
  });

  it("the internal API cannot be mounted without a secret", () => {
    const scheduler = new Scheduler(engine, tokenizer, { maxBatch: 1, maxQueue: 1 });
    expect(() => createRunnerApp({ engine, tokenizer, scheduler, internal: { jobs: null, adapters: null, publishAdapter: null } })).toThrow(/secret/);
  });

  it("a runner without a secret is open to everyone (local use)", async () => {
    const open = createRunnerApp({ engine, tokenizer, scheduler: new Scheduler(engine, tokenizer, { maxBatch: 1, maxQueue: 1 }), modelId: "tiny" });
    expect((await open.request(RUNNER_PATHS.health)).status).toBe(200);
  });

  it("refuses secrets a bearer header cannot carry, or too short to be secret", () => {
    expect(() => assertUsableSecret("has space in it here")).toThrow(/only/);
    expect(() => assertUsableSecret("short")).toThrow(/at least 16/);
    expect(() => assertUsableSecret(SECRET)).not.toThrow();
  });
});
