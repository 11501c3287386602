/** Small, dependency-free SVG charts: latency CDFs and horizontal stacked bars. */
import { cdfPoints } from './stats.ts';

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf'];
const FONT = 'font-family="system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif"';

const esc = (text: string) =>
  text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const num = (v: number) => +v.toFixed(2);

function niceStep(range: number, target: number): number {
  const raw = range / target;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const residual = raw / magnitude;
  return (residual > 5 ? 10 : residual > 2 ? 5 : residual > 1 ? 2 : 1) * magnitude;
}

function linearTicks(min: number, max: number, target = 6): number[] {
  const step = niceStep(max - min || 1, target);
  const ticks: number[] = [];
  for (let v = Math.ceil(min / step) * step; v <= max + step * 1e-9; v += step)
    ticks.push(+v.toPrecision(12));
  return ticks;
}

function logTicks(min: number, max: number): number[] {
  const ticks: number[] = [];
  for (let e = Math.floor(Math.log10(min)); e <= Math.ceil(Math.log10(max)); e++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** e;
      if (v >= min * 0.999 && v <= max * 1.001) ticks.push(+v.toPrecision(12));
    }
  }
  return ticks;
}

const label = (v: number) =>
  v >= 100 ? v.toFixed(0) : v >= 1 ? String(+v.toFixed(1)) : String(+v.toPrecision(2));

export interface CdfSeries {
  name: string;
  samples: readonly number[];
  /** Palette index (default: the series' position). */
  color?: number;
  dashed?: boolean;
}

/** Empirical CDFs of latency samples, one line per series; the x axis is logarithmic by default. */
export function cdfChart(options: {
  title: string;
  xLabel: string;
  series: CdfSeries[];
  log?: boolean;
  width?: number;
  height?: number;
}): string {
  const width = options.width ?? 720;
  const height = options.height ?? 380;
  const log = options.log ?? true;
  const margin = { left: 56, right: 200, top: 40, bottom: 48 };
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;
  const all = options.series.flatMap((s) => s.samples);
  if (all.length === 0) throw new Error(`chart "${options.title}" has no data`);
  let min = Math.min(...all);
  let max = Math.max(...all);
  if (log) {
    min = Math.max(1e-3, 10 ** (Math.floor(Math.log10(min) * 4) / 4));
    max = 10 ** (Math.ceil(Math.log10(max) * 4) / 4);
  } else {
    min = 0;
    max = max * 1.05;
  }
  const x = (v: number) =>
    margin.left +
    (log
      ? ((Math.log10(Math.max(v, min)) - Math.log10(min)) / (Math.log10(max) - Math.log10(min))) * plotW
      : ((v - min) / (max - min)) * plotW);
  const y = (p: number) => margin.top + (1 - p) * plotH;
  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ${FONT} font-size="12">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${margin.left}" y="22" font-size="15" font-weight="600">${esc(options.title)}</text>`,
  );
  for (const t of log ? logTicks(min, max) : linearTicks(min, max)) {
    parts.push(
      `<line x1="${num(x(t))}" y1="${margin.top}" x2="${num(x(t))}" y2="${margin.top + plotH}" stroke="#e5e5e5"/>`,
      `<text x="${num(x(t))}" y="${margin.top + plotH + 16}" text-anchor="middle" fill="#444">${label(t)}</text>`,
    );
  }
  for (const p of [0, 0.25, 0.5, 0.75, 0.9, 1]) {
    parts.push(
      `<line x1="${margin.left}" y1="${num(y(p))}" x2="${margin.left + plotW}" y2="${num(y(p))}" stroke="${p === 0.5 ? '#c8c8c8' : '#efefef'}"/>`,
      `<text x="${margin.left - 6}" y="${num(y(p) + 4)}" text-anchor="end" fill="#444">${p}</text>`,
    );
  }
  parts.push(
    `<rect x="${margin.left}" y="${margin.top}" width="${plotW}" height="${plotH}" fill="none" stroke="#888"/>`,
    `<text x="${margin.left + plotW / 2}" y="${height - 10}" text-anchor="middle">${esc(options.xLabel)}${log ? ' (log scale)' : ''}</text>`,
    `<text transform="translate(14 ${margin.top + plotH / 2}) rotate(-90)" text-anchor="middle">fraction of requests ≤ x</text>`,
  );
  options.series.forEach((series, i) => {
    const color = PALETTE[(series.color ?? i) % PALETTE.length]!;
    const dash = series.dashed ? ' stroke-dasharray="6 4"' : '';
    const points = cdfPoints(series.samples, 400);
    let d = `M${num(x(points[0]![0]))},${num(y(0))}`;
    let previous = 0;
    for (const [v, p] of points) {
      d += ` L${num(x(v))},${num(y(previous))} L${num(x(v))},${num(y(p))}`;
      previous = p;
    }
    parts.push(`<path d="${d}" fill="none" stroke="${color}" stroke-width="1.8"${dash}/>`);
    const ly = margin.top + 8 + i * 20;
    parts.push(
      `<line x1="${margin.left + plotW + 14}" y1="${ly}" x2="${margin.left + plotW + 34}" y2="${ly}" stroke="${color}" stroke-width="3"${dash}/>`,
      `<text x="${margin.left + plotW + 40}" y="${ly + 4}">${esc(series.name)}</text>`,
    );
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}

export interface StackedRow {
  label: string;
  segments: { name: string; value: number }[];
  /** Shown at the end of the bar instead of the sum. */
  note?: string;
}

/** Horizontal stacked bars (one per row) with a shared legend; values in `unit`. */
export function stackedBars(options: {
  title: string;
  unit: string;
  rows: StackedRow[];
  width?: number;
}): string {
  const width = options.width ?? 760;
  const names = [...new Set(options.rows.flatMap((r) => r.segments.map((s) => s.name)))];
  const color = new Map(names.map((n, i) => [n, PALETTE[i % PALETTE.length]!]));
  // Legend columns: as many as fit the longest label (about 6.6 px per character at 12 px).
  const longest = Math.max(...names.map((n) => n.length));
  const columns = Math.max(1, Math.min(3, Math.floor((width - 24) / (longest * 6.6 + 30))));
  const margin = { left: 190, right: 110, top: 40, bottom: 48 + Math.ceil(names.length / columns) * 18 };
  const barH = 22;
  const gap = 12;
  const plotW = width - margin.left - margin.right;
  const plotH = options.rows.length * (barH + gap);
  const height = margin.top + plotH + margin.bottom;
  const totals = options.rows.map((r) => r.segments.reduce((a, s) => a + Math.max(0, s.value), 0));
  const max = Math.max(...totals) * 1.02;
  if (!(max > 0)) throw new Error(`chart "${options.title}" has no data`);
  const x = (v: number) => margin.left + (v / max) * plotW;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ${FONT} font-size="12">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="12" y="22" font-size="15" font-weight="600">${esc(options.title)}</text>`,
  ];
  for (const t of linearTicks(0, max, 6)) {
    parts.push(
      `<line x1="${num(x(t))}" y1="${margin.top - 4}" x2="${num(x(t))}" y2="${margin.top + plotH}" stroke="#eeeeee"/>`,
      `<text x="${num(x(t))}" y="${margin.top + plotH + 14}" text-anchor="middle" fill="#444">${label(t)}</text>`,
    );
  }
  parts.push(
    `<text x="${margin.left + plotW / 2}" y="${margin.top + plotH + 30}" text-anchor="middle">${esc(options.unit)}</text>`,
  );
  options.rows.forEach((row, i) => {
    const top = margin.top + i * (barH + gap);
    parts.push(
      `<text x="${margin.left - 8}" y="${top + barH / 2 + 4}" text-anchor="end">${esc(row.label)}</text>`,
    );
    let at = 0;
    for (const segment of row.segments) {
      const v = Math.max(0, segment.value);
      if (v <= 0) continue;
      parts.push(
        `<rect x="${num(x(at))}" y="${top}" width="${num(Math.max(0.5, x(at + v) - x(at)))}" height="${barH}" fill="${color.get(segment.name)}"><title>${esc(`${segment.name}: ${label(v)} ${options.unit}`)}</title></rect>`,
      );
      at += v;
    }
    parts.push(
      `<text x="${num(x(at) + 6)}" y="${top + barH / 2 + 4}" fill="#222">${esc(row.note ?? `${label(totals[i]!)}`)}</text>`,
    );
  });
  names.forEach((name, i) => {
    const lx = 12 + (i % columns) * ((width - 24) / columns);
    const ly = margin.top + plotH + 52 + Math.floor(i / columns) * 18;
    parts.push(
      `<rect x="${lx}" y="${ly - 10}" width="12" height="12" fill="${color.get(name)}"/>`,
      `<text x="${lx + 18}" y="${ly}">${esc(name)}</text>`,
    );
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}
