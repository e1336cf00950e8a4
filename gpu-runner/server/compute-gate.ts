/**
 * One device, two kinds of work: inference steps and training slices take turns on it, never at
 * once, and inference goes first. A training slice starts only when inference has nothing to do,
 * or when training has waited `maxTrainingWaitMs` (then it runs one slice between two inference
 * steps), so a job progresses under any load while requests barely notice it.
 */
export interface ComputeGateOptions {
  maxTrainingWaitMs: number; // longest a training slice waits for inference to go idle
}

export class ComputeGate {
  private inferenceBusy = false; // requests running or waiting
  private inferenceStep: Promise<unknown> | null = null;
  private trainingTurn: Promise<void> | null = null; // held by the training slice that has the device
  private idleWaiters: (() => void)[] = [];
  private counters = { trainingSlices: 0, starvedSlices: 0 };

  constructor(private readonly options: ComputeGateOptions = { maxTrainingWaitMs: 1000 }) {}

  /** The scheduler says whether it has requests to serve. */
  setInferenceBusy(busy: boolean): void {
    this.inferenceBusy = busy;
    if (!busy) for (const wake of this.idleWaiters.splice(0)) wake();
  }

  /** Runs one inference step, after the training slice that holds the device (if any) ends. */
  async inference<T>(step: () => Promise<T>): Promise<T> {
    while (this.trainingTurn !== null) await this.trainingTurn;
    const running = step();
    this.inferenceStep = running;
    try {
      return await running;
    } finally {
      this.inferenceStep = null;
    }
  }

  /** Runs one training slice when inference is idle, or after waiting its longest. */
  async training<T>(slice: () => Promise<T>): Promise<T> {
    // Device work blocks the event loop, so requests that arrived during the last slice are still
    // unread; let the server read them (and mark inference busy) before deciding to go on.
    await new Promise((resolve) => setImmediate(resolve));
    const deadline = performance.now() + this.options.maxTrainingWaitMs;
    while (this.inferenceBusy && performance.now() < deadline) await this.idleOr(deadline - performance.now());
    const starved = this.inferenceBusy;
    while (this.trainingTurn !== null) await this.trainingTurn; // another training caller
    // Claim the device: inference steps starting from now wait for this slice; the one in flight finishes first.
    let release: () => void = () => {};
    this.trainingTurn = new Promise<void>((resolve) => (release = resolve));
    try {
      while (this.inferenceStep !== null) await this.inferenceStep.catch(() => undefined);
      this.counters.trainingSlices++;
      if (starved) this.counters.starvedSlices++;
      return await slice();
    } finally {
      this.trainingTurn = null;
      release();
    }
  }

  /** Training slices run, and how many of them ran while inference had work (starvation guard). */
  stats(): { trainingSlices: number; starvedSlices: number } {
    return { ...this.counters };
  }

  private idleOr(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, Math.max(0, ms));
      this.idleWaiters.push(done);
      const waiters = this.idleWaiters;
      function done() {
        clearTimeout(timer);
        const at = waiters.indexOf(done);
        if (at >= 0) waiters.splice(at, 1);
        resolve();
      }
    });
  }
}
