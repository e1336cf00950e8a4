/** The `pica jobs watch` line: status, a bar of steps done, the latest loss and the ETA. */
import type { FineTuningJob } from "../src/client/pica-client.ts";

const WIDTH = 24;

export function progressLine(job: FineTuningJob, metrics: Record<string, unknown> | null): string {
  const step = typeof metrics?.step === "number" ? metrics.step : 0;
  const total = typeof metrics?.total_steps === "number" ? metrics.total_steps : null;
  const done = job.status === "succeeded" ? 1 : total ? Math.min(1, step / total) : 0;
  const filled = Math.round(done * WIDTH);
  const bar = `[${"#".repeat(filled)}${".".repeat(WIDTH - filled)}]`;
  const parts = [`${job.id} ${job.status}`, bar];
  if (total !== null) parts.push(`step ${job.status === "succeeded" ? total : step}/${total}`);
  if (typeof metrics?.train_loss === "number") parts.push(`loss ${metrics.train_loss.toFixed(4)}`);
  if (job.status === "running" && typeof metrics?.eta_seconds === "number") parts.push(`ETA ${Math.ceil(metrics.eta_seconds)} s`);
  return parts.join("  ");
}
