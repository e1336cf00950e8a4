/**
 * The edge authenticates to runners with the runner secret on every request it forwards (the fake
 * runners refuse any request without it, so every inference test depends on it too), and a runner
 * that refuses the secret is a broken runner: the request moves on, and the tenant never sees the
 * runner's 401 as if its own key were wrong.
 */
import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { INVALID_RUNNER_SECRET_CODE, RUNNER_PATHS } from "../../src/protocol/runner.ts";
import { call, errorOf, tenantWithKey } from "./helpers.ts";
import { forgetRunners, RUNNER_A, RUNNER_B, useFakeRunners } from "./inference-helpers.ts";

const runners = useFakeRunners();

const chat = { model: env.BASE_MODEL, messages: [{ role: "user", content: "hi" }] };
const text = { model: env.BASE_MODEL, prompt: "Once" };

describe("the edge and the runner secret", () => {
  it("sends the secret with every request it forwards, streamed or not", async () => {
    const { key } = await tenantWithKey();
    for (const [path, body] of [
      [RUNNER_PATHS.chatCompletions, chat],
      [RUNNER_PATHS.completions, text],
    ] as const) {
      for (const stream of [false, true]) {
        const response = await call("POST", path, { key, json: { ...body, stream } });
        expect(response.status, `${path} stream=${stream}`).toBe(200);
        await response.text();
      }
    }
    expect(runners[RUNNER_A].hits + runners[RUNNER_B].hits).toBe(4);
    expect(runners[RUNNER_A].refusedSecrets + runners[RUNNER_B].refusedSecrets).toBe(0);
  });

  it("skips a runner that refuses the secret, and answers 503 (never the runner's 401) when all do", async () => {
    const { key } = await tenantWithKey();
    runners[RUNNER_A].secret = "a-secret-from-another-deployment";
    for (let i = 0; i < 4; i++) {
      const served = await call("POST", RUNNER_PATHS.completions, { key, json: text });
      expect(served.status).toBe(200);
      await served.text();
    }
    expect(runners[RUNNER_B].hits).toBe(4);

    await forgetRunners();
    runners[RUNNER_B].secret = "a-secret-from-another-deployment";
    const refused = await call("POST", RUNNER_PATHS.chatCompletions, { key, json: chat });
    expect(refused.status).toBe(503);
    const error = await errorOf(refused);
    expect(error).toMatchObject({ type: "server_error", code: "runner_unavailable" });
    expect(error.code).not.toBe(INVALID_RUNNER_SECRET_CODE);
    expect(runners[RUNNER_A].refusedSecrets).toBeGreaterThan(0);
    expect(runners[RUNNER_B].refusedSecrets).toBeGreaterThan(0);
  });
});
