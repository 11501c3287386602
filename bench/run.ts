/**
 * `npm run bench`: the benchmark suite of issue 8. Every benchmark adds rows to one CSV (one row per
 * measured quantity, with its unit, the run id and the load average around it); docs/benchmarks.md and
 * its SVG plots are then regenerated from that CSV and the prose of bench/benchmarks.template.md.
 *
 *   npm run bench                          every benchmark; replaces docs/bench/results.csv, the plots
 *                                          and docs/benchmarks.md
 *   npm run bench -- --only=floor,stage    those benchmarks; their rows replace theirs in the CSV, the
 *                                          other benchmarks' rows (and runs) are kept, the docs regenerated
 *   npm run bench -- --skip=optee          every benchmark but those
 *   npm run bench -- --quick               fewer rounds; writes bench/out/ only (CSV, markdown, plots)
 *   npm run bench -- --report-only         regenerates the docs from docs/bench/results.csv
 *   npm run bench -- --density-1000        density also at 1,000 warm composites
 *
 * Any measurement that cannot be taken fails the run: non-zero exit, the reason, and no docs written.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { redisAnswers, startPrivateRedis, type PrivateRedis } from '../scripts/lib/redis-server.ts';
import { runBatchBench } from './batch-bench.ts';
import { runColdBench } from './cold-bench.ts';
import { runDensityBench } from './density-bench.ts';
import { printEvidence, runEvidenceBench } from './evidence-bench.ts';
import { runFloorBench } from './floor-bench.ts';
import { runHttpBench } from './http-bench.ts';
import { analyze } from './lib/analysis.ts';
import { generateDocs } from './lib/generate.ts';
import { machineInfo } from './lib/machine.ts';
import { BenchRecorder, mergeRows, readCsv, writeResultsCsv, type Row } from './lib/results.ts';
import {
  batchRows,
  coldRows,
  evidenceRows,
  httpRows,
  opteeRows,
  poolRows,
  sealRows,
  stageRows,
} from './lib/rows.ts';
import { printOptee, runOpteeBench } from './optee-bench.ts';
import { printPool, runPoolBench } from './pool-bench.ts';
import { printSeal, runSealBench } from './seal-bench.ts';
import { runStageBench } from './stage-bench.ts';
import { runThroughputBench } from './throughput-bench.ts';

const ROOT = join(import.meta.dirname, '..');
const OUT = join(import.meta.dirname, 'out');
const DOCS = join(ROOT, 'docs', 'benchmarks.md');
const DOCS_CSV = join(ROOT, 'docs', 'bench', 'results.csv');
const TEMPLATE = join(import.meta.dirname, 'benchmarks.template.md');

/** In the order a full run takes them: in-process first, then the ones that start gateways. */
export const BENCHES = [
  'floor',
  'evidence',
  'seal',
  'stage',
  'http',
  'cold',
  'throughput',
  'density',
  'pool',
  'batch',
  'optee',
] as const;
type Bench = (typeof BENCHES)[number];

interface Args {
  quick: boolean;
  only: Bench[];
  reportOnly: boolean;
  density1000: boolean;
  executor: string;
}

function parseArgs(argv: string[]): Args {
  const args: Args = {
    quick: false,
    only: [...BENCHES],
    reportOnly: false,
    density1000: false,
    executor: 'process',
  };
  const names = (arg: string, flag: string) => {
    const list = arg.slice(flag.length).split(',');
    for (const n of list)
      if (!BENCHES.includes(n as Bench))
        throw new Error(`unknown benchmark "${n}" (have ${BENCHES.join(', ')})`);
    return list as Bench[];
  };
  for (const arg of argv) {
    if (arg === '--quick') args.quick = true;
    else if (arg === '--report-only') args.reportOnly = true;
    else if (arg === '--density-1000') args.density1000 = true;
    else if (arg.startsWith('--executor=')) args.executor = arg.slice('--executor='.length);
    else if (arg.startsWith('--only=')) {
      const only = names(arg, '--only=');
      args.only = BENCHES.filter((b) => only.includes(b));
    } else if (arg.startsWith('--skip=')) {
      const skip = names(arg, '--skip=');
      args.only = args.only.filter((b) => !skip.includes(b));
    } else if (arg === '--help' || arg === '-h') {
      console.log(
        `usage: npm run bench [-- --quick] [-- --only=${BENCHES.join(',')}] [-- --skip=...] [-- --density-1000] [-- --executor=process] [-- --report-only]`,
      );
      process.exit(0);
    } else throw new Error(`unknown argument "${arg}" (try --help)`);
  }
  return args;
}

const PLAN = {
  full: {
    floorRounds: 200,
    evidenceRounds: 9,
    sealRounds: 9,
    stage: { persistentRounds: 1000, oneshotRounds: 24 },
    http: {
      rounds: 600,
      warmupRounds: 30,
      profileRequests: 200,
      componentRounds: 200,
      attributionRounds: 300,
    },
    cold: { rounds: 16, settleMs: 50 },
    throughput: { clients: [1, 4, 16, 64, 256], perClient: { persistent: 40, oneshot: 3 } },
    density: { counts: [10, 100], perClient: 40 },
    pool: { clients: 2, requestsPerClient: 1000, coldRounds: 12 },
    batch: { concurrency: [1, 4, 16, 64], items: 1_000, profile: true },
    opteeRounds: 10,
  },
  quick: {
    floorRounds: 20,
    evidenceRounds: 3,
    sealRounds: 3,
    stage: { persistentRounds: 150, oneshotRounds: 5 },
    http: { rounds: 100, warmupRounds: 10, profileRequests: 50, componentRounds: 50, attributionRounds: 50 },
    cold: { rounds: 3, settleMs: 50 },
    throughput: { clients: [1, 16], perClient: { persistent: 10, oneshot: 2 } },
    density: { counts: [10], perClient: 10 },
    pool: { clients: 2, requestsPerClient: 100, coldRounds: 3 },
    batch: { concurrency: [8], items: 300, profile: false },
    opteeRounds: 3,
  },
};

/** The statistics printed on the console after each benchmark (all of them are in the CSV). */
const HEADLINE = /^(p50|p50 ratio|p50 difference|median|best|value|ratio|largest|c=\d+|\d+ warm)$/;

async function writeDocs(rows: readonly Row[], markdownPath: string, plotDir: string): Promise<string[]> {
  const { plots } = await generateDocs({
    rows,
    template: await readFile(TEMPLATE, 'utf8'),
    markdownPath,
    plotDir,
  });
  return [markdownPath, ...plots];
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const log = (line: string) => console.log(line);
  if (args.reportOnly) {
    const written = await writeDocs(readCsv(DOCS_CSV), DOCS, join(ROOT, 'docs', 'bench'));
    log(`regenerated from ${DOCS_CSV}: ${written.join(', ')}`);
    return;
  }
  if (process.getuid?.() !== 0)
    throw new Error(
      'the benchmarks run stages and anchors in the sandbox, which needs root (see docs/security.md)',
    );
  const plan = args.quick ? PLAN.quick : PLAN.full;
  await mkdir(OUT, { recursive: true });
  const machine = machineInfo();
  const runId = `${machine.date.slice(0, 19).replace(/[-:]/g, '').replace('T', '-')}-${machine.commit}${machine.dirtyFiles ? '+' : ''}${args.quick ? '-quick' : ''}`;
  const meta = {
    commit: machine.commit + (machine.dirtyFiles ? `+${machine.dirtyFiles} dirty` : ''),
    machine: `${machine.nproc}× ${machine.cpuModel}`,
  };
  const started = performance.now();
  log(
    `EBCC benchmark suite, run ${runId} (${args.quick ? 'quick' : 'full'}: ${args.only.join(', ')}) on ${meta.machine}, node ${machine.node}, load average ${machine.loadAverageAtStart.join(' ')}`,
  );
  if (machine.loadAverageAtStart[0]! > machine.nproc * 0.5)
    log(
      `warning: the machine is busy (1-minute load ${machine.loadAverageAtStart[0]}); the numbers will be noisy`,
    );

  let redis: PrivateRedis | undefined;
  let redisUrl = process.env.REDIS_URL ?? '';
  const needsRedis = args.only.some((b) =>
    ['http', 'cold', 'throughput', 'density', 'pool', 'batch', 'optee'].includes(b),
  );
  if (needsRedis && (!redisUrl || !(await redisAnswers(redisUrl)))) {
    redis = await startPrivateRedis();
    redisUrl = redis.url;
  }
  const rows: Row[] = [];
  const run = async (bench: Bench, what: string, measure: (rec: BenchRecorder) => Promise<void>) => {
    if (!args.only.includes(bench)) return;
    log(`\n[${bench}] ${what}`);
    const rec = new BenchRecorder(bench);
    const t0 = performance.now();
    await measure(rec);
    const mine = rec.close(runId, meta);
    rows.push(...mine);
    for (const r of mine.filter((r) => HEADLINE.test(r.stat)))
      log(`    ${r.quantity}${r.variant ? ` [${r.variant}]` : ''} ${r.stat}: ${r.value} ${r.unit}`);
    log(
      `  (${bench}: ${mine.length} rows, ${((performance.now() - t0) / 1000).toFixed(0)} s, load ${mine[0]!.load_start} → ${mine[0]!.load_end})`,
    );
  };
  try {
    await run('floor', 'floor: sandbox spawn, fsync, signature, loopback HTTP', (rec) =>
      runFloorBench({ rounds: plan.floorRounds, scratchParent: OUT, rec, log }),
    );
    await run('evidence', 'evidence: creation and offline verification', async (rec) => {
      const r = await runEvidenceBench(plan.evidenceRounds);
      printEvidence(r, log);
      evidenceRows(rec, r, plan.evidenceRounds);
    });
    await run('seal', 'sealing: HPKE requests and responses', async (rec) => {
      const r = await runSealBench(plan.sealRounds);
      printSeal(r, log);
      sealRows(rec, r);
    });
    await run('stage', 'stage request: EBCC vs native, per phase', async (rec) => {
      stageRows(rec, await runStageBench({ ...plan.stage, log }));
    });
    await run('http', 'warm HTTP invocation: EBCC gateway vs plain Hono vs node:http', async (rec) => {
      const r = await runHttpBench({ ...plan.http, redisUrl, outDir: OUT, log });
      httpRows(rec, r, analyze({ http: r }).http!);
    });
    await run(
      'cold',
      'cold start vs warm start, with its breakdown and process-start floors',
      async (rec) => {
        coldRows(rec, await runColdBench({ ...plan.cold, redisUrl, outDir: OUT, log }));
      },
    );
    await run('throughput', 'throughput: invocations/s against concurrent clients', (rec) =>
      runThroughputBench({ ...plan.throughput, redisUrl, outDir: OUT, rec, log }),
    );
    await run('density', 'density: warm composites on one host', (rec) =>
      runDensityBench({
        ...plan.density,
        counts: args.density1000 ? [...plan.density.counts, 1000] : plan.density.counts,
        executor: args.executor,
        redisUrl,
        outDir: OUT,
        rec,
        log,
      }),
    );
    await run('pool', 'warm pool: warm vs cold, warm-hit ratio under steady load', async (rec) => {
      const r = await runPoolBench({ ...plan.pool, redisUrl, outDir: OUT, log });
      printPool(r, log);
      poolRows(rec, r);
    });
    await run('batch', 'batch throughput against worker concurrency', async (rec) => {
      batchRows(rec, await runBatchBench({ ...plan.batch, redisUrl, redisPid: redis?.pid, log }));
    });
    await run('optee', 'OP-TEE stage latency on the emulated board vs the raw agent', async (rec) => {
      const r = await runOpteeBench(plan.opteeRounds, redisUrl, join(OUT, 'optee-gateway.log'));
      printOptee(r, log);
      opteeRows(rec, r);
    });
  } finally {
    await redis?.dispose();
  }

  const runCsv = join(OUT, `results-${runId}.csv`);
  await writeResultsCsv(runCsv, rows);
  log(`\n${rows.length} rows: ${runCsv}`);
  if (args.quick) {
    const written = await writeDocs(rows, join(OUT, 'benchmarks.md'), join(OUT, 'plots'));
    log(`quick run: the docs are not touched; preview in ${written.join(', ')}`);
  } else {
    const previous = existsSync(DOCS_CSV) ? readCsv(DOCS_CSV) : [];
    const merged = mergeRows(previous, rows);
    await writeResultsCsv(DOCS_CSV, merged);
    const written = await writeDocs(merged, DOCS, join(ROOT, 'docs', 'bench'));
    log(`wrote ${DOCS_CSV} (${merged.length} rows) and ${written.join(', ')}`);
  }
  log(`suite took ${((performance.now() - started) / 1000).toFixed(0)} s`);
}

main().catch((error: Error) => {
  console.error(`\nbenchmark FAILED: ${error.stack ?? error.message}`);
  console.error('no docs were written: every number in them must have been measured');
  process.exit(1);
});
