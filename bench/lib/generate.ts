/**
 * Turns the suite's CSV into docs/benchmarks.md and its SVG plots. The prose lives in a template
 * (bench/benchmarks.template.md); every number written comes from a CSV row, so a benchmark that was not
 * run shows as "not measured", never as a number.
 *
 * Template directives, each alone on a line:
 *   {{targets}}          the targets beside the measured numbers, with PASS/MISS
 *   {{runs}}             which run measured which benchmark, when, at which commit and load average
 *   {{table:BENCH}}      every row of one benchmark
 *   {{plot:NAME}}        one of PLOTS, rendered to SVG beside the markdown
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import * as prettier from 'prettier';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import type { Row } from './results.ts';

export interface TargetVerdict {
  what: string;
  threshold: string;
  measured: string | undefined;
  pass: boolean | undefined;
}

const num = (r: Row) => Number(r.value);
const fmt = (v: number) =>
  Number.isInteger(v)
    ? String(v)
    : Math.abs(v) >= 1000
      ? v.toFixed(0)
      : Math.abs(v) >= 100
        ? v.toFixed(1)
        : Math.abs(v) >= 10
          ? v.toFixed(2)
          : v.toFixed(3);
const withUnit = (r: Row) => `${fmt(num(r))} ${r.unit}`;

function find(rows: readonly Row[], bench: string, quantity: string, variant: string, stat: string) {
  return rows.find(
    (r) => r.bench === bench && r.quantity === quantity && r.variant === variant && r.stat === stat,
  );
}

interface TargetDef {
  what: string;
  threshold: string;
  /** The row the target is judged on, and whether it passes. */
  judge: (rows: readonly Row[]) => { row: Row; pass: boolean; detail?: string } | undefined;
}

const atMost =
  (bench: string, quantity: string, variant: string, stat: string, limit: number) =>
  (rows: readonly Row[]) => {
    const row = find(rows, bench, quantity, variant, stat);
    return row && { row, pass: num(row) <= limit };
  };

const atLeast =
  (bench: string, quantity: string, variant: string, stat: string, limit: number) =>
  (rows: readonly Row[]) => {
    const row = find(rows, bench, quantity, variant, stat);
    return row && { row, pass: num(row) >= limit };
  };

/** The targets of issue 8, in its words, then those of the earlier issues whose benchmarks joined the suite. */
export const TARGETS: TargetDef[] = [
  {
    what: 'Warm invocation (anchor calling one persistent stage): EBCC p50 minus plain Hono p50',
    threshold: '≤ +2 ms',
    judge: atMost('http', 'ebcc over hono', 'stage', 'p50 difference', 2),
  },
  {
    what: 'Warm invocation, anchor calling no stage: EBCC p50 minus plain Hono p50',
    threshold: '≤ +2 ms',
    judge: atMost('http', 'ebcc over hono', 'nostage', 'p50 difference', 2),
  },
  {
    what: 'Stage request through EBCC (artifacts durable) vs native, persistent stage, p50 ratio',
    threshold: '≤ 1.10×',
    judge: atMost('stage', 'ebcc/native', 'persistent', 'p50 ratio', 1.1),
  },
  {
    what: 'Same, p99 ratio',
    threshold: '≤ 1.5×',
    judge: atMost('stage', 'ebcc/native', 'persistent', 'p99 ratio', 1.5),
  },
  {
    what: 'Cold start with `sim`, function with one persistent stage, p50',
    threshold: '≤ 150 ms',
    judge: atMost('cold', 'cold start', 'stage', 'p50', 150),
  },
  {
    what: 'Warm start as a fraction of cold start (p50 / p50)',
    threshold: '≤ 1/20 (0.05)',
    judge: atMost('cold', 'warm/cold', 'stage', 'p50 ratio', 0.05),
  },
  {
    what: 'Warm invocations/s, `persistent` stage, durable artifacts, best client count',
    threshold: '≥ 2,000/s',
    judge: (rows) => {
      const row = find(rows, 'throughput', 'invocations/s', 'persistent', 'best');
      return row && { row, pass: num(row) >= 2000 };
    },
  },
  {
    what: 'Warm composites on one host (largest count warmed)',
    threshold: '≥ 1,000',
    judge: (rows) => {
      const row = find(rows, 'density', 'warm composites', 'all', 'largest');
      return row && { row, pass: num(row) >= 1000 };
    },
  },
  {
    what: 'Resident memory (PSS) per warm composite, anchor + stage, at the largest count warmed',
    threshold: '≤ 8 MiB',
    judge: (rows) => {
      const largest = find(rows, 'density', 'warm composites', 'all', 'largest');
      const row =
        largest && find(rows, 'density', 'PSS per composite', 'anchor+stage', `${num(largest)} warm`);
      return row && { row, pass: num(row) <= 8 };
    },
  },
  {
    what: 'Evidence: `signExecution` per execution, median',
    threshold: '≤ 100 µs',
    judge: atMost('evidence', 'signExecution', 'ebcc', 'median', 100),
  },
  {
    what: 'Evidence: offline `verifyBundle`, median',
    threshold: '≥ 5,000 evidences/s',
    judge: atLeast('evidence', 'verifyBundle', 'ebcc', 'median', 5000),
  },
  {
    what: 'Sealing: added by the enclave per invocation, median',
    threshold: '≤ 200 µs',
    judge: atMost('seal', 'HPKE per invocation', 'enclave side', 'median', 200),
  },
  {
    what: 'Batch: jobs/s at the best worker concurrency',
    threshold: '≥ 1,000/s',
    judge: atLeast('batch', 'jobs/s', 'all levels', 'best', 1000),
  },
  {
    what: 'Warm pool: warm-hit ratio under steady load',
    threshold: '≥ 0.99',
    judge: atLeast('pool', 'warm-hit ratio', '', 'ratio', 0.99),
  },
  {
    what: 'Warm pool: warm p50 as a fraction of cold p50',
    threshold: '≤ 1/20 (0.05)',
    judge: atMost('pool', 'warm/cold', '', 'p50 ratio', 0.05),
  },
];

export function judgeTargets(rows: readonly Row[]): TargetVerdict[] {
  return TARGETS.map((t) => {
    const judged = t.judge(rows);
    return {
      what: t.what,
      threshold: t.threshold,
      measured: judged && `${withUnit(judged.row)} (run ${judged.row.run_id})`,
      pass: judged?.pass,
    };
  });
}

function targetsTable(rows: readonly Row[]): string {
  const lines = ['| target | threshold | measured | result |', '| --- | --- | --- | --- |'];
  for (const v of judgeTargets(rows))
    lines.push(
      `| ${v.what} | ${v.threshold} | ${v.measured ?? 'not measured'} | ${v.pass === undefined ? '–' : v.pass ? '**PASS**' : '**MISS**'} |`,
    );
  return lines.join('\n');
}

function runsTable(rows: readonly Row[]): string {
  const seen = new Map<string, Row>();
  for (const r of rows) if (!seen.has(r.bench)) seen.set(r.bench, r);
  const lines = [
    '| benchmark | run | measured at (UTC) | commit | machine | load average (1 min) at start → end |',
    '| --- | --- | --- | --- | --- | --- |',
  ];
  for (const [bench, r] of seen)
    lines.push(
      `| ${bench} | ${r.run_id} | ${r.measured_at.slice(0, 16).replace('T', ' ')} | \`${r.commit}\` | ${r.machine} | ${r.load_start} → ${r.load_end} |`,
    );
  return lines.join('\n');
}

/** One line per quantity and variant, one column per statistic (in the order they were recorded). */
function benchTable(rows: readonly Row[], bench: string): string {
  const mine = rows.filter((r) => r.bench === bench);
  if (mine.length === 0) return `_Not measured: run \`npm run bench -- --only=${bench}\`._`;
  const stats: string[] = [];
  const groups = new Map<string, Map<string, Row>>();
  for (const r of mine) {
    if (!stats.includes(r.stat)) stats.push(r.stat);
    const key = `${r.quantity}\u0000${r.variant}\u0000${r.unit}`;
    if (!groups.has(key)) groups.set(key, new Map());
    groups.get(key)!.set(r.stat, r);
  }
  const lines = [
    `| quantity | variant | unit | n | ${stats.join(' | ')} |`,
    `| --- | --- | --- | --- | ${stats.map(() => '---').join(' | ')} |`,
  ];
  for (const [key, byStat] of groups) {
    const [quantity, variant, unit] = key.split('\u0000');
    const ns = [...new Set([...byStat.values()].map((r) => r.n))].join('/');
    lines.push(
      `| ${quantity} | ${variant || '–'} | ${unit} | ${ns} | ${stats.map((s) => (byStat.has(s) ? fmt(num(byStat.get(s)!)) : '')).join(' | ')} |`,
    );
  }
  return lines.join('\n');
}

export interface PlotDef {
  name: string;
  title: string;
  /** A vega-lite spec over the rows, or undefined when the rows it needs are not in the CSV. */
  spec: (rows: readonly Row[]) => TopLevelSpec | undefined;
}

const values = (rows: readonly Row[]) => rows.map((r) => ({ ...r, value: num(r) }));

export const PLOTS: PlotDef[] = [
  {
    name: 'stage-phases',
    title: 'Stage request through EBCC: time per phase (ms), stacked, at p50, p99 and p99.9',
    spec: (rows) => {
      const data = rows.filter(
        (r) =>
          r.bench === 'stage' && r.quantity.startsWith('phase ') && ['p50', 'p99', 'p99.9'].includes(r.stat),
      );
      if (!data.length) return undefined;
      return {
        data: { values: values(data).map((r) => ({ ...r, mode: r.quantity.slice('phase '.length) })) },
        mark: 'bar',
        encoding: {
          column: { field: 'mode', type: 'nominal', title: null },
          x: { field: 'stat', type: 'ordinal', sort: ['p50', 'p99', 'p99.9'], title: null },
          y: { field: 'value', type: 'quantitative', aggregate: 'sum', title: 'ms' },
          color: { field: 'variant', type: 'nominal', title: 'phase' },
          order: { field: 'variant' },
        },
      };
    },
  },
  {
    name: 'throughput',
    title: 'Warm invocations/s against concurrent clients (durable artifacts)',
    spec: (rows) => {
      const data = rows.filter(
        (r) => r.bench === 'throughput' && r.quantity === 'invocations/s' && r.stat.startsWith('c='),
      );
      if (!data.length) return undefined;
      return {
        data: { values: values(data).map((r) => ({ ...r, clients: Number(r.stat.slice(2)) })) },
        mark: { type: 'line', point: true },
        encoding: {
          x: {
            field: 'clients',
            type: 'quantitative',
            scale: { type: 'log', base: 2 },
            title: 'concurrent clients',
          },
          y: { field: 'value', type: 'quantitative', title: 'invocations/s' },
          color: { field: 'variant', type: 'nominal', title: 'stage mode' },
        },
      };
    },
  },
  {
    name: 'density-memory',
    title: 'Memory per warm composite (MiB, PSS), anchor and stage',
    spec: (rows) => {
      const data = rows.filter(
        (r) =>
          r.bench === 'density' &&
          r.quantity === 'PSS per composite' &&
          (r.variant === 'anchor' || r.variant === 'stage'),
      );
      if (!data.length) return undefined;
      return {
        data: { values: values(data) },
        mark: 'bar',
        encoding: {
          x: { field: 'stat', type: 'ordinal', title: 'warm composites' },
          y: { field: 'value', type: 'quantitative', aggregate: 'sum', title: 'MiB per composite' },
          color: { field: 'variant', type: 'nominal', title: 'process' },
        },
      };
    },
  },
  {
    name: 'floor',
    title: 'Floors of this machine, p50 (ms, log scale)',
    spec: (rows) => {
      const data = rows.filter(
        (r) => r.bench === 'floor' && r.stat === 'p50' && (r.unit === 'ms' || r.unit === 'µs'),
      );
      if (!data.length) return undefined;
      return {
        data: {
          values: values(data).map((r) => ({ ...r, value: r.unit === 'µs' ? r.value / 1000 : r.value })),
        },
        mark: 'bar',
        encoding: {
          y: { field: 'quantity', type: 'nominal', title: null, sort: '-x', axis: { labelLimit: 300 } },
          x: { field: 'value', type: 'quantitative', title: 'ms (p50), log scale', scale: { type: 'log' } },
        },
      };
    },
  },
  {
    name: 'cold-phases',
    title: 'Cold start: where the time goes (p50 of each phase, ms)',
    spec: (rows) => {
      const data = rows.filter(
        (r) => r.bench === 'cold' && r.quantity.startsWith('cold phase ') && r.stat === 'p50',
      );
      if (!data.length) return undefined;
      return {
        data: { values: values(data).map((r) => ({ ...r, phase: r.quantity.slice('cold phase '.length) })) },
        mark: 'bar',
        encoding: {
          y: { field: 'variant', type: 'nominal', title: 'function' },
          x: { field: 'value', type: 'quantitative', aggregate: 'sum', title: 'ms (sum of phase p50s)' },
          color: { field: 'phase', type: 'nominal' },
        },
      };
    },
  },
  {
    name: 'http',
    title: 'Warm HTTP invocation latency (ms): EBCC, plain Hono, node:http',
    spec: (rows) => {
      const data = rows.filter(
        (r) => r.bench === 'http' && r.quantity === 'latency' && ['p50', 'p99'].includes(r.stat),
      );
      if (!data.length) return undefined;
      return {
        data: { values: values(data) },
        mark: 'bar',
        encoding: {
          y: { field: 'variant', type: 'nominal', title: null },
          x: { field: 'value', type: 'quantitative', title: 'ms' },
          yOffset: { field: 'stat' },
          color: { field: 'stat', type: 'nominal' },
        },
      };
    },
  },
];

export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const compiled = compile(spec).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

export interface GenerateOptions {
  rows: readonly Row[];
  template: string;
  /** Where the markdown goes; plots are written to plotDir and linked relative to it. */
  markdownPath: string;
  plotDir: string;
}

/** Renders the template; returns the markdown and the plot files written. */
export async function generateDocs(options: GenerateOptions): Promise<{ markdown: string; plots: string[] }> {
  const { rows, template, markdownPath, plotDir } = options;
  const plots: string[] = [];
  const out: string[] = [];
  for (const line of template.split('\n')) {
    const directive = /^\{\{(targets|runs|table:[\w-]+|plot:[\w-]+)\}\}\s*$/.exec(line)?.[1];
    if (!directive) {
      if (/\{\{[^}]*\}\}/.test(line)) throw new Error(`template: unknown directive in "${line}"`);
      out.push(line);
    } else if (directive === 'targets') out.push(targetsTable(rows));
    else if (directive === 'runs') out.push(runsTable(rows));
    else if (directive.startsWith('table:')) out.push(benchTable(rows, directive.slice('table:'.length)));
    else {
      const name = directive.slice('plot:'.length);
      const plot = PLOTS.find((p) => p.name === name);
      if (!plot) throw new Error(`template: no plot "${name}" (have ${PLOTS.map((p) => p.name).join(', ')})`);
      const spec = plot.spec(rows);
      if (!spec) {
        out.push(`_(plot "${plot.title}": not measured)_`);
        continue;
      }
      const file = join(plotDir, `${name}.svg`);
      await mkdir(plotDir, { recursive: true });
      const svg = await renderSvg({
        $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
        title: plot.title,
        ...spec,
      } as TopLevelSpec);
      await writeFile(file, svg);
      plots.push(file);
      out.push(`![${plot.title}](${relative(join(markdownPath, '..'), file)})`);
    }
  }
  // Aligned tables, so that the page reads as well in a terminal as rendered.
  const config = (await prettier.resolveConfig(markdownPath)) ?? {};
  const markdown = await prettier.format(out.join('\n'), {
    ...config,
    filepath: markdownPath,
    parser: 'markdown',
  });
  await writeFile(markdownPath, markdown);
  return { markdown, plots };
}
