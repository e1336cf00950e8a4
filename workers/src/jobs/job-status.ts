/**
 * The fine-tuning job state machine: validating_files → queued → running → succeeded | failed |
 * cancelled. A job only ever moves forward, so a late or repeated callback (the runner retries,
 * the queue redelivers) can never move it back, and a finished job never changes again.
 */

export const JOB_STATUSES = ["validating_files", "queued", "running", "succeeded", "failed", "cancelled"] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];
export type TerminalJobStatus = "succeeded" | "failed" | "cancelled";

const ORDER: Record<JobStatus, number> = { validating_files: 0, queued: 1, running: 2, succeeded: 3, failed: 3, cancelled: 3 };

/** Whether a job in `status` is finished for good. */
export function isTerminal(status: string): status is TerminalJobStatus {
  return status === "succeeded" || status === "failed" || status === "cancelled";
}

/** The statuses a job may move to `target` from: every earlier, unfinished one. */
export function predecessorsOf(target: JobStatus): JobStatus[] {
  return JOB_STATUSES.filter((status) => ORDER[status] < ORDER[target] && !isTerminal(status));
}
