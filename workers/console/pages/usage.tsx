/** Usage: tokens per day and model over the last 30 days as stacked bars, and the totals per model. */
import { BarChart, type StackedBars } from "../chart.tsx";
import { ErrorNote, formatCount, useLoad } from "../components.tsx";
import type { UsageReport } from "../../../src/client/pica-client.ts";
import { api } from "../session.ts";

const DAYS = 30;

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

export function UsagePage() {
  const usage = useLoad(() => api.usage(DAYS), []);
  return (
    <section aria-labelledby="usage-title">
      <h1 id="usage-title">Usage</h1>
      <ErrorNote error={usage.error} />
      {usage.data === null ? (
        <p>Loading…</p>
      ) : (
        <>
          <h2>Tokens per day, last {DAYS} days</h2>
          <BarChart data={dailyTokens(usage.data)} label={`Tokens per day and model over the last ${DAYS} days`} />
          <table>
            <thead>
              <tr>
                <th scope="col">Model</th>
                <th scope="col">Requests</th>
                <th scope="col">Input tokens</th>
                <th scope="col">Output tokens</th>
                <th scope="col">Total tokens</th>
              </tr>
            </thead>
            <tbody>
              {usage.data.models.map((model) => (
                <tr>
                  <td class="mono">{model.model}</td>
                  <td class="number">{formatCount(model.num_model_requests)}</td>
                  <td class="number">{formatCount(model.input_tokens)}</td>
                  <td class="number">{formatCount(model.output_tokens)}</td>
                  <td class="number">{formatCount(model.total_tokens)}</td>
                </tr>
              ))}
              <tr class="total">
                <th scope="row">All models</th>
                <td class="number">{formatCount(usage.data.totals.num_model_requests)}</td>
                <td class="number">{formatCount(usage.data.totals.input_tokens)}</td>
                <td class="number">{formatCount(usage.data.totals.output_tokens)}</td>
                <td class="number">{formatCount(usage.data.totals.total_tokens)}</td>
              </tr>
            </tbody>
          </table>
        </>
      )}
    </section>
  );
}
