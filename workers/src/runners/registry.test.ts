import { describe, expect, it } from "vitest";
import type { runners } from "../db/schema.ts";
import { healthyFromRows, HEARTBEAT_STALE_SECONDS, MAX_CONSECUTIVE_FAILURES, PROBE_AFTER_SECONDS } from "./registry.ts";

type Row = typeof runners.$inferSelect;
const now = () => Math.floor(Date.now() / 1000);
const row = (url: string, change: Partial<Row> = {}): Row => ({
  id: url,
  url,
  baseModel: "m",
  basisId: "b",
  compatibleBasisIds: null,
  running: 0,
  waiting: 0,
  residentAdapters: 0,
  failures: 0,
  lastFailureAt: null,
  lastHeartbeat: now(),
  rankLimits: null,
  trainingFigures: null,
  ...change,
});
const urls = (rows: Row[], listed = "") =>
  healthyFromRows(rows, { RUNNER_URLS: listed })
    .map((r) => r.url)
    .sort();

describe("healthyFromRows", () => {
  it("keeps fresh heartbeats and listed runners, drops stale unlisted ones", () => {
    expect(urls([row("http://a"), row("http://b", { lastHeartbeat: now() - HEARTBEAT_STALE_SECONDS - 1 })], "http://c")).toEqual(["http://a", "http://c"]);
  });

  it("takes a failing runner out, and tries it again once its last failure is old enough", () => {
    const recent = row("http://a", { failures: MAX_CONSECUTIVE_FAILURES, lastFailureAt: now() - 1, lastHeartbeat: 0 });
    const old = row("http://a", { failures: MAX_CONSECUTIVE_FAILURES + 4, lastFailureAt: now() - PROBE_AFTER_SECONDS - 1, lastHeartbeat: 0 });
    expect(urls([recent], "http://a")).toEqual([]);
    expect(urls([old], "http://a")).toEqual(["http://a"]);
    expect(healthyFromRows([old], { RUNNER_URLS: "http://a" })[0].failures).toBe(MAX_CONSECUTIVE_FAILURES + 4);
  });
});
