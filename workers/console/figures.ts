/**
 * The numbers behind the console's charts, free of the DOM: a job's curves from its events, a
 * usage report's tokens per day and model, and round axis ticks.
 */
import type { JobEvent, UsageReport } from "../../src/client/pica-client.ts";

export interface Series {
  name: string;
  points: { x: number; y: number }[];
}

export interface StackedBars {
  categories: string[]; // x, e.g. days
  stacks: { name: string; values: number[] }[]; // one per colour, values per category
}

/** Round tick values from at or below `min` to at or above `max`: about `count` steps of 1/2/5 × 10ⁿ. */
export function ticks(min: number, max: number, count = 5): number[] {
  if (!(max > min)) return [min];
  const rough = (max - min) / count;
  const magnitude = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= rough) ?? rough;
  const first = Math.floor(min / step + 1e-9);
  const last = Math.ceil(max / step - 1e-9);
  const values: number[] = [];
  for (let i = first; i <= last; i++) values.push(Number((i * step).toPrecision(12)));
  return values;
}

/** The loss and accuracy curves in a job's metrics events. */
export function curves(events: JobEvent[]): { loss: Series[]; accuracy: Series[] } {
  const train: Series = { name: "training loss", points: [] };
  const validation: Series = { name: "validation loss", points: [] };
  const accuracy: Series = { name: "validation token accuracy", points: [] };
  let step = 0;
  for (const event of events) {
    if (event.type !== "metrics" || event.data === null) continue;
    const data = event.data as Record<string, number | null | undefined>;
    if (typeof data.step === "number") {
      step = data.step;
      if (typeof data.train_loss === "number") train.points.push({ x: step, y: data.train_loss });
    } else if (typeof data.epoch === "number") {
      // An epoch's validation is plotted at the last step trained before it.
      if (typeof data.validation_loss === "number") validation.points.push({ x: step, y: data.validation_loss });
      if (typeof data.validation_token_accuracy === "number") accuracy.points.push({ x: step, y: data.validation_token_accuracy });
    }
  }
  return { loss: validation.points.length > 0 ? [train, validation] : [train], accuracy: [accuracy] };
}

/** Every day of the window (empty ones too), with each model's tokens. */
export function dailyTokens(report: UsageReport): StackedBars {
  const models = report.models.map((m) => m.model);
  const byDay = new Map(report.data.map((bucket) => [bucket.start_time, bucket]));
  const categories: string[] = [];
  const stacks = models.map((name) => ({ name, values: [] as number[] }));
  const firstDay = Math.floor(report.start_time / 86_400) * 86_400;
  for (let day = firstDay; day < report.end_time; day += 86_400) {
    categories.push(new Date(day * 1000).toISOString().slice(5, 10));
    const results = byDay.get(day)?.results ?? [];
    stacks.forEach((stack) => stack.values.push(results.find((r) => r.model === stack.name)?.total_tokens ?? 0));
  }
  return { categories, stacks };
}
