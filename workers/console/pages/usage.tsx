/** Usage: tokens per day and model over the last 30 days as stacked bars, and the totals per model. */
import { BarChart } from "../chart.tsx";
import { ErrorNote, formatCount, TableHead, useLoad } from "../components.tsx";
import { dailyTokens } from "../figures.ts";
import { api } from "../session.ts";

const DAYS = 30;

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
            <TableHead columns={["Model", "Requests", "Input tokens", "Output tokens", "Total tokens"]} />
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
