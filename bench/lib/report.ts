/**
 * Output of a benchmark run: the console summary, CSV files in bench/out/, and docs/benchmarks.md with
 * its SVG plots. Every number written comes from the Analysis of this run's samples.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import * as prettier from 'prettier';
import { COLD_VARIANTS, FLOOR_LABELS, FLOORS, type ColdBenchResult } from '../cold-bench.ts';
import {
  EBCC_TARGETS,
  HTTP_TARGETS,
  WARM_PHASE_TEXT,
  WARM_PHASES,
  type HttpBenchResult,
} from '../http-bench.ts';
import type { StageBenchResult } from '../stage-bench.ts';
import { COLD_PHASES, STAGE_PHASES, type Analysis, type Comparison } from './analysis.ts';
import { writeCsv } from './csv.ts';
import type { MachineInfo } from './machine.ts';
import { median, type Summary } from './stats.ts';
import { cdfChart, stackedBars } from './svg.ts';

export interface RunInfo {
  machine: MachineInfo;
  quick: boolean;
  only: string[];
  durationS: number;
  loadAverageAtEnd: number[];
  plan: Record<string, Record<string, number>>;
}

interface Raw {
  stage?: StageBenchResult;
  http?: HttpBenchResult;
  cold?: ColdBenchResult;
}

const f = (v: number, digits = 2) => v.toFixed(digits);
const ms = (v: number) => (v >= 100 ? f(v, 1) : v >= 10 ? f(v, 2) : f(v, 3));
const signed = (v: number) => `${v >= 0 ? '+' : '−'}${ms(Math.abs(v))}`;
const verdict = (pass: boolean) => (pass ? '**PASS**' : '**MISS**');

function summaryRows(prefix: string, entries: [string, Summary][]) {
  return entries.map(([name, s]) => [prefix, name, s.n, s.min, s.p50, s.p90, s.p99, s.max, s.mean]);
}

export async function writeCsvFiles(out: string, raw: Raw, analysis: Analysis, run: RunInfo): Promise<void> {
  const summary: (string | number)[][] = [];
  if (raw.stage && analysis.stage) {
    const rows: (string | number | undefined)[][] = [];
    for (const mode of ['persistent', 'oneshot'] as const)
      for (const variant of ['ebcc', 'native'] as const)
        raw.stage[mode][variant].forEach((s, i) =>
          rows.push([
            mode,
            variant,
            i,
            s.ms,
            s.responseMs,
            s.persistMs,
            s.validate,
            s.allocate,
            s.dispatch,
            s.execute,
            s.workMs,
          ]),
        );
    await writeCsv(
      join(out, 'stage-samples.csv'),
      [
        'mode',
        'variant',
        'round',
        'ms',
        'response_ms',
        'persist_ms',
        'validate_ms',
        'allocate_ms',
        'dispatch_ms',
        'execute_ms',
        'work_ms',
      ],
      rows,
    );
    for (const mode of ['persistent', 'oneshot'] as const) {
      const a = analysis.stage[mode];
      summary.push(
        ...summaryRows(`stage-${mode}`, [
          ['ebcc-durable', a.ebcc],
          ['ebcc-response', a.ebccResponse],
          ['native', a.native],
          ...STAGE_PHASES.map((p) => [`phase-${p}`, a.phases[p]] as [string, Summary]),
          ['work-ebcc', a.work.ebcc],
          ['work-native', a.work.native],
        ]),
      );
    }
  }
  if (raw.http && analysis.http) {
    const rows: (string | number | undefined)[][] = [];
    for (const t of HTTP_TARGETS) {
      const timings = (EBCC_TARGETS as readonly string[]).includes(t)
        ? raw.http.ebccTimings[t as (typeof EBCC_TARGETS)[number]]
        : undefined;
      raw.http.samples[t].forEach((v, i) => rows.push([t, i, v, timings?.acquire[i], timings?.anchor[i]]));
    }
    await writeCsv(
      join(out, 'http-samples.csv'),
      ['target', 'round', 'ms', 'gateway_acquire_ms', 'gateway_anchor_ms'],
      rows,
    );
    summary.push(...summaryRows('http', Object.entries(analysis.http.targets)));
    for (const t of EBCC_TARGETS) {
      const i = analysis.http.internals[t];
      summary.push(
        ...summaryRows(`http-${t}`, [
          ['acquire', i.acquire],
          ['anchor', i.anchor],
          ['rest', i.rest],
        ]),
      );
    }
    summary.push(...summaryRows('http-gateway-component', Object.entries(analysis.http.components)));
    const attributionRows: (string | number)[][] = [];
    for (const t of ['ebcc-nostage', 'ebcc-stage'] as const) {
      const phases = raw.http.attribution.phases[t];
      phases.before.forEach((_, i) => attributionRows.push([t, i, ...WARM_PHASES.map((p) => phases[p][i]!)]));
      summary.push(
        ...summaryRows(`http-traced-${t}`, [
          ...WARM_PHASES.map((p) => [p, analysis.http!.attribution[t][p]] as [string, Summary]),
          ['total', analysis.http.attribution[t].total],
        ]),
      );
    }
    await writeCsv(
      join(out, 'http-traced-phases.csv'),
      ['target', 'round', ...WARM_PHASES.map((p) => `${p}_ms`)],
      attributionRows,
    );
    if (raw.http.profile) {
      const p = raw.http.profile;
      await writeCsv(
        join(out, 'http-gateway-profile.csv'),
        ['kind', 'name', 'where', 'self_ms', 'share_of_busy'],
        [
          ['total', 'busy', '', p.busyMs, 1],
          ['total', 'wall', '', p.wallMs, ''],
          ...p.groups.map((g) => ['group', g.group, '', g.ms, g.share]),
          ...p.functions.map((x) => ['function', x.fn, x.where, x.ms, x.share]),
        ],
      );
    }
  }
  if (raw.cold && analysis.cold) {
    const rows: (string | number | undefined)[][] = [];
    for (const v of COLD_VARIANTS)
      for (const s of raw.cold.samples[v])
        rows.push([
          v,
          s.round,
          s.coldMs,
          s.warmMs,
          ...COLD_PHASES.map((p) => s.phases[p]),
          s.anchorLaunchMs,
          s.enclaveCreateMs,
          s.firstStageRunMs,
          s.loopMaxDelayMs,
        ]);
    await writeCsv(
      join(out, 'cold-samples.csv'),
      [
        'variant',
        'round',
        'cold_ms',
        'warm_ms',
        ...COLD_PHASES.map((p) => `${p}_ms`),
        'anchor_launch_ms',
        'enclave_create_ms',
        'first_stage_run_ms',
        'gateway_loop_max_delay_ms',
      ],
      rows,
    );
    await writeCsv(
      join(out, 'cold-floors.csv'),
      ['floor', 'round', 'ms'],
      FLOORS.flatMap((fl) => raw.cold!.floors[fl].map((v, i) => [fl, i, v])),
    );
    for (const v of COLD_VARIANTS) {
      const c = analysis.cold.variants[v];
      summary.push(
        ...summaryRows(`cold-${v}`, [
          ['cold', c.cold],
          ['warm', c.warm],
          ['anchor-launch', c.anchorLaunch],
          ['gateway-loop-max-delay', c.loopMaxDelay],
          ...(c.enclaveCreate ? [['enclave-create', c.enclaveCreate] as [string, Summary]] : []),
          ...(c.firstStageRun ? [['first-stage-run', c.firstStageRun] as [string, Summary]] : []),
          ...COLD_PHASES.map((p) => [`phase-${p}`, c.phases[p]] as [string, Summary]),
        ]),
      );
    }
    summary.push(...summaryRows('cold-floor', Object.entries(analysis.cold.floors)));
  }
  await writeCsv(
    join(out, 'summary.csv'),
    ['benchmark', 'series', 'n', 'min_ms', 'p50_ms', 'p90_ms', 'p99_ms', 'max_ms', 'mean_ms'],
    summary,
  );
  await writeCsv(
    join(out, 'targets.csv'),
    ['id', 'target', 'threshold', 'measured', 'result'],
    analysis.targets.map((t) => [t.id, t.what, t.threshold, t.measured, t.pass ? 'PASS' : 'MISS']),
  );
  await writeFile(join(out, 'results.json'), JSON.stringify({ run, analysis, raw }, null, 1) + '\n');
}

export function printAnalysis(analysis: Analysis, run: RunInfo, log: (line: string) => void): void {
  const line = (name: string, s: Summary, extra = '') =>
    log(
      `  ${name.padEnd(26)} n=${String(s.n).padStart(4)}  p50 ${ms(s.p50).padStart(8)}  p90 ${ms(s.p90).padStart(8)}  p99 ${ms(s.p99).padStart(8)} ms${extra}`,
    );
  const cmp = (c: Comparison, unit: '×' | 'ms') =>
    unit === '×'
      ? `${f(c.p50)}× (95% CI ${f(c.ci[0])}–${f(c.ci[1])}), p99 ${f(c.p99)}×`
      : `${signed(c.p50)} ms (95% CI ${signed(c.ci[0])}…${signed(c.ci[1])}), p99 ${signed(c.p99)} ms`;
  if (analysis.stage) {
    for (const mode of ['persistent', 'oneshot'] as const) {
      const a = analysis.stage[mode];
      log(`\nStage request, ${mode}:`);
      line('EBCC (until durable)', a.ebcc);
      line('EBCC (response only)', a.ebccResponse);
      line('native', a.native);
      log(`  ratio durable/native  ${cmp(a.ratioDurable, '×')}`);
      log(`  ratio response/native ${cmp(a.ratioResponse, '×')}`);
      for (const p of STAGE_PHASES) line(`  phase ${p}`, a.phases[p]);
      line('  work inside the stage', a.work.ebcc);
    }
  }
  if (analysis.http) {
    log('\nWarm HTTP invocation:');
    for (const t of HTTP_TARGETS) line(t, analysis.http.targets[t]);
    for (const k of ['nostage', 'stage', 'stage-auth'] as const)
      log(`  EBCC ${k} over Hono: ${cmp(analysis.http.overHono[k], 'ms')}`);
    for (const [name, c] of Object.entries(analysis.http.components)) line(`gateway piece: ${name}`, c);
    for (const t of ['ebcc-nostage', 'ebcc-stage'] as const)
      log(
        `  traced ${t}: ${WARM_PHASES.map((p) => `${p} ${ms(analysis.http!.attribution[t][p].p50)}`).join(', ')} (p50s; total p50 ${ms(analysis.http.attribution[t].total.p50)})`,
      );
    for (const t of EBCC_TARGETS) {
      const i = analysis.http.internals[t];
      log(
        `  ${t}: gateway acquire p50 ${ms(i.acquire.p50)}, anchor p50 ${ms(i.anchor.p50)}, rest p50 ${ms(i.rest.p50)} ms`,
      );
    }
  }
  if (analysis.cold) {
    log('\nCold start vs warm start:');
    for (const v of COLD_VARIANTS) {
      const c = analysis.cold.variants[v];
      line(`${v} cold`, c.cold);
      line(`${v} warm`, c.warm);
      log(
        `    phases p50: ${COLD_PHASES.map((p) => `${p} ${ms(c.phases[p].p50)}`).join(', ')}; anchor launch ${ms(c.anchorLaunch.p50)}${c.enclaveCreate ? `, enclave create ${ms(c.enclaveCreate.p50)}` : ''}${c.firstStageRun ? `, first stage run ${ms(c.firstStageRun.p50)}` : ''}`,
      );
    }
    for (const fl of FLOORS) line(`floor ${fl}`, analysis.cold.floors[fl]);
  }
  log('\nTargets:');
  for (const t of analysis.targets)
    log(`  ${t.pass ? 'PASS' : 'MISS'}  ${t.what.replace(/\*\*/g, '')} ${t.threshold}: ${t.measured}`);
  log(`\n(${f(run.durationS, 0)} s; load average at end ${run.loadAverageAtEnd.join(' ')})`);
}

/* ------------------------------------------------------------------------------------------------ */
/* docs/benchmarks.md                                                                                 */
/* ------------------------------------------------------------------------------------------------ */

const table = (header: string[], rows: (string | number)[][]) =>
  [
    `| ${header.join(' | ')} |`,
    `| ${header.map(() => '---').join(' | ')} |`,
    ...rows.map((r) => `| ${r.join(' | ')} |`),
  ].join('\n');

const pct = (s: Summary) => [ms(s.p50), ms(s.p90), ms(s.p99)];

/** The p50 of each quarter of a series, in measurement order: shows drift (other load) during the run. */
function quarters(samples: readonly number[]): string[] {
  const q = Math.floor(samples.length / 4);
  if (q < 1) throw new Error('too few samples to split into quarters');
  return [0, 1, 2, 3].map((i) => ms(median(samples.slice(i * q, i === 3 ? samples.length : (i + 1) * q))));
}

export async function writeDocs(
  root: string,
  raw: Required<Raw>,
  analysis: Analysis,
  run: RunInfo,
): Promise<string[]> {
  const stage = analysis.stage!;
  const http = analysis.http!;
  const cold = analysis.cold!;
  const docs = join(root, 'docs');
  const plots = join(docs, 'bench');
  await mkdir(plots, { recursive: true });
  const svgs: Record<string, string> = {};

  // ---- plots ----
  svgs['stage-phases.svg'] = stackedBars({
    title: 'Stage request, persistent: median of each phase (ms)',
    unit: 'ms (median of each phase; medians do not add up exactly to the median total)',
    rows: [
      {
        label: 'native (frame in, frame out)',
        segments: [{ name: 'native round trip', value: stage.persistent.native.p50 }],
      },
      {
        label: 'EBCC (until durable)',
        segments: STAGE_PHASES.map((p) => ({ name: p, value: stage.persistent.phases[p].p50 })),
        note: `p50 total ${ms(stage.persistent.ebcc.p50)}`,
      },
    ],
  });
  svgs['stage-cdf.svg'] = cdfChart({
    title: 'Stage request latency, persistent stage',
    xLabel: 'ms',
    series: [
      { name: 'native', samples: raw.stage.persistent.native.map((s) => s.ms) },
      {
        name: 'EBCC, response',
        samples: raw.stage.persistent.ebcc.map((s) => s.responseMs!),
        color: 1,
        dashed: true,
      },
      { name: 'EBCC, durable', samples: raw.stage.persistent.ebcc.map((s) => s.ms), color: 1 },
    ],
  });
  svgs['stage-oneshot-cdf.svg'] = cdfChart({
    title: 'Stage request latency, oneshot stage (fresh sandbox per request)',
    xLabel: 'ms',
    series: [
      { name: 'native', samples: raw.stage.oneshot.native.map((s) => s.ms) },
      { name: 'EBCC, durable', samples: raw.stage.oneshot.ebcc.map((s) => s.ms) },
    ],
  });
  svgs['http-cdf.svg'] = cdfChart({
    title: 'Warm HTTP invocation latency (client-side, keep-alive)',
    xLabel: 'ms',
    // One colour per server, solid without a stage, dashed with one.
    series: HTTP_TARGETS.map((t) => ({
      name: t,
      samples: raw.http.samples[t],
      color: t === 'ebcc-stage-auth' ? 3 : t.startsWith('ebcc') ? 1 : t.startsWith('hono') ? 0 : 2,
      dashed: t.endsWith('-stage') || t === 'ebcc-stage-auth',
    })),
  });
  svgs['http-breakdown.svg'] = stackedBars({
    title: 'Warm HTTP invocation: where the time goes (medians, ms)',
    unit: 'ms (median of each phase; EBCC phases from the traced gateway)',
    rows: (['nostage', 'stage'] as const).flatMap((k) => [
      {
        label: `plain Hono, ${k}`,
        segments: [{ name: 'plain Hono, whole request', value: http.targets[`hono-${k}`].p50 }],
      },
      {
        label: `EBCC (traced), ${k}`,
        segments: WARM_PHASES.map((ph) => ({ name: ph, value: http.attribution[`ebcc-${k}`][ph].p50 })),
        note: `p50 total ${ms(http.attribution[`ebcc-${k}`].total.p50)}`,
      },
    ]),
  });
  svgs['cold-phases.svg'] = stackedBars({
    title: 'Cold start: median of each phase (ms)',
    unit: 'ms (median of each phase)',
    rows: [
      ...COLD_VARIANTS.map((v) => ({
        label: `cold, ${v}`,
        segments: COLD_PHASES.map((p) => ({
          name: COLD_PHASE_LABELS[p],
          value: cold.variants[v].phases[p].p50,
        })),
        note: `p50 total ${ms(cold.variants[v].cold.p50)}`,
      })),
      ...FLOORS.map((fl) => ({
        label: `floor: ${fl}`,
        segments: [{ name: 'process start floor', value: cold.floors[fl].p50 }],
      })),
    ],
  });
  svgs['cold-cdf.svg'] = cdfChart({
    title: 'Cold vs warm start (client-side latency)',
    xLabel: 'ms',
    series: [
      ...COLD_VARIANTS.map((v, i) => ({
        name: `cold, ${v}`,
        samples: raw.cold.samples[v].map((s) => s.coldMs),
        color: i,
      })),
      ...COLD_VARIANTS.map((v, i) => ({
        name: `next warm, ${v}`,
        samples: raw.cold.samples[v].map((s) => s.warmMs),
        color: i,
        dashed: true,
      })),
    ],
  });
  const written: string[] = [];
  for (const [name, svg] of Object.entries(svgs)) {
    await writeFile(join(plots, name), svg);
    written.push(relative(root, join(plots, name)));
  }

  const md = renderMarkdown(raw, analysis, run);
  const path = join(docs, 'benchmarks.md');
  const config = (await prettier.resolveConfig(path)) ?? {};
  await writeFile(path, await prettier.format(md, { ...config, filepath: path, parser: 'markdown' }));
  written.unshift(relative(root, path));
  return written;
}

const COLD_PHASE_LABELS: Record<(typeof COLD_PHASES)[number], string> = {
  prepare: 'prepare (lookup, load version, instance record)',
  launch: 'anchor launch ∥ stage enclave creation',
  startup: 'created → start → running (records)',
  invocation: 'first invocation (anchor + stage)',
  other: 'HTTP, routing, durable record',
};

function renderMarkdown(raw: Required<Raw>, analysis: Analysis, run: RunInfo): string {
  const stage = analysis.stage!;
  const http = analysis.http!;
  const cold = analysis.cold!;
  const m = run.machine;
  const sp = stage.persistent;
  const so = stage.oneshot;
  const out: string[] = [];
  const p = (...lines: string[]) => out.push(lines.join('\n'), '');

  p(
    '# Benchmarks',
    '',
    `<!-- Generated by \`npm run bench\` (bench/run.ts) from the samples measured in that run. Do not edit by hand: rerun it. -->`,
    '',
    `Measured ${m.date.slice(0, 16).replace('T', ' ')} UTC on ${m.nproc}× ${m.cpuModel}, Node ${m.node}, at commit \`${m.commit}\`${m.dirtyFiles ? ` with ${m.dirtyFiles} uncommitted file(s)` : ''}. Every comparison below was measured in the same run, interleaved round by round; all numbers are client-side latencies unless stated otherwise.`,
  );
  p(
    '## Targets',
    '',
    table(
      ['target', 'threshold', 'measured', 'result'],
      analysis.targets.map((t) => [t.what, t.threshold, t.measured, verdict(t.pass)]),
    ),
  );

  p(
    '## Machine and method',
    '',
    table(
      ['', ''],
      [
        ['CPU', `${m.nproc}× ${m.cpuModel} (\`nproc\` = ${m.nproc})`],
        ['memory', `${m.memoryGiB} GiB`],
        ['kernel', m.kernel],
        ['Node', m.node],
        ['date', m.date],
        [
          'load average (1, 5, 15 min)',
          `${m.loadAverageAtStart.join(', ')} at the start; ${run.loadAverageAtEnd.join(', ')} at the end`,
        ],
        ['run time', `${f(run.durationS, 0)} s`],
        [
          'database',
          `libSQL file, journal_mode=${raw.http.database.journalMode}, synchronous=${raw.http.database.synchronous} (as \`openDatabase\` opens it)`,
        ],
      ],
    ),
    '',
    '- **Interleaving.** Each round runs every variant once, in an order rotated from round to round, so drift (other load, a growing database, page cache) spreads evenly over the variants. Warm-up rounds run first and are discarded.',
    "- **Statistics.** Percentiles are linear-interpolated order statistics (numpy's default). Ratios and differences compare p50s; the 95% interval next to them is a percentile bootstrap (2000 resamples) of that p50 comparison.",
    '- **Failing loudly.** Every response is checked (status, body, the warm/cold header, the expected instance), and afterwards the database must hold exactly one stage execution per stage request (benchmark 1), one invocation record per answered request and one stage execution per stage call (benchmark 2), and a `cold` invocation record for every cold request (benchmark 3). Otherwise the run exits non-zero and nothing is written here.',
    '- **Raw data.** `bench/out/*.csv` (per-sample), `bench/out/summary.csv`, `bench/out/targets.csv`, `bench/out/results.json`; gateway logs and the CPU profile are there too.',
    ...(m.loadAverageAtStart[0]! > m.nproc * 0.5 || run.loadAverageAtEnd[0]! > m.nproc * 0.5
      ? [
          '',
          `> **This run shared the machine with other work** (1-minute load average ${m.loadAverageAtStart[0]} at the start, ${run.loadAverageAtEnd[0]} at the end, on ${m.nproc} CPUs). Interleaving keeps the comparisons fair, but absolute latencies and tails are inflated; rerun on an idle machine for absolute numbers.`,
        ]
      : []),
  );

  p(
    '## How to run',
    '',
    '```sh',
    'npm run bench                  # full run, about 2–3 minutes; rewrites this file and docs/bench/*.svg',
    'npm run bench -- --quick       # smoke test with few rounds; writes bench/out/ only',
    'npm run bench -- --only=http   # one or more of stage,http,cold; writes bench/out/ only',
    'npm run bench -- --report-only # rewrite this file from bench/out/results.json of the last full run',
    '```',
    '',
    'It needs root (stages and anchors run in the bubblewrap sandbox) and `redis-server` (started privately unless `REDIS_URL` answers).',
  );

  // ---- 1 ----
  const d = raw.stage.durableRows;
  p(
    '## 1. Stage request: EBCC vs native',
    '',
    'The stage ([bench/functions/work-stage/work.mjs](../bench/functions/work-stage/work.mjs)) hashes the request plus 1 MiB it holds (SHA-256) and signs the digest with Ed25519; it times that work itself. **Through EBCC** is `InstanceStages.invoke()` with a real `GroupCommitter` on a real libSQL file and a real `EidAllocator`, and the request has a JSON Schema to validate; its latency counts until `durable` resolves (the artifacts are committed), and separately until `invoke()` returns. **Native** is the same stage process in the same sandbox (`spawnSandboxed(enclaveSandbox(…))`) driven with the same framing, write a frame and read a frame, and nothing else.',
    '',
    table(
      ['mode', 'series', 'n', 'p50 ms', 'p90 ms', 'p99 ms', 'p50 ratio vs native', 'p99 ratio'],
      (['persistent', 'oneshot'] as const).flatMap((mode) => {
        const a = stage[mode];
        return [
          [mode, 'native', a.native.n, ...pct(a.native), '1', '1'],
          [
            mode,
            'EBCC, until response',
            a.ebccResponse.n,
            ...pct(a.ebccResponse),
            `${f(a.ratioResponse.p50)}× (${f(a.ratioResponse.ci[0])}–${f(a.ratioResponse.ci[1])})`,
            `${f(a.ratioResponse.p99)}×`,
          ],
          [
            mode,
            'EBCC, until durable',
            a.ebcc.n,
            ...pct(a.ebcc),
            `**${f(a.ratioDurable.p50)}×** (${f(a.ratioDurable.ci[0])}–${f(a.ratioDurable.ci[1])})`,
            `${f(a.ratioDurable.p99)}×`,
          ],
        ];
      }),
    ),
    '',
    `Rounds: ${raw.stage.rounds.persistent} persistent, ${raw.stage.rounds.oneshot} oneshot (after 50 and 2 warm-up rounds). The work itself took p50 ${ms(sp.work.native.p50)} ms (native) and ${ms(sp.work.ebcc.p50)} ms (EBCC) inside the persistent stage, ${ms(so.work.ebcc.p50)} ms in a fresh oneshot process. Durability check: ${d.found} stage executions in the database for ${d.expected} requests through EBCC.`,
    '',
    '**Drift**: the p50 of each quarter of the run, in measurement order (other load on the machine shows here; interleaving spreads it over both sides of each comparison):',
    '',
    table(
      ['series', '1st quarter', '2nd', '3rd', '4th'],
      [
        ['persistent, native', ...quarters(raw.stage.persistent.native.map((x) => x.ms))],
        ['persistent, EBCC until durable', ...quarters(raw.stage.persistent.ebcc.map((x) => x.ms))],
      ],
    ),
    '',
    '**Per-phase breakdown** (`StageOutcome.timings`, plus persist = from `invoke()` returning until `durable` resolves):',
    '',
    table(
      ['phase', 'what it covers', 'persistent p50', 'p90', 'p99', 'oneshot p50', 'p90', 'p99'],
      STAGE_PHASES.map((ph) => [ph, PHASE_TEXT[ph], ...pct(sp.phases[ph]), ...pct(so.phases[ph])]),
    ),
    '',
    '![per-phase breakdown](bench/stage-phases.svg)',
    '',
    '![latency CDF, persistent](bench/stage-cdf.svg)',
    '',
    '![latency CDF, oneshot](bench/stage-oneshot-cdf.svg)',
  );
  const overheadDurable = sp.ebcc.p50 - sp.native.p50;
  const overheadResponse = sp.ebccResponse.p50 - sp.native.p50;
  const executeOver = sp.phases.execute.p50 - sp.native.p50;
  const signedAll = d.withEvidence === d.found;
  const oneshotOver = so.ebcc.p50 - so.native.p50;
  p(
    '**Where the time goes.**',
    '',
    `- Until durable, EBCC adds ${ms(overheadDurable)} ms at p50 to a ${ms(sp.native.p50)} ms native round trip. \`persist\` is ${ms(sp.phases.persist.p50)} ms of it (p50): one group-commit transaction (the execution row with its artifacts inline${d.withEvidence ? ' and its signed evidence' : ''}, the enclave's \`last_seq\`) committed with an fsync (synchronous=${raw.stage.database.synchronous}). With one request in flight there is nothing to batch: group commit amortises the fsync over concurrent requests, not sequential ones.`,
    `- Until the response, EBCC adds ${ms(overheadResponse)} ms at p50 (${f(sp.ratioResponse.p50)}×). \`execute\`, the adapter's run, is ${ms(sp.phases.execute.p50)} ms p50, ${signed(executeOver)} ms against the native round trip of the same stage. ${
      signedAll
        ? `Every execution through EBCC was signed inside the enclave (${d.withEvidence} of ${d.found} rows carry evidence): the sim adapter's run includes EBCC's own code inside the enclave, which hashes what the stage received and produced and signs it, work the native path does not do.`
        : d.withEvidence
          ? `${d.withEvidence} of ${d.found} executions carry signed evidence.`
          : "No execution carries signed evidence in this run, so this is the adapter's own per-request work (framing, timers, the log)."
    } Validation is ${ms(sp.phases.validate.p50)} ms; the remaining ${ms(Math.max(0, overheadResponse - executeOver - sp.phases.validate.p50))} ms or so is the dispatcher's own work around the run before \`invoke()\` returns (hashing the artifacts, preparing their writes).`,
    `- Oneshot stages are dominated by starting a sandbox and processes per request (${ms(so.native.p50)} ms native p50; compare the floors in benchmark 3). EBCC adds ${ms(oneshotOver)} ms at p50 (${f(so.ratioDurable.p50)}×): \`allocate\` (a new EID, measuring the image, creating the enclave) is ${ms(so.phases.allocate.p50)} ms, \`execute\` ${ms(so.phases.execute.p50)} ms and \`persist\` ${ms(so.phases.persist.p50)} ms; how a backend splits its start between \`create\` and \`run\` is its own affair, so only the total compares with native. With ${raw.stage.rounds.oneshot} rounds the interval of this ratio is wide.`,
  );

  // ---- 2 ----
  const prof = raw.http.profile;
  p(
    '## 2. Warm HTTP invocation: EBCC gateway vs plain Hono vs node:http',
    '',
    `Functions: [bench/functions/http-nostage](../bench/functions/http-nostage) (the anchor parses the JSON body and answers JSON; the manifest must declare a stage, so it declares a oneshot one it never calls) and [bench/functions/http-stage](../bench/functions/http-stage) (the anchor passes the body to one trivial persistent stage and answers with its reply). Both are public; \`ebcc-stage-auth\` is the stage function with \`public: false\`, called with an \`invoke\`-scope token. The baselines ([bench/servers/plain.ts](../bench/servers/plain.ts)) do the same JSON work in-process (parse; for \`stage\` also the serialise/parse of the stage hop) on a plain Hono app on @hono/node-server and on plain \`node:http\`. Each server runs in its own process; the client sends sequential POSTs over one keep-alive connection per target (each target opened exactly one connection). The gateway runs as \`ebcc serve\` does, with its default \`info\` request log written to a file; every EBCC answer is durable (invocation record and stage artifacts committed) before it is sent.`,
    '',
    table(
      ['target', 'n', 'p50 ms', 'p90 ms', 'p99 ms', 'p50 vs plain Hono (95% CI)', 'p99 vs plain Hono'],
      HTTP_TARGETS.map((t) => {
        const s = http.targets[t];
        const hono = http.targets[t.endsWith('nostage') ? 'hono-nostage' : 'hono-stage'];
        const c =
          t === 'ebcc-nostage'
            ? http.overHono.nostage
            : t === 'ebcc-stage'
              ? http.overHono.stage
              : t === 'ebcc-stage-auth'
                ? http.overHono['stage-auth']
                : undefined;
        return [
          `\`${t}\``,
          s.n,
          ...pct(s),
          c
            ? `**${signed(c.p50)} ms** (${signed(c.ci[0])}…${signed(c.ci[1])})`
            : `${signed(s.p50 - hono.p50)} ms`,
          `${signed(s.p99 - hono.p99)} ms`,
        ];
      }),
    ),
    '',
    `Rounds: ${raw.http.rounds} measured after ${raw.http.warmupRounds} warm-up rounds (the first of which cold-starts the instances). Durability check: ${raw.http.durability.map((x) => `${x.fn} ${x.recorded} invocation records and ${x.executions} stage executions (${x.signed} with signed evidence) for ${x.requests} requests`).join('; ')}.`,
    '',
    '**Drift**: the p50 of each quarter of the run, in measurement order:',
    '',
    table(
      ['target', '1st quarter', '2nd', '3rd', '4th'],
      (['ebcc-nostage', 'ebcc-stage', 'hono-nostage', 'hono-stage'] as const).map((t) => [
        `\`${t}\``,
        ...quarters(raw.http.samples[t]),
      ]),
    ),
    '',
    `**Where a warm request's time goes.** The same two functions on a second gateway started with \`BENCH_TRACE=1\`, whose wrappers timestamp every request (the server's \`request\` event, the pool, the anchor call, the durable invocation record, \`res.end()\`); ${raw.http.attribution.rounds} interleaved rounds after 30 warm-up rounds. The phases add up to the client's latency per request; the traced totals (p50 ${ms(http.attribution['ebcc-nostage'].total.p50)} and ${ms(http.attribution['ebcc-stage'].total.p50)} ms) compare with the uninstrumented gateway's ${ms(http.targets['ebcc-nostage'].p50)} and ${ms(http.targets['ebcc-stage'].p50)} ms above.`,
    '',
    table(
      ['phase', 'what', 'no stage p50 (p90)', 'one stage p50 (p90)'],
      WARM_PHASES.map((ph) => {
        const a = http.attribution['ebcc-nostage'][ph];
        const b = http.attribution['ebcc-stage'][ph];
        return [ph, WARM_PHASE_TEXT[ph], `${ms(a.p50)} (${ms(a.p90)})`, `${ms(b.p50)} (${ms(b.p90)})`];
      }),
    ),
    '',
    '![HTTP breakdown](bench/http-breakdown.svg)',
    '',
    '![HTTP latency CDF](bench/http-cdf.svg)',
    '',
    "**The measured gateway's own timings** (from the invocation records of the measured requests; *rest* = client latency − acquire − anchor, per request):",
    '',
    table(
      ['target', 'pool acquire p50', 'anchor round trip p50 (p99)', 'rest p50 (p99)'],
      EBCC_TARGETS.map((t) => {
        const i = http.internals[t];
        return [
          `\`${t}\``,
          ms(i.acquire.p50),
          `${ms(i.anchor.p50)} (${ms(i.anchor.p99)})`,
          `${ms(i.rest.p50)} (${ms(i.rest.p99)})`,
        ];
      }),
    ),
  );
  const comp = http.components;
  const c50 = (name: string) => {
    const c = comp[name];
    if (!c) throw new Error(`no gateway component "${name}" was measured`);
    return c.p50;
  };
  p(
    "**The gateway's per-request pieces**, timed one at a time in the gateway process on its own database file after the measurements (interleaved among themselves, 20 warm-up rounds):",
    '',
    table(
      ['piece', 'what', 'n', 'p50 ms', 'p90 ms', 'p99 ms'],
      Object.entries(comp).map(([name, c]) => [`\`${name}\``, COMPONENT_TEXT[name] ?? '', c.n, ...pct(c)]),
    ),
  );
  if (prof) {
    p(
      `**Profile of the gateway** (inspector sampling every 100 µs during ${prof.requests} further warm requests, ${prof.requests / 3} per EBCC target, after the measurements): its main thread was busy ${f(prof.busyMs, 0)} ms of ${f(prof.wallMs, 0)} ms, **${f(prof.busyMs / prof.requests, 2)} ms per request**. The profiler samples wall time, so time blocked in a synchronous call counts as busy in it: the libSQL driver runs SQLite, commits and their fsync included, synchronously inside \`Rows::js_next\`; socket writes (\`writeBuffer\`, \`writev\`: frames to the anchor and the stage, the HTTP response) include the moments the ${run.machine.nproc}-CPU machine spends running the process they woke. Self time by package or area:`,
      '',
      table(
        ['where', 'self ms', 'share of busy'],
        prof.groups.slice(0, 12).map((g) => [`\`${g.group}\``, f(g.ms, 1), `${f(g.share * 100, 1)}%`]),
      ),
    );
  }
  const at = http.attribution;
  const stageSigned = raw.http.durability.find((x) => x.fn === 'bench-stage')?.signed ?? 0;
  const commitsNo = prof?.commitsPerRequest['ebcc-nostage'];
  const commitsStage = prof?.commitsPerRequest['ebcc-stage'];
  const lookups = c50('findFunction') + c50('versionById') + c50('parseManifest');
  const hono = http.targets['hono-nostage'].p50;
  p(
    '**Where the time goes.**',
    '',
    `- Before the anchor is called: ${ms(at['ebcc-nostage'].before.p50)} ms p50. Two libSQL reads through drizzle and a zod parse of the stored manifest make ≈ ${ms(lookups)} ms of it at the pieces' p50s (\`findFunction\`, \`versionById\`, \`parseManifest\`); the rest is Hono's routing and middleware (request id, request log), copying the headers and reading the body through @hono/node-server's web-stream adapter. For a non-public function the token check adds \`authenticate\` (${ms(c50('authenticate'))} ms; \`ebcc-stage-auth\` vs \`ebcc-stage\`: ${signed(http.targets['ebcc-stage-auth'].p50 - http.targets['ebcc-stage'].p50)} ms at p50).`,
    `- The anchor: ${ms(at['ebcc-nostage'].anchor.p50)} ms p50 without a stage, ${ms(at['ebcc-stage'].anchor.p50)} ms with one. Without a stage that is a frame to the sandboxed anchor process and one back (over a socketpair, JSON header plus raw body), and the anchor building a WHATWG \`Request\`, reading it, and building and serialising a \`Response\`. With a stage, the stage request on top: back to the host, through the stage dispatcher and the adapter into the stage's enclave and back${stageSigned ? `, where EBCC's code inside the enclave signs every execution (${stageSigned} of ${raw.http.durability.find((x) => x.fn === 'bench-stage')?.executions ?? 0} stage executions of \`bench-stage\` carry evidence)` : ''}.`,
    `- The durable record: ${ms(at['ebcc-nostage'].record.p50)} ms p50 without a stage, ${ms(at['ebcc-stage'].record.p50)} ms with one, against ${ms(c50('commit'))} ms for one idle commit of an invocation record (the \`commit\` piece: a group-commit turn plus a transaction with its fsync).${commitsNo !== undefined && commitsStage !== undefined ? ` The gateway committed ${f(commitsNo)} transactions per request without a stage and ${f(commitsStage)} with one (counted in the profiling phase, one target at a time).${commitsNo > 1.05 ? " More than one without a stage: when the anchor's end-of-invocation message (with its console) arrives after its response, `lifecycle/invoke.ts` records the console by a later update, in a transaction of its own, which then runs (synchronously, see below) while the next request is being handled." : ''}${commitsStage - commitsNo > 0.5 ? ' With a stage, its artifacts are submitted while the anchor is still answering and mostly committed on their own, before the invocation record is submitted.' : ''}` : ''}`,
    `- Answering: ${ms(at['ebcc-nostage'].respond.p50)} ms p50 from durable to \`res.end()\` (the \`Response\`, the trace headers, the request log line, @hono/node-server writing it); outside the handler (client, kernel, HTTP parsing) ${ms(at['ebcc-nostage'].outside.p50)} ms. Plain Hono answers the whole request in ${ms(hono)} ms p50.`,
    `- The libSQL driver runs SQLite synchronously on the gateway's event loop, commits and their fsync included${prof ? `: in the profile, ${f((prof.groups.find((g) => g.group.includes('js_next'))?.share ?? 0) * 100, 0)}% of the gateway's busy time is inside \`Rows::js_next\`, where statements execute` : ''}. Sequential requests feel it only in their own latency, but under concurrency every commit stalls every other request for its duration.`,
    `- Plain Hono costs ${signed(http.honoOverNodeHttp.nostage.p50)} ms at p50 over bare \`node:http\` (no stage), so the framework is not where EBCC's time goes.`,
    ...(() => {
      const e = quarters(raw.http.samples['ebcc-nostage']).map(Number);
      const h = quarters(raw.http.samples['hono-nostage']).map(Number);
      const spread = Math.max(...e) / Math.min(...e);
      return spread > 1.25
        ? [
            `- Sensitivity to other load: over this run's quarters the EBCC p50 (no stage) moved between ${ms(Math.min(...e))} and ${ms(Math.max(...e))} ms while plain Hono moved between ${ms(Math.min(...h))} and ${ms(Math.max(...h))} ms. An EBCC request wakes four processes in turn (client, gateway, anchor, and for a stage the enclave's), so on ${run.machine.nproc} shared CPUs it suffers more from other work than a single-process server. The difference of the two p50s per quarter: ${e.map((v, i) => `${signed(v - h[i]!)}`).join(', ')} ms.`,
          ]
        : [];
    })(),
  );

  // ---- 3 ----
  p(
    '## 3. Cold start vs warm start',
    '',
    `Each round, for each function: delete its instance (\`DELETE /v1/instances/:cid?force=true\`; for \`new-version\`, deploy a new version instead, so the node's extraction cache is empty for it), wait ${raw.cold.settleMs} ms, then send a request (cold: the pool creates and starts an instance: anchor launch in parallel with the persistent stage's enclave creation, then the first invocation), then another (warm: the next request, on the instance the cold one made, so its first warm request, before the JIT has warmed up; steady-state warm latency is benchmark 2; both are checked via \`x-ebcc-start\` and \`x-ebcc-cid\`). The gateway of this benchmark wraps the lifecycle methods with timestamps (BENCH_TRACE=1); the phases below add up to the client's latency. The floors are process starts with nothing of EBCC around them, measured in the same rounds.`,
    '',
    table(
      ['variant', 'n', 'cold p50 ms', 'p90', 'p99', 'warm p50 ms', 'p90', 'p99', 'cold / warm (p50)'],
      COLD_VARIANTS.map((v) => {
        const c = cold.variants[v];
        return [`\`${v}\``, c.cold.n, ...pct(c.cold), ...pct(c.warm), `${f(c.ratio.p50, 0)}×`];
      }),
    ),
    '',
    '**Cold-start phases** (p50 of each, ms):',
    '',
    table(
      [
        'variant',
        ...COLD_PHASES.map((ph) => COLD_PHASE_LABELS[ph]),
        'anchor launch alone',
        'stage enclave creation (`adapter.create`)',
        'first stage request (`adapter.run`)',
        'longest gateway event-loop stall',
      ],
      COLD_VARIANTS.map((v) => {
        const c = cold.variants[v];
        return [
          `\`${v}\``,
          ...COLD_PHASES.map((ph) => ms(c.phases[ph].p50)),
          ms(c.anchorLaunch.p50),
          c.enclaveCreate ? ms(c.enclaveCreate.p50) : '–',
          c.firstStageRun ? ms(c.firstStageRun.p50) : '–',
          ms(c.loopMaxDelay.p50),
        ];
      }),
    ),
    '',
    '**Floors** (same rounds):',
    '',
    table(
      ['floor', 'n', 'p50 ms', 'p90', 'p99'],
      FLOORS.map((fl) => [FLOOR_LABELS[fl], cold.floors[fl].n, ...pct(cold.floors[fl])]),
    ),
    '',
    '![cold-start phases](bench/cold-phases.svg)',
    '',
    '![cold vs warm CDF](bench/cold-cdf.svg)',
  );
  const cs = cold.variants.stage;
  const cn = cold.variants.nostage;
  const fl = cold.floors;
  p(
    '**Where the time goes.**',
    '',
    `- Process starts set the floor on this machine: a sandbox that runs \`/bin/true\` costs ${ms(fl.sandbox.p50)} ms p50 (the bash wrapper, \`setpriv\`, \`bwrap\` with new namespaces and mounts, cgroups, tini), Node inside it ${ms(fl['sandbox-node'].p50)} ms, and Node that also loads its fetch classes ${ms(fl['sandbox-node-fetch'].p50)} ms (bare \`node -e 0\` outside any sandbox: ${ms(fl.node.p50)} ms).`,
    `- The anchor launch is on the critical path. Alone (\`nostage\`: nothing starts beside it) it takes ${ms(cn.anchorLaunch.p50)} ms p50, ${signed(cn.anchorLaunch.p50 - fl['sandbox-node-fetch'].p50)} ms against a sandboxed Node that loads the fetch classes: the harness (Node's permission model, its modules, the frame channel), the anchor module, and the ready handshake.`,
    `- With a persistent stage, its enclave is created while the anchor launches: \`adapter.create\` (until the enclave is ready to serve) took ${cs.enclaveCreate ? ms(cs.enclaveCreate.p50) : '–'} ms p50, and the anchor launch beside it ${ms(cs.anchorLaunch.p50)} ms (${signed(cs.anchorLaunch.p50 - cn.anchorLaunch.p50)} ms against the anchor alone: on ${run.machine.nproc} CPUs the starts compete). The launch phase, the later of the two, was ${ms(cs.phases.launch.p50)} ms; the first stage request then took ${cs.firstStageRun ? ms(cs.firstStageRun.p50) : '–'} ms.`,
    `- Starting a sandbox blocks the gateway. \`child_process.spawn\` forks the calling process synchronously: ${ms(fl['spawn-call'].p50)} ms p50 for \`/bin/true\` from the small harness process, more from a larger one (fork copies the page tables), and \`spawnSandboxed\` adds its cgroup set-up on the same thread. During a cold start the gateway's event loop stalled for up to ${ms(cs.loopMaxDelay.p50)} ms (p50 of each start's longest stall; ${ms(cn.loopMaxDelay.p50)} ms without a stage), so spawns run one after the other, and every request the gateway is serving meanwhile waits. Oneshot stages pay this on every request.`,
    `- Around the launch: ${ms(cs.phases.prepare.p50)} ms to look up and load the version and write the instance record, ${ms(cs.phases.startup.p50)} ms for the \`created\` and \`running\` records (each a durable commit), ${ms(cs.phases.invocation.p50)} ms for the first invocation (the next request, warm: ${ms(cs.warm.p50)} ms end to end), and ${ms(cs.phases.other.p50)} ms of HTTP, routing and the durable invocation record.`,
  );

  p('## Notes and suggestions', '', ...NOTES(analysis, raw));
  return out.join('\n');
}

const COMPONENT_TEXT: Record<string, string> = {
  findFunction: 'the function row by name (drizzle relational query)',
  versionById: 'the active version row, with its stored manifest',
  parseManifest: 'zod parse of the stored manifest (done on every invocation)',
  authenticate: 'token lookup and hash check (non-public functions only)',
  commit: 'one group-commit transaction inserting an invocation record (fsync)',
};

const PHASE_TEXT: Record<(typeof STAGE_PHASES)[number], string> = {
  validate: 'size check and JSON Schema validation',
  allocate: 'the enclave: persistent: look it up; oneshot: new EID, measure, create',
  dispatch: 'wait for the enclave’s turn (persistent enclaves serve one request at a time)',
  execute: 'adapter.run: write the frame, the stage works, read the frame',
  persist: 'from invoke() returning until `durable` resolves',
};

const prof0 = (raw: Required<Raw>) => {
  const c = raw.http.profile?.commitsPerRequest['ebcc-stage'];
  return c === undefined ? 'two' : f(c);
};

function NOTES(analysis: Analysis, raw: Required<Raw>): string[] {
  const t = Object.fromEntries(analysis.targets.map((x) => [x.id, x]));
  const http = analysis.http!;
  const sp = analysis.stage!.persistent;
  const cs = analysis.cold!.variants.stage;
  const lines: string[] = [];
  lines.push(
    `- **Stage overhead (${t['stage-durable']!.pass ? 'met' : 'missed'} until durable, ${t['stage-response']!.pass ? 'met' : 'missed'} until the response).** The durable commit per request is the price of "an answer is returned only once its artifacts are durable", at synchronous=${raw.stage.database.synchronous}: ${ms(sp.phases.persist.p50)} ms of the ${ms(sp.ebcc.p50 - sp.native.p50)} ms added at p50. Suggestions: (1) in the HTTP path, commit the stage execution together with the invocation record (one transaction, one fsync per invocation instead of two; see benchmark 2); (2) if losing the last commits on power loss (not on a process crash) is acceptable, \`synchronous=NORMAL\` in WAL mode drops the per-commit fsync; (3) \`execute\` is ${signed(sp.phases.execute.p50 - sp.native.p50)} ms against native at p50${raw.stage.durableRows.withEvidence ? ', which includes the per-execution evidence made inside the enclave (hashing what the stage saw and produced, and signing it); the native path makes none, so part of this gap is the feature, not overhead to remove' : ''}.`,
    `- **HTTP overhead (${t['http-nostage']!.pass ? 'met' : 'missed'} without a stage, ${t['http-stage']!.pass ? 'met' : 'missed'} with one).** EBCC is ${signed(http.overHono.nostage.p50)} ms and ${signed(http.overHono.stage.p50)} ms over plain Hono at p50. Suggestions, in order of expected effect: (1) with a stage, one commit per invocation instead of ${prof0(raw)} (above); (2) cache the active version and its parsed manifest per function name for the request path (invalidated on deploy, rollback and delete), as the custom-route table already is, instead of two reads and a zod parse per request; (3) cache authenticated tokens for a few seconds (revocation then takes that long to apply); (4) the SQLite fsync runs synchronously on the gateway's event loop inside the libSQL driver, so under concurrency every commit stalls all other requests for its duration; a worker thread (or the remote libSQL server) for writes would keep the loop free.`,
    `- **Cold start (${t['cold-stage']!.pass ? 'met' : 'missed'}).** ${ms(cs.cold.p50)} ms p50 against 150 ms, where a sandboxed \`node -e 0\` alone takes ${ms(analysis.cold!.floors['sandbox-node'].p50)} ms on this machine: ${analysis.cold!.floors['sandbox-node'].p50 >= 150 ? 'with one sandboxed Node process per anchor the target is below the floor' : `with one sandboxed Node process per anchor that leaves ${ms(150 - analysis.cold!.floors['sandbox-node'].p50)} ms for everything else`}. What would meet it: (1) pre-warming: the manifest's \`pool.minWarm\` and \`pool.prewarm\` are not acted on by the node-local pool yet; creating and starting instances before requests arrive takes the launch off the request path (the harness now loads and exercises Node's fetch classes before \`ready\`, which moves that cost from an instance's first request into its launch: no gain for a request that waits for the launch, but a pre-started instance's first request no longer pays it); (2) a fork server or zygote that keeps a sandboxed, initialised Node ready and hands it the bundle; (3) a V8 startup snapshot of the harness (\`node --snapshot-blob\`), and dropping per-spawn work in the sandbox launcher (each exec of bash, \`setpriv\`, \`bwrap\`, tini costs several ms on this VM); (4) spawn sandboxes from a small helper process (a fork server that receives the launch spec and passes back the pipes), so the gateway never forks itself and its event loop does not stall for ${ms(cs.loopMaxDelay.p50)} ms per cold start; (5) an isolate-based anchor executor (the executor interface allows it) for anchors that need no process of their own.`,
    '- **What these numbers are not.** The sim backend is a bubblewrap sandbox, not a TEE: hardware backends add enclave entry/exit and attestation costs that are not measured here. All requests are sequential (latency, not throughput). The host is a 2-vCPU VM whose process spawns are slow (several ms per `exec`), and other work may have shared it (see the load average above).',
  );
  return lines;
}
