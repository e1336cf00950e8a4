import { serve, type ServerType } from "@hono/node-server";
import { Hono } from "hono";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { parseRunnerHeartbeat, type RunnerHeartbeatBody } from "../../src/protocol/heartbeat.ts";
import { startHeartbeat, type Heartbeat } from "./heartbeat.ts";

/** A loopback stand-in for the edge's heartbeat route: checks the secret and the body like the edge does. */
async function fakeEdge(secret: string): Promise<{ url: string; beats: RunnerHeartbeatBody[]; refuse: { now: boolean }; server: ServerType }> {
  const beats: RunnerHeartbeatBody[] = [];
  const refuse = { now: false };
  const app = new Hono();
  app.post("/edge/internal/runners/heartbeat", async (c) => {
    if (c.req.header("authorization") !== `Bearer ${secret}`) return c.json({ error: "unauthorized" }, 401);
    if (refuse.now) return c.json({ error: "down" }, 503);
    beats.push(parseRunnerHeartbeat(await c.req.json()));
    return c.json({ ok: true });
  });
  const server = await new Promise<ServerType>((resolve) => {
    const started = serve({ fetch: app.fetch, hostname: "127.0.0.1", port: 0 }, () => resolve(started));
  });
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/edge`, beats, refuse, server };
}

const running: { heartbeat?: Heartbeat; server?: ServerType }[] = [];
afterEach(async () => {
  for (const { heartbeat, server } of running.splice(0)) {
    heartbeat?.stop();
    if (server === undefined) continue;
    (server as Server).closeAllConnections(); // fetch keeps connections alive; close() would wait for them
    await new Promise((resolve) => server.close(resolve));
  }
});

describe("runner heartbeat", () => {
  it("beats at once and then every interval, with what the runner reports at that moment", async () => {
    const edge = await fakeEdge("s3cret");
    let beats = 0;
    const heartbeat = startHeartbeat({
      edgeUrl: edge.url,
      secret: "s3cret",
      intervalMs: 50,
      report: () => ({
        id: "r1",
        url: "http://127.0.0.1:8400",
        base_model: "pica-base-4m",
        basis_id: "abc",
        running: beats++,
        waiting: 0,
        resident_adapters: 3,
      }),
    });
    running.push({ heartbeat, server: edge.server });
    await expect.poll(() => edge.beats.length, { timeout: 2000 }).toBeGreaterThanOrEqual(3);
    expect(edge.beats[0]).toEqual({
      id: "r1",
      url: "http://127.0.0.1:8400",
      base_model: "pica-base-4m",
      basis_id: "abc",
      running: 0,
      waiting: 0,
      resident_adapters: 3,
    });
    expect(edge.beats.map((beat) => beat.running).slice(0, 3)).toEqual([0, 1, 2]);
    heartbeat.stop();
    const count = edge.beats.length;
    await new Promise((resolve) => setTimeout(resolve, 150));
    expect(edge.beats.length).toBeLessThanOrEqual(count + 1); // at most one beat was in flight
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
