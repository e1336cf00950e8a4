/**
 * The TASKS queue consumer: one handler per message kind. A handler that throws leaves the
 * message to be retried with backoff (at-least-once, so every handler is idempotent).
 */
import { database } from "../db/client.ts";
import { recordUsage } from "../db/queries/usage.ts";
import { dispatchJob } from "../jobs/dispatcher.ts";
import { deliverWebhook } from "../webhooks/deliver.ts";
import type { TaskMessage } from "./messages.ts";

export async function consumeTasks(batch: MessageBatch<TaskMessage>, env: Env): Promise<void> {
  for (const message of batch.messages) {
    try {
      await handle(message.body, env);
      message.ack();
    } catch (error) {
      console.error(`task ${JSON.stringify(message.body)} failed (attempt ${message.attempts}): ${(error as Error).message}`);
      message.retry({ delaySeconds: Math.min(300, 2 ** message.attempts) });
    }
  }
}

async function handle(task: TaskMessage, env: Env): Promise<void> {
  switch (task.kind) {
    case "dispatch_job":
      return dispatchJob(env, task.jobId);
    case "deliver_webhook":
      return deliverWebhook(database(env.DB), task.deliveryId);
    case "record_usage":
      return recordUsage(database(env.DB), task.usage);
    default:
      console.error(`unknown task ${JSON.stringify(task)}; dropped`);
      void env;
  }
}
