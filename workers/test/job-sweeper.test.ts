import { env } from "cloudflare:test";
import { afterEach, describe, expect, it, vi } from "vitest";
import { database } from "../src/db/client.ts";
import { fineTuningJobs, tenants } from "../src/db/schema.ts";
import { sweepWaitingJobs } from "../src/jobs/sweeper.ts";

describe("the cron sweep", () => {
  afterEach(() => vi.restoreAllMocks());

  it("re-dispatches only jobs that have waited for a runner over a minute", async () => {
    const db = database(env.DB);
    const now = Math.floor(Date.now() / 1000);
    await db.insert(tenants).values({ id: "tenant_sweep", name: "sweep" });
    const job = (id: string, status: string, createdAt: number) => ({
      id,
      tenantId: "tenant_sweep",
      model: "pica-base-4m",
      trainingFile: "file-x",
      seed: 1,
      hyperparameters: {},
      status,
      createdAt,
    });
    await db
      .insert(fineTuningJobs)
      .values([
        job("ftjob-old-queued", "queued", now - 600),
        job("ftjob-old-validating", "validating_files", now - 120),
        job("ftjob-fresh", "queued", now - 5),
        job("ftjob-running", "running", now - 600),
        job("ftjob-done", "succeeded", now - 600),
      ]);
    const sent = vi.spyOn(env.TASKS, "sendBatch").mockResolvedValue(undefined as never);
    const swept = await sweepWaitingJobs(env, now);
    expect(swept).toEqual(["ftjob-old-queued", "ftjob-old-validating"]);
    expect(sent).toHaveBeenCalledWith([
      { body: { kind: "dispatch_job", jobId: "ftjob-old-queued" } },
      { body: { kind: "dispatch_job", jobId: "ftjob-old-validating" } },
    ]);
  });
});
