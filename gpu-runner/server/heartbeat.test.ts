import { serve, type ServerType } from "@hono/node-server";
import { Hono } from "hono";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it, vi } from "vitest";
import { parseRunnerHeartbeat, type RunnerHeartbeatBody } from "../../src/protocol/heartbeat.ts";
import { startHeartbeat, type Heartbeat } from "./heartbeat.ts";

/** A loopback stand-in for the edge's heartbeat route: checks the secret and the body like the edge does. */
async function fakeEdge(
  secret: string,
): Promise<{ url: string; beats: RunnerHeartbeatBody[]; received: (count: number) => Promise<void>; refuse: { now: boolean }; server: ServerType }> {
  const beats: RunnerHeartbeatBody[] = [];
  const refuse = { now: false };
  // Waiters for a number of accepted beats; resolved by arrivals, not by polling a clock.
  const waiters: { count: number; resolve: () => void }[] = [];
  const received = (count: number) => new Promise<void>((resolve) => (beats.length >= count ? resolve() : waiters.push({ count, resolve })));
  const app = new Hono();
  app.post("/edge/internal/runners/heartbeat", async (c) => {
    if (c.req.header("authorization") !== `Bearer ${secret}`) return c.json({ error: "unauthorized" }, 401);
    if (refuse.now) return c.json({ error: "down" }, 503);
    beats.push(parseRunnerHeartbeat(await c.req.json()));
    for (const waiter of waiters.filter((w) => beats.length >= w.count)) waiter.resolve();
    return c.json({ ok: true });
  });
  const server = await new Promise<ServerType>((resolve) => {
    const started = serve({ fetch: app.fetch, hostname: "127.0.0.1", port: 0 }, () => resolve(started));
  });
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/edge`, beats, received, refuse, server };
}

const running: { heartbeat?: Heartbeat; server?: ServerType }[] = [];
afterEach(async () => {
  vi.useRealTimers();
  for (const { heartbeat, server } of running.splice(0)) {
    heartbeat?.stop();
    if (server === undefined) continue;
    (server as Server).closeAllConnections(); // fetch keeps connections alive; close() would wait for them
    await new Promise((resolve) => server.close(resolve));
  }
});

describe("runner heartbeat", () => {
  it("beats at once and then every interval, with what the runner reports at that moment, and not after stop", async () => {
    // Only the interval is faked: the beats still travel over real HTTP to the fake edge.
    vi.useFakeTimers({ toFake: ["setInterval", "clearInterval"] });
    const edge = await fakeEdge("s3cret");
    let reports = 0; // report() is read synchronously as a beat starts, so this counts beats begun
    const heartbeat = startHeartbeat({
      edgeUrl: edge.url,
      secret: "s3cret",
      intervalMs: 50,
      report: () => ({
        id: "r1",
        url: "http://127.0.0.1:8400",
        base_model: "pica-base-4m",
        basis_id: "abc",
        running: reports++,
        waiting: 0,
        resident_adapters: 3,
      }),
    });
    running.push({ heartbeat, server: edge.server });
    expect(reports).toBe(1); // at once
    vi.advanceTimersByTime(49);
    expect(reports).toBe(1);
    vi.advanceTimersByTime(1);
    expect(reports).toBe(2);
    vi.advanceTimersByTime(50);
    expect(reports).toBe(3);
    await edge.received(3);
    expect(edge.beats[0]).toEqual({
      id: "r1",
      url: "http://127.0.0.1:8400",
      base_model: "pica-base-4m",
      basis_id: "abc",
      running: 0,
      waiting: 0,
      resident_adapters: 3,
    });
    expect(edge.beats.map((beat) => beat.running).sort((a, b) => a - b)).toEqual([0, 1, 2]); // three requests may land in any order

    // After stop, ten intervals pass (every timer due in them runs inside advanceTimersByTime)
    // and not one more beat begins.
    heartbeat.stop();
    vi.advanceTimersByTime(500);
    expect(reports).toBe(3);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("reports refusals and an unreachable edge once, and recovers", async () => {
    const edge = await fakeEdge("s3cret");
    const logs: string[] = [];
    const report = () => ({ id: "r1", url: "http://127.0.0.1:8400", base_model: "m", basis_id: "b", running: 0, waiting: 0, resident_adapters: 0 });
    const wrongSecret = startHeartbeat({ edgeUrl: edge.url, secret: "wrong", intervalMs: 60_000, report, log: (m) => logs.push(m) });
    running.push({ heartbeat: wrongSecret, server: edge.server });
    expect(await wrongSecret.beat()).toBe(false);
    expect(logs.some((line) => line.includes("401"))).toBe(true);

    const heartbeat = startHeartbeat({ edgeUrl: edge.url, secret: "s3cret", intervalMs: 60_000, report, log: (m) => logs.push(m) });
    running.push({ heartbeat });
    await expect.poll(() => edge.beats.length).toBe(1);
    edge.refuse.now = true;
    logs.length = 0;
    expect(await heartbeat.beat()).toBe(false);
    expect(await heartbeat.beat()).toBe(false);
    expect(logs).toHaveLength(1); // not once per missed beat
    expect(logs[0]).toContain("503");
    edge.refuse.now = false;
    expect(await heartbeat.beat()).toBe(true);
    expect(logs.at(-1)).toContain("works again");

    const nowhere = startHeartbeat({ edgeUrl: "http://127.0.0.1:1", secret: "s3cret", intervalMs: 60_000, report, log: (m) => logs.push(m) });
    running.push({ heartbeat: nowhere });
    expect(await nowhere.beat()).toBe(false);
  });
});
