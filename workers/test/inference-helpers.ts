/** Helpers for the inference tests: adapters seeded in D1, fake runners, reading a stream chunk by chunk. */
import { env } from "cloudflare:test";
import { afterEach, beforeEach } from "vitest";
import { forgetRunnerRows } from "../src/inference/lookup-cache.ts";
import { rankByRendezvous } from "../src/runners/rendezvous.ts";
import { FakeOpenAiRunner } from "./fake-openai-runner.ts";
import { installFakeRunners } from "./fake-runners.ts";

/** The runners the test configuration lists in RUNNER_URLS. */
export const RUNNER_A = "http://runner-a.test";
export const RUNNER_B = "http://runner-b.test";

/** Adds a ready adapter (or one in another status) for a tenant, as a finished job would. */
export async function seedAdapter(tenantId: string, id: string, options: { status?: string; baseModel?: string; basisId?: string } = {}): Promise<void> {
  await env.DB.prepare("INSERT INTO adapters (id, tenant_id, base_model, basis_id, status, blob_key, sha256, bytes, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
    .bind(
      id,
      tenantId,
      options.baseModel ?? env.BASE_MODEL,
      options.basisId ?? null,
      options.status ?? "ready",
      `adapters/${id}`,
      "0".repeat(64),
      1024,
      "fine_tune",
    )
    .run();
}

/** Two fake runners at the listed URLs (plus any others), installed until `restore()`. */
export function fakeRunners(extra: string[] = []): { runners: Record<string, FakeOpenAiRunner>; restore: () => void } {
  const runners: Record<string, FakeOpenAiRunner> = {};
  for (const origin of [RUNNER_A, RUNNER_B, ...extra]) runners[origin] = new FakeOpenAiRunner(origin);
  const restore = installFakeRunners(Object.fromEntries(Object.entries(runners).map(([origin, runner]) => [origin, runner.handler])));
  return { runners, restore };
}

/**
 * Fresh fake runners (RUNNER_A, RUNNER_B and any others) for every test of the calling file, the
 * edge's memory of runners forgotten first: the returned record holds the current test's runners.
 */
export function useFakeRunners(extra: string[] = []): Record<string, FakeOpenAiRunner> {
  const current: Record<string, FakeOpenAiRunner> = {};
  let restore: () => void = () => {};
  beforeEach(async () => {
    await forgetRunners();
    const installed = fakeRunners(extra);
    for (const origin of Object.keys(current)) delete current[origin];
    Object.assign(current, installed.runners);
    restore = installed.restore;
  });
  afterEach(() => restore());
  return current;
}

/** The runner an adapter prefers among `urls` (what the edge's rendezvous ranking picks first). */
export function preferredRunner(model: string, urls: string[] = [RUNNER_A, RUNNER_B]): string {
  return rankByRendezvous(model, urls, (url) => url)[0];
}

/** The other of the two listed runners. */
export function otherRunner(url: string): string {
  return url === RUNNER_A ? RUNNER_B : RUNNER_A;
}

/** Reads one chunk, failing (instead of hanging) when nothing arrives within `ms`. */
export async function readWithin(reader: ReadableStreamDefaultReader<Uint8Array>, ms: number): Promise<string> {
  let timer: ReturnType<typeof setTimeout> | null = null;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no bytes within ${ms} ms`)), ms)));
  try {
    const chunk = await Promise.race([reader.read(), timeout]);
    return chunk.done ? "" : new TextDecoder().decode(chunk.value);
  } finally {
    if (timer !== null) clearTimeout(timer);
  }
}

/** Waits until `check` holds (background work such as usage records lands after the response). */
export async function eventually(check: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/**
 * Empties the runners table and this isolate's copy of it. The real queue delivers each job's
 * dispatch about a second after creation; one that outlives its test counts failures against a
 * listed runner, so tests that route start from a clean table.
 */
export async function forgetRunners(): Promise<void> {
  await env.DB.prepare("DELETE FROM runners").run();
  forgetRunnerRows();
}
