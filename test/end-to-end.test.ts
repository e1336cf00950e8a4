import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runEndToEnd } from "../stack/end-to-end.ts";
import { stackAdminToken, startStack, type StackProcess } from "../stack/stack-process.ts";

describe("the platform end to end", () => {
  let directory: string;
  let stack: StackProcess;
  beforeAll(async () => {
    directory = await mkdtemp(join(tmpdir(), "pica-e2e-"));
    stack = await startStack(directory);
  });
  afterAll(async () => {
    await stack?.stop();
    await rm(directory, { recursive: true, force: true });
  });

  it("turns a tenant's JSONL into an adapter that does what the base cannot, through the public API with real clients", async () => {
    const result = await runEndToEnd({ edgeUrl: stack.edgeUrl, key: stack.key, adminToken: await stackAdminToken(directory), log: (message) => console.log(message) });
    expect(result.client_failures).toBe(0);
    expect(result.isolation_violations).toBe(0);
    expect(result.base_accuracy).toBeLessThan(0.2);
    expect(result.adapter_minus_base_accuracy).toBeGreaterThanOrEqual(0.5);
    expect(result.hf_client_agreement).toBe(1); // both clients, same greedy answers
    expect(result.job_events).toBeGreaterThan(5);
    expect(result.usage_completion_tokens).toBeGreaterThan(0);
  }, 600_000);
});
