import type { UsageRecord } from "../db/queries/usage.ts";

/** What travels on the TASKS queue; the consumer switches on `kind`. */
export type TaskMessage =
  | { kind: "dispatch_job"; jobId: string } // send a queued fine-tuning job to a runner
  | { kind: "deliver_webhook"; deliveryId: string } // POST one webhook event to its endpoint
  | { kind: "record_usage"; usage: UsageRecord }; // a usage record whose first write failed
