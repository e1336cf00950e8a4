/**
 * `npm run bench -- chaos`: faults injected into the local platform with two runners, and
 * hostile input sent to it, counted.
 *
 *   - runners killed mid-stream (MID_STREAM_KILLS times); a runner killed mid-training and
 *     restarted, and another kept down until the edge has moved its job to the other runner; a
 *     flipped byte in a stored adapter (stack/faults.ts, against the running stack);
 *   - failed D1 and R2 writes: the Workers tests in workers/test/storage-faults.test.ts, which
 *     inject them into the bindings (wrangler dev offers no way to break its storage from outside);
 *   - FUZZ_REQUESTS hostile requests (test/hostile-requests.ts) through the edge, 5xx counted.
 *
 * `unsurvived_faults` and `lost_jobs` must be 0, and so must `fuzz_5xx`.
 */
import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { createTenantWithKey } from "../stack/admin.ts";
import { startCluster, type Cluster } from "../stack/cluster.ts";
import { corruptAdapterBlob, killRunnerMidStream, killRunnerMidTraining, type FaultContext, type FaultOutcome } from "../stack/faults.ts";
import { importRandomAdapters } from "../stack/random-peft.ts";
import { brokenPromise, hostileRequest, requestInit } from "../test/hostile-requests.ts";
import { progress } from "./stats.ts";

const MID_STREAM_KILLS = 3;
const FUZZ_REQUESTS = 10_000;
const FUZZ_CONCURRENCY = 8;
const FUZZ_SEED = 20_261_127;
const STORAGE_FAULT_TESTS = "workers/test/storage-faults.test.ts";
const ROOT = join(import.meta.dirname, "..");

export async function runChaosBench(): Promise<Record<string, unknown>> {
  const dataDir = await mkdtemp(join(tmpdir(), "pica-chaos-bench-"));
  let cluster: Cluster | null = null;
  try {
    cluster = await startCluster({ dataDir, runners: 2, log: progress });
    const tenant = await createTenantWithKey(
      cluster.edgeUrl,
      cluster.secrets.ADMIN_TOKEN,
      { name: "chaos", requests_per_minute: 1_000_000, concurrent_streams: 100 },
      ["inference", "fine_tuning", "admin"],
    );
    const adapters = await importRandomAdapters(cluster.edgeUrl, tenant.key, { count: MID_STREAM_KILLS + 2, seed: 77, namePrefix: "chaos" });
    const context: FaultContext = { cluster, dataDir, key: tenant.key, log: (message) => progress(`  ${message}`) };

    const outcomes: FaultOutcome[] = [];
    const record = (outcome: FaultOutcome) => {
      outcomes.push(outcome);
      progress(`${outcome.survived ? "survived" : "NOT SURVIVED"}: ${outcome.fault}: ${outcome.detail}`);
    };
    for (let i = 0; i < MID_STREAM_KILLS; i++) record(await killRunnerMidStream(context, adapters[i]));
    const trainings = [await killRunnerMidTraining(context, { restart: true }), await killRunnerMidTraining(context, { restart: false })];
    for (const training of trainings) record(training);
    record(await corruptAdapterBlob(context, adapters[MID_STREAM_KILLS], adapters[MID_STREAM_KILLS + 1]));

    progress(`${FUZZ_REQUESTS} hostile requests through the edge…`);
    const fuzz = await fuzzEdge(cluster.edgeUrl, { key: tenant.key, adminToken: cluster.secrets.ADMIN_TOKEN });
    progress(
      `fuzz: ${fuzz.requests} requests, ${fuzz.serverErrors} 5xx, ${fuzz.malformed} 4xx not OpenAI-shaped${fuzz.examples.length > 0 ? `; e.g. ${fuzz.examples.join(" | ")}` : ""}`,
    );

    progress("storage faults (Workers tests with failing D1 and R2 bindings)…");
    const storage = await storageFaultTests();
    progress(`storage faults: ${storage.passed} survived, ${storage.failed} not`);

    const unsurvived = outcomes.filter((outcome) => !outcome.survived).length + storage.failed;
    return {
      faults_injected: outcomes.length + storage.passed + storage.failed,
      unsurvived_faults: unsurvived,
      lost_jobs: trainings.filter((training) => training.job.status !== "succeeded").length,
      runner_kills_mid_stream: MID_STREAM_KILLS,
      runner_kills_mid_training: trainings.length,
      jobs_moved_to_other_runner: trainings.filter((training) => training.moved).length,
      corrupted_blobs: 1,
      storage_fault_tests: storage.passed + storage.failed,
      training_killed_at_step: trainings.map((training) => training.killedAtStep),
      training_resumed_from_step: trainings.map((training) => training.resumedFromStep),
      fuzz_requests: fuzz.requests,
      fuzz_5xx: fuzz.serverErrors,
      fuzz_malformed_4xx: fuzz.malformed,
    };
  } catch (error) {
    if (cluster !== null) progress(`wrangler output:\n${cluster.edge.recentOutput()}`);
    throw error;
  } finally {
    await cluster?.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
}

/** Sends FUZZ_REQUESTS seeded hostile requests, FUZZ_CONCURRENCY at a time. */
async function fuzzEdge(edgeUrl: string, credentials: { key: string; adminToken: string }) {
  const requests = fc.sample(hostileRequest, { numRuns: FUZZ_REQUESTS, seed: FUZZ_SEED });
  let next = 0;
  let sent = 0;
  let serverErrors = 0;
  let malformed = 0;
  const examples: string[] = [];
  const worker = async () => {
    for (let i = next++; i < requests.length; i = next++) {
      const request = requests[i];
      const response = await fetch(`${edgeUrl}${request.path}`, { ...requestInit(request, credentials), signal: AbortSignal.timeout(120_000) });
      sent++;
      const broken = await brokenPromise(response);
      if (broken === null) continue;
      if (response.status >= 500) serverErrors++;
      else malformed++;
      if (examples.length < 5) examples.push(`${request.method} ${request.path.slice(0, 80)} → ${broken.slice(0, 200)}`);
    }
  };
  const ticker = setInterval(() => progress(`  ${sent} sent`), 15_000);
  await Promise.all(Array.from({ length: FUZZ_CONCURRENCY }, worker));
  clearInterval(ticker);
  return { requests: sent, serverErrors, malformed, examples };
}

/** Runs the storage-fault Workers tests; returns how many passed and failed. */
async function storageFaultTests(): Promise<{ passed: number; failed: number }> {
  const report = join(await mkdtemp(join(tmpdir(), "pica-storage-faults-")), "report.json");
  const child = spawn(
    process.execPath,
    [join(ROOT, "node_modules", "vitest", "vitest.mjs"), "run", "--project", "workers", STORAGE_FAULT_TESTS, "--reporter=json", `--outputFile=${report}`],
    { cwd: ROOT, stdio: "ignore" },
  );
  await new Promise((resolve) => child.once("exit", resolve));
  const results = JSON.parse(await readFile(report, "utf8")) as { numPassedTests: number; numFailedTests: number; numTotalTests: number };
  if (results.numTotalTests === 0) throw new Error(`${STORAGE_FAULT_TESTS} ran no test`);
  return { passed: results.numPassedTests, failed: results.numFailedTests };
}
