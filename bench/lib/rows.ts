/**
 * The rows each existing benchmark contributes to the suite's CSV, from its raw samples (distributions)
 * or, where a benchmark keeps only summaries, from those. Ratios and differences are of the same run's
 * interleaved samples.
 */
import type { BatchBenchResult } from '../batch-bench.ts';
import { COLD_VARIANTS, FLOORS, type ColdBenchResult } from '../cold-bench.ts';
import type { EvidenceBenchResult } from '../evidence-bench.ts';
import { HTTP_TARGETS, type HttpBenchResult } from '../http-bench.ts';
import type { OpteeBenchResult } from '../optee-bench.ts';
import type { PoolBenchResult } from '../pool-bench.ts';
import type { SealBenchResult } from '../seal-bench.ts';
import type { StageBenchResult, StageSample } from '../stage-bench.ts';
import { COLD_PHASES, type Analysis } from './analysis.ts';
import type { BenchRecorder } from './results.ts';
import { quantile, type Summary } from './stats.ts';

function pick(samples: readonly StageSample[], key: keyof StageSample, what: string): number[] {
  return samples.map((s) => {
    const v = s[key];
    if (typeof v !== 'number') throw new Error(`stage ${what}: a sample lacks ${String(key)}`);
    return v;
  });
}

/**
 * The per-phase timings of the dispatcher, in request order; `execute` less the evidence the enclave
 * reports is the frame round trip plus the stage's work, and `persist` runs after the response.
 */
const STAGE_PHASES: [string, (s: StageSample) => number | undefined][] = [
  ['validate', (s) => s.validate],
  ['EID allocation', (s) => s.allocate],
  ['dispatch', (s) => s.dispatch],
  [
    'execute',
    (s) => (s.execute === undefined || s.evidence === undefined ? undefined : s.execute - s.evidence),
  ],
  ['evidence (in enclave)', (s) => s.evidence],
  ['persist', (s) => s.persistMs],
];

export function stageRows(rec: BenchRecorder, r: StageBenchResult): void {
  for (const mode of ['persistent', 'oneshot'] as const) {
    const { ebcc, native } = r[mode];
    const durable = pick(ebcc, 'ms', mode);
    const response = pick(ebcc, 'responseMs', mode);
    const nat = pick(native, 'ms', mode);
    rec.distribution(`latency ${mode}`, 'ebcc (durable)', durable, 'ms');
    rec.distribution(`latency ${mode}`, 'ebcc (response)', response, 'ms');
    rec.distribution(`latency ${mode}`, 'native', nat, 'ms');
    for (const [stat, q] of [
      ['p50 ratio', 0.5],
      ['p99 ratio', 0.99],
      ['p99.9 ratio', 0.999],
    ] as const) {
      const n = Math.min(durable.length, nat.length);
      rec.add({
        quantity: 'ebcc/native',
        variant: mode,
        stat,
        value: quantile(durable, q) / quantile(nat, q),
        unit: 'x',
        n,
      });
      rec.add({
        quantity: 'ebcc/native until response',
        variant: mode,
        stat,
        value: quantile(response, q) / quantile(nat, q),
        unit: 'x',
        n,
      });
    }
    for (const [label, of] of STAGE_PHASES) {
      const samples = ebcc.map((s) => {
        const v = of(s);
        if (v === undefined) throw new Error(`stage ${mode}: a sample lacks its ${label} time`);
        return v;
      });
      for (const [stat, q] of [
        ['p50', 0.5],
        ['p99', 0.99],
        ['p99.9', 0.999],
      ] as const)
        rec.add({
          quantity: `phase ${mode}`,
          variant: label,
          stat,
          value: quantile(samples, q),
          unit: 'ms',
          n: samples.length,
        });
    }
    rec.distribution(`stage work ${mode}`, 'ebcc', pick(ebcc, 'workMs', mode), 'ms');
    rec.distribution(`stage work ${mode}`, 'native', pick(native, 'workMs', mode), 'ms');
  }
  rec.add({
    quantity: 'durable stage executions',
    variant: 'rows found / expected',
    stat: 'ratio',
    value: r.durableRows.found / r.durableRows.expected,
    unit: 'x',
    n: r.durableRows.expected,
  });
}

export function httpRows(rec: BenchRecorder, r: HttpBenchResult, a: NonNullable<Analysis['http']>): void {
  for (const t of HTTP_TARGETS) rec.distribution('latency', t, r.samples[t], 'ms');
  const n = Math.min(...HTTP_TARGETS.map((t) => r.samples[t].length));
  for (const [kind, c] of Object.entries(a.overHono)) {
    rec.add({
      quantity: 'ebcc over hono',
      variant: kind,
      stat: 'p50 difference',
      value: c.p50,
      unit: 'ms',
      n,
    });
    rec.add({
      quantity: 'ebcc over hono',
      variant: kind,
      stat: 'p99 difference',
      value: c.p99,
      unit: 'ms',
      n,
    });
    rec.add({ quantity: 'ebcc over hono', variant: kind, stat: 'p50 CI low', value: c.ci[0], unit: 'ms', n });
    rec.add({
      quantity: 'ebcc over hono',
      variant: kind,
      stat: 'p50 CI high',
      value: c.ci[1],
      unit: 'ms',
      n,
    });
  }
  for (const [kind, c] of Object.entries(a.overNodeHttp)) {
    rec.add({
      quantity: 'ebcc over node:http',
      variant: kind,
      stat: 'p50 difference',
      value: c.p50,
      unit: 'ms',
      n,
    });
    rec.add({
      quantity: 'ebcc over node:http',
      variant: kind,
      stat: 'p99 difference',
      value: c.p99,
      unit: 'ms',
      n,
    });
  }
  for (const [kind, c] of Object.entries(a.honoOverNodeHttp))
    rec.add({
      quantity: 'hono over node:http',
      variant: kind,
      stat: 'p50 difference',
      value: c.p50,
      unit: 'ms',
      n,
    });
  for (const [target, phases] of Object.entries(a.attribution))
    for (const [phase, s] of Object.entries(phases))
      summaryRows(rec, `warm phase ${target}`, phase, s, 'ms', ['p50', 'p99']);
}

/** Rows from a summary a benchmark kept instead of its samples (no p99.9 there). */
function summaryRows(
  rec: BenchRecorder,
  quantity: string,
  variant: string,
  s: Summary,
  unit: string,
  stats: readonly ('min' | 'p50' | 'p90' | 'p99' | 'max')[] = ['min', 'p50', 'p90', 'p99', 'max'],
): void {
  for (const stat of stats) rec.add({ quantity, variant, stat, value: s[stat], unit, n: s.n });
}

export function coldRows(rec: BenchRecorder, r: ColdBenchResult): void {
  for (const v of COLD_VARIANTS) {
    const samples = r.samples[v];
    const cold = samples.map((x) => x.coldMs);
    const warm = samples.map((x) => x.warmMs);
    rec.distribution('cold start', v, cold, 'ms');
    rec.distribution('warm start', v, warm, 'ms');
    rec.add({
      quantity: 'warm/cold',
      variant: v,
      stat: 'p50 ratio',
      value: quantile(warm, 0.5) / quantile(cold, 0.5),
      unit: 'x',
      n: samples.length,
    });
    for (const p of COLD_PHASES)
      rec.add({
        quantity: `cold phase ${p}`,
        variant: v,
        stat: 'p50',
        value: quantile(
          samples.map((x) => Math.max(0, x.phases[p])),
          0.5,
        ),
        unit: 'ms',
        n: samples.length,
      });
    // The cold-start breakdown of issue 8: what starts, in the order it starts.
    rec.distribution(
      'cold: anchor load (sandbox + node + harness + module)',
      v,
      samples.map((x) => x.anchorLaunchMs),
      'ms',
    );
    const enclave = samples.map((x) => x.enclaveCreateMs);
    if (enclave.some((x) => x > 0)) rec.distribution('cold: stage enclave creation', v, enclave, 'ms');
    const first = samples.map((x) => x.firstStageRunMs).filter((x): x is number => x !== undefined);
    if (first.length) rec.distribution('cold: first stage request (incl. first evidence)', v, first, 'ms');
    rec.distribution(
      'cold: longest event-loop stall',
      v,
      samples.map((x) => x.loopMaxDelayMs),
      'ms',
    );
  }
  for (const f of FLOORS) rec.distribution('cold: process-start floor', f, r.floors[f], 'ms');
}

export function poolRows(rec: BenchRecorder, r: PoolBenchResult): void {
  summaryRows(rec, 'latency', 'warm (steady load)', r.warmMs, 'ms');
  summaryRows(rec, 'latency', 'cold (instance deleted)', r.coldMs, 'ms');
  rec.add({
    quantity: 'warm-hit ratio',
    variant: '',
    stat: 'ratio',
    value: r.warmRatio,
    unit: 'x',
    n: r.requests,
  });
  rec.add({
    quantity: 'warm/cold',
    variant: '',
    stat: 'p50 ratio',
    value: r.warmMs.p50 / r.coldMs.p50,
    unit: 'x',
    n: r.coldMs.n,
  });
}

export function batchRows(rec: BenchRecorder, r: BatchBenchResult): void {
  const best = r.levels.reduce((a, l) => (l.jobsPerS > a.jobsPerS ? l : a));
  rec.add({
    quantity: 'jobs/s',
    variant: 'all levels',
    stat: 'best',
    value: best.jobsPerS,
    unit: '1/s',
    n: best.items,
  });
  for (const l of r.levels) {
    const variant = `concurrency ${l.concurrency}`;
    rec.add({ quantity: 'jobs/s', variant, stat: 'value', value: l.jobsPerS, unit: '1/s', n: l.items });
    rec.add({
      quantity: 'CPU per job: gateway+workers',
      variant,
      stat: 'value',
      value: l.cpuMsPerJob.gateway,
      unit: 'ms',
      n: l.items,
    });
    rec.add({
      quantity: 'CPU per job: sandboxes',
      variant,
      stat: 'value',
      value: l.cpuMsPerJob.sandboxes,
      unit: 'ms',
      n: l.items,
    });
    if (l.cpuMsPerJob.redis !== null)
      rec.add({
        quantity: 'CPU per job: redis',
        variant,
        stat: 'value',
        value: l.cpuMsPerJob.redis,
        unit: 'ms',
        n: l.items,
      });
  }
}

export function sealRows(rec: BenchRecorder, r: SealBenchResult): void {
  const n = r.rounds;
  for (const [variant, v] of [
    ['enclave side', r.enclaveUs],
    ['client side', r.clientUs],
    ['both ends', r.totalUs],
  ] as const) {
    rec.add({ quantity: 'HPKE per invocation', variant, stat: 'median', value: v.median, unit: 'µs', n });
    rec.add({ quantity: 'HPKE per invocation', variant, stat: 'min', value: v.min, unit: 'µs', n });
  }
  rec.add({
    quantity: 'HPKE per invocation',
    variant: '@hpke/core reference',
    stat: 'median',
    value: r.hpkeCoreUs.median,
    unit: 'µs',
    n,
  });
}

export function evidenceRows(rec: BenchRecorder, r: EvidenceBenchResult, rounds: number): void {
  rec.add({
    quantity: 'signExecution',
    variant: 'ebcc',
    stat: 'median',
    value: r.signExecutionUs.median,
    unit: 'µs',
    n: rounds,
  });
  rec.add({
    quantity: 'signExecution',
    variant: 'ebcc',
    stat: 'min',
    value: r.signExecutionUs.min,
    unit: 'µs',
    n: rounds,
  });
  rec.add({
    quantity: 'signExecution',
    variant: 'floor: SHA-256 + Ed25519',
    stat: 'median',
    value: r.floorSignUs.median,
    unit: 'µs',
    n: rounds,
  });
  rec.add({
    quantity: 'verifyBundle',
    variant: 'ebcc',
    stat: 'median',
    value: r.verifyPerSecond.median,
    unit: '1/s',
    n: rounds,
  });
  rec.add({
    quantity: 'verifyBundle',
    variant: 'floor: bare Ed25519 verify',
    stat: 'median',
    value: r.floorVerifyPerSecond.median,
    unit: '1/s',
    n: rounds,
  });
  rec.add({
    quantity: 'evidence size',
    variant: 'one execution',
    stat: 'value',
    value: r.evidenceBytes,
    unit: 'B',
    n: 1,
  });
}

export function opteeRows(rec: BenchRecorder, r: OpteeBenchResult): void {
  summaryRows(rec, 'stage latency (emulated board)', 'raw agent', r.rawMs, 'ms');
  summaryRows(rec, 'stage latency (emulated board)', 'through EBCC', r.ebccMs, 'ms');
  rec.add({ quantity: 'ebcc/raw', variant: '', stat: 'p50 ratio', value: r.ratio, unit: 'x', n: r.rounds });
}
