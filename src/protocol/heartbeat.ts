// What a runner tells the control plane every few seconds (`POST /internal/runners/heartbeat`,
// runner secret): where it is reachable, what it serves, and how busy it is. Stale or failing
// runners leave the edge's rotation; a heartbeat brings one back.
import { z } from "zod";
import { fromZodError } from "../errors.ts";
import { rankLimitsSchema } from "./adapter-rank.ts";
import { trainingFiguresSchema } from "./training-figures.ts";

/** Where a runner posts its heartbeat on the edge. */
export const HEARTBEAT_PATH = "/internal/runners/heartbeat";

/** Seconds between a runner's heartbeats (the edge drops a runner after several missed ones). */
export const HEARTBEAT_INTERVAL_SECONDS = 10;

/**
 * The `basis_id` of a runner still computing its PiCa basis: it serves the base model meanwhile,
 * and since no adapter records this id, the edge routes no adapter request to it.
 */
export const BASIS_PENDING = "pending";

/** The body of a heartbeat. */
export const runnerHeartbeatSchema = z
  .object({
    id: z.string().min(1).max(200),
    url: z.url({ protocol: /^https?$/ }), // how the edge reaches the runner's API
    base_model: z.string().min(1).max(200),
    basis_id: z.string().min(1).max(200),
    /**
     * The ids of the smaller bases the runner's basis extends (its first rows are exactly
     * theirs): adapters trained against them are served here too. Absent or empty: none.
     */
    compatible_basis_ids: z.array(z.string().min(1).max(200)).max(32).optional(),
    running: z.int().min(0),
    waiting: z.int().min(0),
    resident_adapters: z.int().min(0),
    /**
     * The base model's linear shapes and the rows of the runner's basis (as configured, also while
     * it is computed): the edge refuses a job whose rank is above what they allow before it is
     * dispatched (adapter-rank.ts). Absent from runners that predate it.
     */
    rank_limits: rankLimitsSchema.optional(),
    /** Its tokenizer's template tokens and its measured training rate, for the edge's estimates (training-figures.ts). */
    training: trainingFiguresSchema.optional(),
  })
  .strict();
export type RunnerHeartbeatBody = z.infer<typeof runnerHeartbeatSchema>;

/** Parses a heartbeat; throws ApiError 400 naming the first bad field. */
export function parseRunnerHeartbeat(body: unknown): RunnerHeartbeatBody {
  const result = runnerHeartbeatSchema.safeParse(body, { reportInput: true });
  if (!result.success) throw fromZodError(result.error);
  return result.data;
}
