/**
 * The sweep's plot as a standalone SVG: held-out loss (linear y) against trainable parameters
 * (log x), one line per method, a vertical bar per point for the spread over seeds.
 */

/** One point: x, y, the spread of y, and a short label drawn beside it (e.g. the rank). */
export interface PlotPoint {
  x: number;
  y: number;
  low: number;
  high: number;
  tag: string;
}

export interface PlotSeries {
  label: string;
  points: PlotPoint[];
}

const WIDTH = 720;
const HEIGHT = 440;
const MARGIN = { left: 64, right: 24, top: 40, bottom: 56 };
const COLOURS = ["#2f6fdf", "#1c9c6b", "#d9622b", "#8b52c8"];

const escapeXml = (text: string) => text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

/** Round numbers for a linear axis between `min` and `max`: about five of them. */
function linearTicks(min: number, max: number): number[] {
  const raw = (max - min) / 5;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw)!;
  const ticks: number[] = [];
  for (let t = Math.ceil(min / step) * step; t <= max + 1e-12; t += step) ticks.push(Number(t.toPrecision(6)));
  return ticks;
}

const compact = (n: number) => (n >= 1e6 ? `${n / 1e6}M` : n >= 1e3 ? `${n / 1e3}k` : String(n));

/** The SVG text of the plot. */
export function lossAgainstParametersSvg(series: PlotSeries[], options: { title: string }): string {
  const points = series.flatMap((s) => s.points);
  const xMin = 10 ** Math.floor(Math.log10(Math.min(...points.map((p) => p.x))));
  const xMax = 10 ** Math.ceil(Math.log10(Math.max(...points.map((p) => p.x))));
  const yLow = Math.min(...points.map((p) => p.low));
  const yHigh = Math.max(...points.map((p) => p.high));
  const pad = 0.05 * (yHigh - yLow || 1);
  const [yMin, yMax] = [Math.max(0, yLow - pad), yHigh + pad];
  const plotWidth = WIDTH - MARGIN.left - MARGIN.right;
  const plotHeight = HEIGHT - MARGIN.top - MARGIN.bottom;
  const sx = (x: number) => MARGIN.left + (plotWidth * Math.log10(x / xMin)) / Math.log10(xMax / xMin);
  const sy = (y: number) => MARGIN.top + plotHeight * (1 - (y - yMin) / (yMax - yMin));
  const f = (n: number) => n.toFixed(1);

  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 ${WIDTH} ${HEIGHT}" width="${WIDTH}" height="${HEIGHT}" font-family="system-ui, sans-serif" font-size="12">`,
    `<title>${escapeXml(options.title)}</title>`,
    `<rect width="${WIDTH}" height="${HEIGHT}" fill="#fff"/>`,
    `<text x="${WIDTH / 2}" y="22" text-anchor="middle" font-size="14">${escapeXml(options.title)}</text>`,
  ];
  for (let decade = xMin; decade <= xMax * 1.0001; decade *= 10) {
    for (const m of [1, 2, 5]) {
      const x = decade * m;
      if (x > xMax * 1.0001) break;
      parts.push(`<line x1="${f(sx(x))}" x2="${f(sx(x))}" y1="${MARGIN.top}" y2="${MARGIN.top + plotHeight}" stroke="#eee"/>`);
      parts.push(`<text x="${f(sx(x))}" y="${MARGIN.top + plotHeight + 18}" text-anchor="middle" fill="#444">${compact(x)}</text>`);
    }
  }
  for (const y of linearTicks(yMin, yMax)) {
    parts.push(`<line x1="${MARGIN.left}" x2="${MARGIN.left + plotWidth}" y1="${f(sy(y))}" y2="${f(sy(y))}" stroke="#eee"/>`);
    parts.push(`<text x="${MARGIN.left - 8}" y="${f(sy(y) + 4)}" text-anchor="end" fill="#444">${y}</text>`);
  }
  parts.push(
    `<rect x="${MARGIN.left}" y="${MARGIN.top}" width="${plotWidth}" height="${plotHeight}" fill="none" stroke="#888"/>`,
    `<text x="${MARGIN.left + plotWidth / 2}" y="${HEIGHT - 12}" text-anchor="middle">trainable parameters (log scale)</text>`,
    `<text transform="translate(16 ${MARGIN.top + plotHeight / 2}) rotate(-90)" text-anchor="middle">held-out loss</text>`,
  );
  series.forEach((s, i) => {
    const colour = COLOURS[i % COLOURS.length];
    const sorted = [...s.points].sort((a, b) => a.x - b.x);
    parts.push(`<polyline fill="none" stroke="${colour}" stroke-width="2" points="${sorted.map((p) => `${f(sx(p.x))},${f(sy(p.y))}`).join(" ")}"/>`);
    for (const p of sorted) {
      parts.push(`<line x1="${f(sx(p.x))}" x2="${f(sx(p.x))}" y1="${f(sy(p.low))}" y2="${f(sy(p.high))}" stroke="${colour}"/>`);
      parts.push(`<circle cx="${f(sx(p.x))}" cy="${f(sy(p.y))}" r="4" fill="${colour}"/>`);
      parts.push(`<text x="${f(sx(p.x) + 6)}" y="${f(sy(p.y) - 6)}" fill="${colour}">${escapeXml(p.tag)}</text>`);
    }
    const legendY = MARGIN.top + 16 + 18 * i;
    parts.push(
      `<line x1="${WIDTH - MARGIN.right - 150}" x2="${WIDTH - MARGIN.right - 126}" y1="${legendY - 4}" y2="${legendY - 4}" stroke="${colour}" stroke-width="2"/>`,
    );
    parts.push(`<text x="${WIDTH - MARGIN.right - 120}" y="${legendY}">${escapeXml(s.label)}</text>`);
  });
  parts.push("</svg>");
  return `${parts.join("\n")}\n`;
}
