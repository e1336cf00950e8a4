/**
 * The training rate this runner reports for the edge's estimates: trained tokens per second of
 * the training loop (evaluation included) and the seconds a job spends outside it, as moving
 * averages over the jobs it has finished, so estimates follow the machine and its load.
 */
import type { TrainingRate } from "../../src/protocol/training-figures.ts";

/** Weight of the newest job in the moving averages. */
const NEWEST_WEIGHT = 0.5;

/** One finished job's timing. */
export interface JobTiming {
  trainedTokens: number;
  /** Seconds from the trainer's first step to its last evaluation. */
  loopSeconds: number;
  /** Seconds from the job's start to its adapter stored. */
  totalSeconds: number;
}

export class TrainingRateMeter {
  #rate: TrainingRate | null = null;

  /** Adds a finished job; jobs too short to time (no tokens, no measurable loop) are ignored. */
  record(timing: JobTiming): void {
    if (!(timing.trainedTokens > 0 && timing.loopSeconds > 0 && timing.totalSeconds >= timing.loopSeconds)) return;
    const tokensPerSecond = timing.trainedTokens / timing.loopSeconds;
    const overheadSeconds = timing.totalSeconds - timing.loopSeconds;
    const previous = this.#rate;
    this.#rate =
      previous === null
        ? { tokens_per_second: tokensPerSecond, overhead_seconds: overheadSeconds, jobs: 1 }
        : {
            tokens_per_second: previous.tokens_per_second + NEWEST_WEIGHT * (tokensPerSecond - previous.tokens_per_second),
            overhead_seconds: previous.overhead_seconds + NEWEST_WEIGHT * (overheadSeconds - previous.overhead_seconds),
            jobs: previous.jobs + 1,
          };
  }

  /** The averages, or null before a job has finished here. */
  get rate(): TrainingRate | null {
    return this.#rate;
  }
}
