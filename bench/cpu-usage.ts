/**
 * How busy the machine was with other work during a measurement, from /proc (Linux): a bench that
 * shares its CPUs with unrelated processes measures them too, and this says by how much.
 */
import { readFileSync } from "node:fs";
import { cpus } from "node:os";

/** Clock ticks the whole machine spent (busy and in total) and that each given process used. */
export interface CpuTicks {
  busy: number;
  total: number;
  processes: number[]; // in the order of the pids asked for
}

/** Current CPU ticks of the machine and of `pids`; null where /proc is not available. */
export function readCpuTicks(pids: number[]): CpuTicks | null {
  try {
    // "cpu  user nice system idle iowait irq softirq steal guest guest_nice"
    const fields = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1, 9).map(Number);
    const total = fields.reduce((sum, value) => sum + value, 0);
    const busy = total - fields[3] - fields[4];
    const processes = pids.map((pid) => {
      // Fields after the parenthesised command name; utime and stime are fields 14 and 15 of the line.
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const after = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      return Number(after[11]) + Number(after[12]);
    });
    return { busy, total, processes };
  } catch {
    return null;
  }
}

/** CPU cores other processes kept busy on average between two readings; null without both. */
export function otherProcessCores(before: CpuTicks | null, after: CpuTicks | null): number | null {
  if (before === null || after === null || after.total <= before.total) return null;
  const ours = after.processes.reduce((sum, ticks, i) => sum + ticks - before.processes[i], 0);
  return (Math.max(0, after.busy - before.busy - ours) / (after.total - before.total)) * cpus().length;
}

/** CPU seconds the i-th process used between two readings; null without both. */
export function processCpuSeconds(before: CpuTicks | null, after: CpuTicks | null, i: number): number | null {
  if (before === null || after === null) return null;
  // /proc counts in USER_HZ ticks, 100 per second on every Linux architecture node runs on.
  return (after.processes[i] - before.processes[i]) / 100;
}
