import { describe, expect, it } from "vitest";
import { TrainingRateMeter } from "./training-rate.ts";

describe("TrainingRateMeter", () => {
  it("reports nothing before a job has finished", () => {
    expect(new TrainingRateMeter().rate).toBeNull();
  });

  it("takes the first job's rate and overhead as they are", () => {
    const meter = new TrainingRateMeter();
    meter.record({ trainedTokens: 10_000, loopSeconds: 4, totalSeconds: 5.5 });
    expect(meter.rate).toEqual({ tokens_per_second: 2500, overhead_seconds: 1.5, jobs: 1 });
  });

  it("moves halfway to each newer job", () => {
    const meter = new TrainingRateMeter();
    meter.record({ trainedTokens: 10_000, loopSeconds: 4, totalSeconds: 5 }); // 2500 tok/s, 1 s
    meter.record({ trainedTokens: 9_000, loopSeconds: 2, totalSeconds: 5 }); // 4500 tok/s, 3 s
    expect(meter.rate).toEqual({ tokens_per_second: 3500, overhead_seconds: 2, jobs: 2 });
  });

  it("ignores jobs it cannot time", () => {
    const meter = new TrainingRateMeter();
    meter.record({ trainedTokens: 0, loopSeconds: 1, totalSeconds: 2 });
    meter.record({ trainedTokens: 100, loopSeconds: 0, totalSeconds: 2 });
    meter.record({ trainedTokens: 100, loopSeconds: 3, totalSeconds: 2 });
    expect(meter.rate).toBeNull();
  });
});
