/**
 * Faults with two real runners behind the real edge (wrangler dev): a runner killed mid-stream, a
 * runner killed mid-training, a flipped byte in a stored adapter. The scenarios live in
 * stack/faults.ts, shared with `npm run bench -- chaos`; here every observation is asserted.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTenantWithKey } from "../stack/admin.ts";
import { startCluster, type Cluster } from "../stack/cluster.ts";
import { corruptAdapterBlob, killRunnerMidStream, killRunnerMidTraining, type FaultContext } from "../stack/faults.ts";
import { importRandomAdapters } from "../stack/random-peft.ts";

describe("faults with two runners", () => {
  let dataDir: string;
  let cluster: Cluster;
  let context: FaultContext;
  let adapters: string[];
  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), "pica-faults-"));
    cluster = await startCluster({ dataDir, runners: 2 });
    const tenant = await createTenantWithKey(cluster.edgeUrl, cluster.secrets.ADMIN_TOKEN, { name: "faults", concurrent_streams: 50 });
    adapters = await importRandomAdapters(cluster.edgeUrl, tenant.key, { count: 3, seed: 500, namePrefix: "faults" });
    context = { cluster, dataDir, key: tenant.key, log: (message) => console.log(message) };
  }, 300_000);
  afterAll(async () => {
    await cluster?.stop();
    await rm(dataDir, { recursive: true, force: true });
  });

  it("a runner killed mid-stream: the client gets an error event and the stream closes, the edge takes the runner out, the next request succeeds on the other, the restarted runner comes back", async () => {
    const outcome = await killRunnerMidStream(context, adapters[0]);
    expect(outcome.killed).not.toBeNull();
    expect(outcome.stream.status).toBe(200);
    expect(outcome.stream.textEvents).toBeGreaterThanOrEqual(3); // killed after tokens had arrived
    expect(outcome.stream.error).toMatchObject({ type: "server_error", code: "runner_failed" });
    expect(outcome.stream.done).toBe(false); // an incomplete answer never ends with [DONE]
    expect(outcome.markedDown).toBe(true);
    expect(outcome.next).toMatchObject({ status: 200, error: null, done: true });
    expect(outcome.backInRotation).toBe(true);
    expect(outcome.survived).toBe(true);
  }, 180_000);

  it("a corrupted adapter blob is refused by its sha256 with an error the tenant can read; other adapters still serve", async () => {
    const outcome = await corruptAdapterBlob(context, adapters[1], adapters[2]);
    expect(outcome.status).toBe(422);
    expect(outcome.error).toMatchObject({ type: "invalid_request_error", code: "adapter_invalid" });
    expect(outcome.error!.message).toMatch(/sha256/);
    expect(outcome.othersServed).toBe(true);
  }, 120_000);

  it("a runner killed mid-training: the job resumes from its last checkpoint when the runner restarts, succeeds, and has every step's event once", async () => {
    const outcome = await killRunnerMidTraining(context, { restart: true });
    expect(outcome.job.status).toBe("succeeded");
    expect(outcome.killedAtStep).toBeGreaterThanOrEqual(10);
    expect(outcome.resumedFromStep).toBeGreaterThanOrEqual(10); // not from the start
    expect(outcome.resumedFromStep).toBeLessThanOrEqual(outcome.killedAtStep!);
    expect(outcome.totalSteps).toBeGreaterThan(outcome.killedAtStep!);
    expect(outcome.stepEvents).toEqual(Array.from({ length: outcome.totalSteps! }, (_, i) => i + 1));
    expect(outcome.duplicateEventIds).toBe(0);
    expect(outcome.adapterAnswers).toBe(true);
  }, 400_000);

  it("a runner killed mid-training that stays down: the edge moves the job to the other runner, which resumes it from the last checkpoint; the old runner, back later, drops its copy", async () => {
    const outcome = await killRunnerMidTraining(context, { restart: false });
    expect(outcome.moved).toBe(true);
    expect(outcome.job.status).toBe("succeeded");
    expect(outcome.resumedFromStep).toBeGreaterThanOrEqual(10);
    expect(outcome.resumedFromStep).toBeLessThanOrEqual(outcome.killedAtStep!);
    expect(outcome.stepEvents).toEqual(Array.from({ length: outcome.totalSteps! }, (_, i) => i + 1));
    expect(outcome.duplicateEventIds).toBe(0);
    expect(outcome.adapterAnswers).toBe(true);
    expect(outcome.oldCopyStopped).toBe(true);
  }, 600_000);
});
