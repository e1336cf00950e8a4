/**
 * Charts as plain SVG (no library, nothing loaded from elsewhere): a line chart of series over a
 * numeric x (loss per step) and a stacked bar chart of categories over days (tokens per model).
 * Colours come from CSS classes (`series-0`… set `--series`), so the strict style policy holds.
 */
import { type Series, type StackedBars, ticks } from "./figures.ts";

const WIDTH = 640;
const HEIGHT = 240;
const MARGIN = { top: 12, right: 16, bottom: 28, left: 56 };
const PLOT_WIDTH = WIDTH - MARGIN.left - MARGIN.right;
const PLOT_HEIGHT = HEIGHT - MARGIN.top - MARGIN.bottom;

/** A short label for an axis value. */
function label(value: number): string {
  if (value !== 0 && (Math.abs(value) >= 10_000 || Math.abs(value) < 0.01)) return value.toExponential(0);
  return Number(value.toPrecision(3)).toLocaleString("en");
}

/** The y axis: a grid line and a label at each tick. */
function YAxis(props: { ticks: number[]; y: (value: number) => number }) {
  return (
    <>
      {props.ticks.map((t) => (
        <g class="tick">
          <line x1={MARGIN.left} x2={WIDTH - MARGIN.right} y1={props.y(t)} y2={props.y(t)} />
          <text x={MARGIN.left - 6} y={props.y(t) + 4} text-anchor="end">
            {label(t)}
          </text>
        </g>
      ))}
    </>
  );
}

/** Series of points as lines, with axes; `label` describes the chart to a screen reader. */
export function LineChart(props: { series: Series[]; xLabel: string; label: string }) {
  const all = props.series.flatMap((s) => s.points);
  if (all.length === 0) return <p class="empty">No points yet.</p>;
  const xs = all.map((p) => p.x);
  const ys = all.map((p) => p.y);
  const [xMin, xMax] = [Math.min(...xs), Math.max(...xs, Math.min(...xs) + 1)];
  const yTicks = ticks(Math.min(0, ...ys), Math.max(...ys, 1e-6));
  const [yMin, yMax] = [yTicks[0], yTicks[yTicks.length - 1]];
  const x = (v: number) => MARGIN.left + ((v - xMin) / (xMax - xMin)) * PLOT_WIDTH;
  const y = (v: number) => MARGIN.top + PLOT_HEIGHT - ((v - yMin) / (yMax - yMin || 1)) * PLOT_HEIGHT;
  return (
    <figure class="chart">
      <svg viewBox={`0 0 ${WIDTH} ${HEIGHT}`} role="img" aria-label={props.label}>
        <YAxis ticks={yTicks} y={y} />
        {ticks(xMin, xMax, 6)
          .filter((t) => Number.isInteger(t))
          .map((t) => (
            <text class="tick" x={x(t)} y={HEIGHT - 8} text-anchor="middle">
              {label(t)}
            </text>
          ))}
        {props.series.map((s, i) =>
          s.points.length === 1 ? (
            <circle class={`series series-${i}`} cx={x(s.points[0].x)} cy={y(s.points[0].y)} r="3" />
          ) : (
            <polyline class={`series series-${i}`} points={s.points.map((p) => `${x(p.x).toFixed(1)},${y(p.y).toFixed(1)}`).join(" ")} />
          ),
        )}
      </svg>
      <figcaption>
        {props.series.map((s, i) => (
          <span class={`legend series-${i}`}>
            {s.name}
            {s.points.length > 0 ? `: ${label(s.points[s.points.length - 1].y)}` : ""}
          </span>
        ))}
        <span class="axis-label">x: {props.xLabel}</span>
      </figcaption>
    </figure>
  );
}

/** Stacked bars per category; `label` describes the chart to a screen reader. */
export function BarChart(props: { data: StackedBars; label: string }) {
  const { categories, stacks } = props.data;
  if (categories.length === 0) return <p class="empty">Nothing in this window.</p>;
  const totals = categories.map((_, c) => stacks.reduce((sum, s) => sum + s.values[c], 0));
  const yTicks = ticks(0, Math.max(...totals, 1));
  const yMax = yTicks[yTicks.length - 1];
  const slot = PLOT_WIDTH / categories.length;
  const barWidth = Math.max(2, slot * 0.7);
  const y = (v: number) => MARGIN.top + PLOT_HEIGHT - (v / yMax) * PLOT_HEIGHT;
  const labelEvery = Math.ceil(categories.length / 8);
  return (
    <figure class="chart">
      <svg viewBox={`0 0 ${WIDTH} ${HEIGHT}`} role="img" aria-label={props.label}>
        <YAxis ticks={yTicks} y={y} />
        {categories.map((category, c) => {
          let base = 0;
          const left = MARGIN.left + c * slot + (slot - barWidth) / 2;
          return (
            <g>
              {stacks.map((s, i) => {
                const top = base + s.values[c];
                const rect = <rect class={`bar series-${i}`} x={left} width={barWidth} y={y(top)} height={Math.max(0, y(base) - y(top))} />;
                base = top;
                return rect;
              })}
              {c % labelEvery === 0 ? (
                <text class="tick" x={left + barWidth / 2} y={HEIGHT - 8} text-anchor="middle">
                  {category}
                </text>
              ) : null}
            </g>
          );
        })}
      </svg>
      <figcaption>
        {stacks.map((s, i) => (
          <span class={`legend series-${i}`}>{s.name}</span>
        ))}
      </figcaption>
    </figure>
  );
}
