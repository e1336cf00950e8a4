import { describe, expect, it } from "vitest";
import { ComputeGate } from "./compute-gate.ts";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Records when each unit of work runs, to check that none overlap. */
function recorder() {
  const log: string[] = [];
  let active = 0;
  let overlaps = 0;
  const work = (name: string, ms: number) => async () => {
    if (active++ > 0) overlaps++;
    log.push(`${name}+`);
    await sleep(ms);
    log.push(`${name}-`);
    active--;
    return name;
  };
  return { log, work, overlaps: () => overlaps };
}

describe("ComputeGate", () => {
  it("runs training only once inference goes idle, and never alongside an inference step", async () => {
    const gate = new ComputeGate({ maxTrainingWaitMs: 10_000 });
    const { log, work, overlaps } = recorder();
    gate.setInferenceBusy(true);
    const training = gate.training(work("train", 5));
    for (let i = 0; i < 3; i++) await gate.inference(work(`infer${i}`, 5));
    expect(log).not.toContain("train+");
    gate.setInferenceBusy(false);
    expect(await training).toBe("train");
    expect(log.indexOf("train+")).toBeGreaterThan(log.indexOf("infer2-"));
    expect(overlaps()).toBe(0);
    expect(gate.stats()).toEqual({ trainingSlices: 1, starvedSlices: 0 });
  });

  it("an inference step waits for the training slice in flight", async () => {
    const gate = new ComputeGate({ maxTrainingWaitMs: 10_000 });
    const { log, work, overlaps } = recorder();
    const training = gate.training(work("train", 20));
    await sleep(1);
    gate.setInferenceBusy(true);
    await gate.inference(work("infer", 1));
    await training;
    expect(log).toEqual(["train+", "train-", "infer+", "infer-"]);
    expect(overlaps()).toBe(0);
  });

  it("lets one training slice through between steps once it has waited its longest under constant load", async () => {
    const gate = new ComputeGate({ maxTrainingWaitMs: 30 });
    const { log, work, overlaps } = recorder();
    gate.setInferenceBusy(true);
    let stop = false;
    const inference = (async () => {
      for (let i = 0; !stop; i++) await gate.inference(work(`infer${i}`, 2));
    })();
    await gate.training(work("train", 2));
    stop = true;
    await inference;
    expect(log).toContain("train-");
    expect(overlaps()).toBe(0);
    expect(gate.stats().starvedSlices).toBe(1);
  });

  it("reads requests that arrived during a blocking slice before it starts the next one", async () => {
    const gate = new ComputeGate({ maxTrainingWaitMs: 10_000 });
    const log: string[] = [];
    // Device work blocks the thread, as onnxruntime's does.
    const blocking = (name: string) => async () => {
      const end = performance.now() + 5;
      while (performance.now() < end);
      log.push(name);
    };
    // A request arrives while the first slice blocks; its callback can only run once the slice returns.
    setTimeout(() => {
      gate.setInferenceBusy(true);
      void gate.inference(async () => void log.push("infer")).then(() => gate.setInferenceBusy(false));
    }, 1);
    await gate.training(blocking("train1"));
    await gate.training(blocking("train2"));
    expect(log).toEqual(["train1", "infer", "train2"]);
  });
});
