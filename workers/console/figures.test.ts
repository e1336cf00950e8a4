import { describe, expect, it } from "vitest";
import type { JobEvent, UsageReport } from "../../src/client/pica-client.ts";
import { curves, dailyTokens, ticks } from "./figures.ts";

const event = (id: string, type: JobEvent["type"], data: Record<string, unknown> | null): JobEvent => ({
  object: "fine_tuning.job.event",
  id,
  created_at: 0,
  level: "info",
  type,
  message: id,
  data,
});

describe("the console's figures", () => {
  it("ticks land on round 1/2/5 steps and enclose the range", () => {
    expect(ticks(0, 1)).toEqual([0, 0.2, 0.4, 0.6, 0.8, 1]);
    expect(ticks(0, 2.3)).toEqual([0, 0.5, 1, 1.5, 2, 2.5]);
    expect(ticks(0, 117)).toEqual([0, 50, 100, 150]);
    expect(ticks(0, 9_000)).toEqual([0, 2000, 4000, 6000, 8000, 10000]);
    expect(ticks(1.37, 1.52)).toEqual([1.35, 1.4, 1.45, 1.5, 1.55]);
    expect(ticks(3, 3)).toEqual([3]);
  });

  it("a job's curves: training loss per step, validation at the step its epoch ended, other events ignored", () => {
    const events = [
      event("created", "message", null),
      event("step:1", "metrics", { step: 1, total_steps: 4, train_loss: 2.5 }),
      event("step:2", "metrics", { step: 2, total_steps: 4, train_loss: 2.0 }),
      event("epoch:0", "metrics", { epoch: 0, train_loss: 2.2, validation_loss: 2.1, validation_token_accuracy: 0.4 }),
      event("checkpoint:2", "checkpoint", { step: 2, train_loss: 2.0 }),
      event("step:3", "metrics", { step: 3, total_steps: 4, train_loss: 1.5 }),
      event("step:4", "metrics", { step: 4, total_steps: 4, train_loss: 1.25 }),
      event("epoch:1", "metrics", { epoch: 1, train_loss: 1.4, validation_loss: null, validation_token_accuracy: null }),
    ];
    const { loss, accuracy } = curves(events);
    expect(loss).toEqual([
      {
        name: "training loss",
        points: [
          { x: 1, y: 2.5 },
          { x: 2, y: 2 },
          { x: 3, y: 1.5 },
          { x: 4, y: 1.25 },
        ],
      },
      { name: "validation loss", points: [{ x: 2, y: 2.1 }] },
    ]);
    expect(accuracy).toEqual([{ name: "validation token accuracy", points: [{ x: 2, y: 0.4 }] }]);
    expect(curves(events.slice(0, 3)).loss.map((s) => s.name)).toEqual(["training loss"]); // no validation yet: one series
  });

  it("usage becomes one bar per day of the window (empty days at zero) and a stack per model", () => {
    const day = 86_400;
    const start = 20_000 * day;
    const result = (model: string, total_tokens: number) => ({ model, num_model_requests: 1, input_tokens: 0, output_tokens: total_tokens, total_tokens });
    const report: UsageReport = {
      object: "usage",
      start_time: start + 3600,
      end_time: start + 3 * day,
      totals: { num_model_requests: 3, input_tokens: 0, output_tokens: 60, total_tokens: 60 },
      models: [result("base", 40), result("ft:a", 20)],
      data: [
        { object: "bucket", start_time: start, end_time: start + day, results: [result("base", 30), result("ft:a", 20)] },
        { object: "bucket", start_time: start + 2 * day, end_time: start + 3 * day, results: [result("base", 10)] },
      ],
      has_more: false,
      next_page: null,
    };
    const bars = dailyTokens(report);
    expect(bars.categories).toEqual([0, 1, 2].map((i) => new Date((start + i * day) * 1000).toISOString().slice(5, 10)));
    expect(bars.stacks).toEqual([
      { name: "base", values: [30, 0, 10] },
      { name: "ft:a", values: [20, 0, 0] },
    ]);
  });
});
