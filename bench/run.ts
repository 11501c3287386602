/**
 * `npm run bench`: runs the three benchmarks of issue 3, prints the numbers, writes the raw samples as
 * CSV to bench/out/, and regenerates docs/benchmarks.md and docs/bench/*.svg from what was measured.
 *
 *   npm run bench                  the full run (about 2-3 minutes on 2 cores); regenerates the docs
 *   npm run bench -- --quick       fewer rounds, for a smoke test; writes bench/out/ only
 *   npm run bench -- --only=stage  any of stage,http,cold; writes bench/out/ only
 *   npm run bench -- --only=batch  batch throughput (issue 6); replaces its own section of docs/benchmarks.md
 *   npm run bench -- --only=pool   the warm pool (issue 6): warm vs cold, warm-hit ratio; replaces its own section
 *   npm run bench -- --only=seal   the sealing benchmark alone; writes its own section of docs/benchmarks.md
 *   npm run bench -- --only=optee  OP-TEE stage latency on the emulated board vs the raw agent; its own section
 *   npm run bench -- --report-only regenerates the docs from bench/out/results.json of a full run
 *
 * It exits non-zero, without writing the docs, when any measurement could not be taken.
 */
import { mkdir, readFile } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { redisAnswers, startPrivateRedis, type PrivateRedis } from '../scripts/lib/redis-server.ts';
import { runColdBench, type ColdBenchResult } from './cold-bench.ts';
import { runHttpBench, type HttpBenchResult } from './http-bench.ts';
import { analyze } from './lib/analysis.ts';
import { machineInfo } from './lib/machine.ts';
import { printAnalysis, writeCsvFiles, writeDocs, type RunInfo } from './lib/report.ts';
import { runStageBench, type StageBenchResult } from './stage-bench.ts';
import { batchDocs, runBatchBench, type BatchBenchResult } from './batch-bench.ts';
import { evidenceDocs, printEvidence, runEvidenceBench, type EvidenceBenchResult } from './evidence-bench.ts';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { printSeal, runSealBench, sealDocs } from './seal-bench.ts';
import { poolDocs, printPool, runPoolBench, type PoolBenchResult } from './pool-bench.ts';
import { opteeDocs, printOptee, runOpteeBench } from './optee-bench.ts';

const ROOT = join(import.meta.dirname, '..');
const OUT = join(import.meta.dirname, 'out');
const ALL = ['stage', 'http', 'cold'] as const;
/** Benchmarks with a separately generated section of docs/benchmarks.md, also run by a full run. */
const SEPARATE = ['batch', 'pool'] as const;
type Bench = (typeof ALL)[number] | (typeof SEPARATE)[number];

function parseArgs(argv: string[]): { quick: boolean; only: Bench[]; reportOnly: boolean } {
  let quick = false;
  let reportOnly = false;
  let only: Bench[] = [...ALL, ...SEPARATE];
  for (const arg of argv) {
    if (arg === '--quick') quick = true;
    else if (arg === '--report-only') reportOnly = true;
    else if (arg.startsWith('--only=')) {
      const names = arg.slice('--only='.length).split(',');
      for (const n of names)
        if (![...ALL, ...SEPARATE].includes(n as Bench)) throw new Error(`unknown benchmark "${n}"`);
      only = names as Bench[];
    } else if (arg === '--help' || arg === '-h') {
      console.log(
        'usage: npm run bench [-- --quick] [-- --only=stage,http,cold,batch,pool] [-- --report-only]',
      );
      process.exit(0);
    } else throw new Error(`unknown argument "${arg}" (try --help)`);
  }
  return { quick, only, reportOnly };
}

/** Rewrites the docs from the raw samples a previous full run saved (the analysis is recomputed). */
async function reportOnly(): Promise<void> {
  const path = join(OUT, 'results.json');
  const saved = JSON.parse(await readFile(path, 'utf8')) as {
    run: RunInfo;
    raw: { stage?: StageBenchResult; http?: HttpBenchResult; cold?: ColdBenchResult };
  };
  const { run, raw } = saved;
  if (run.quick || !ALL.every((b) => run.only.includes(b)) || !raw.stage || !raw.http || !raw.cold)
    throw new Error(`${path} is not from a full run of all three benchmarks; run \`npm run bench\``);
  const analysis = analyze(raw);
  printAnalysis(analysis, run, console.log);
  const written = await writeDocs(ROOT, { stage: raw.stage, http: raw.http, cold: raw.cold }, analysis, run);
  const docs = join(ROOT, 'docs', 'benchmarks.md');
  const evidence = JSON.parse(readFileSync(join(OUT, 'evidence.json'), 'utf8')) as EvidenceBenchResult;
  writeFileSync(docs, evidenceDocs(readFileSync(docs, 'utf8'), evidence));
  const batchFile = join(OUT, 'batch.json');
  if (existsSync(batchFile))
    writeFileSync(docs, batchDocs(readFileSync(docs, 'utf8'), JSON.parse(readFileSync(batchFile, 'utf8'))));
  const poolFile = join(OUT, 'pool.json');
  if (existsSync(poolFile)) {
    const saved = JSON.parse(readFileSync(poolFile, 'utf8')) as { date: string; result: PoolBenchResult };
    writeFileSync(docs, poolDocs(readFileSync(docs, 'utf8'), saved.result, saved.date));
  }
  console.log(`\nwrote ${written.join(', ')} from the samples measured ${run.machine.date}`);
}

const PLAN = {
  full: {
    stage: { persistentRounds: 1000, oneshotRounds: 24 },
    http: {
      rounds: 600,
      warmupRounds: 30,
      profileRequests: 200,
      componentRounds: 200,
      attributionRounds: 300,
    },
    cold: { rounds: 16, settleMs: 50 },
    pool: { clients: 2, requestsPerClient: 1000, coldRounds: 12 },
  },
  quick: {
    stage: { persistentRounds: 150, oneshotRounds: 5 },
    http: { rounds: 100, warmupRounds: 10, profileRequests: 50, componentRounds: 50, attributionRounds: 50 },
    cold: { rounds: 3, settleMs: 50 },
    pool: { clients: 2, requestsPerClient: 100, coldRounds: 3 },
  },
};

/** The sealing benchmark: in-process, so it runs alone (`--only=seal`) and in every full run. */
async function sealBench(quick: boolean, writeDocs: boolean, log: (line: string) => void): Promise<void> {
  const seal = await runSealBench(quick ? 3 : 9);
  printSeal(seal, log);
  writeFileSync(join(OUT, 'seal.json'), `${JSON.stringify(seal, null, 2)}\n`);
  if (!writeDocs) return;
  const machine = machineInfo();
  const docs = join(ROOT, 'docs', 'benchmarks.md');
  const when = new Date().toISOString().slice(0, 16).replace('T', ' ') + ' UTC';
  const where = `${machine.nproc}× ${machine.cpuModel}, node ${machine.node}, load average ${machine.loadAverageAtStart.join(' ')} at start`;
  writeFileSync(docs, sealDocs(readFileSync(docs, 'utf8'), seal, when, where));
  log(`wrote the sealing section of docs/benchmarks.md`);
}

function poolDate(): string {
  return (JSON.parse(readFileSync(join(OUT, 'pool.json'), 'utf8')) as { date: string }).date;
}

/** The OP-TEE benchmark boots the emulated board, so it runs only when asked (`--only=optee`). */
async function opteeBench(quick: boolean, log: (line: string) => void): Promise<void> {
  const redis = await startPrivateRedis();
  try {
    const result = await runOpteeBench(quick ? 3 : 10, redis.url, join(OUT, 'optee-gateway.log'));
    printOptee(result, log);
    writeFileSync(join(OUT, 'optee.json'), `${JSON.stringify(result, null, 2)}\n`);
    if (quick) return;
    const machine = machineInfo();
    const docs = join(ROOT, 'docs', 'benchmarks.md');
    const when = new Date().toISOString().slice(0, 16).replace('T', ' ') + ' UTC';
    const where = `${machine.nproc}× ${machine.cpuModel}, node ${machine.node}, load average ${machine.loadAverageAtStart.join(' ')} at start`;
    writeFileSync(docs, opteeDocs(readFileSync(docs, 'utf8'), result, when, where));
    log('wrote the OP-TEE section of docs/benchmarks.md');
  } finally {
    await redis.stop();
  }
}

async function main(): Promise<void> {
  if (process.argv.slice(2).some((a) => a === '--only=optee')) {
    await mkdir(OUT, { recursive: true });
    console.log('EBCC OP-TEE benchmark (emulated board)');
    return opteeBench(process.argv.includes('--quick'), (l) => console.log(l));
  }
  if (process.argv.slice(2).some((a) => a === '--only=seal')) {
    await mkdir(OUT, { recursive: true });
    console.log('EBCC sealing benchmark');
    return sealBench(process.argv.includes('--quick'), !process.argv.includes('--quick'), (l) =>
      console.log(l),
    );
  }
  const { quick, only, reportOnly: fromSaved } = parseArgs(process.argv.slice(2));
  if (fromSaved) return reportOnly();
  if (process.getuid?.() !== 0)
    throw new Error(
      'the benchmarks run stages and anchors in the sandbox, which needs root (see docs/security.md)',
    );
  const plan = quick ? PLAN.quick : PLAN.full;
  await mkdir(OUT, { recursive: true });
  const machine = machineInfo();
  const started = performance.now();
  const log = (line: string) => console.log(line);
  log(
    `EBCC benchmarks (${quick ? 'quick' : 'full'} run: ${only.join(', ')}) on ${machine.nproc}× ${machine.cpuModel}, node ${machine.node}, load average ${machine.loadAverageAtStart.join(' ')}`,
  );
  if (machine.loadAverageAtStart[0]! > machine.nproc * 0.5)
    log(
      `warning: the machine is busy (1-minute load ${machine.loadAverageAtStart[0]}); the numbers will be noisy`,
    );

  let redis: PrivateRedis | undefined;
  let redisUrl = process.env.REDIS_URL ?? '';
  if (!redisUrl || !(await redisAnswers(redisUrl))) {
    redis = await startPrivateRedis();
    redisUrl = redis.url;
  }
  let stage: StageBenchResult | undefined;
  let http: HttpBenchResult | undefined;
  let cold: ColdBenchResult | undefined;
  let batch: BatchBenchResult | undefined;
  let pool: PoolBenchResult | undefined;
  const timed = async <T>(label: string, run: () => Promise<T>): Promise<T> => {
    const t0 = performance.now();
    const result = await run();
    log(`  (${label}: ${((performance.now() - t0) / 1000).toFixed(0)} s)`);
    return result;
  };
  try {
    if (only.includes('stage')) {
      log('\n[1/3] stage request: EBCC vs native');
      stage = await timed('stage', () => runStageBench({ ...plan.stage, log }));
    }
    if (only.includes('http')) {
      log('\n[2/3] warm HTTP invocation: EBCC gateway vs plain Hono vs node:http');
      http = await timed('http', () => runHttpBench({ ...plan.http, redisUrl, outDir: OUT, log }));
    }
    if (only.includes('cold')) {
      log('\n[3/3] cold start vs warm start');
      cold = await timed('cold', () => runColdBench({ ...plan.cold, redisUrl, outDir: OUT, log }));
    }
    if (only.includes('batch')) {
      log('\nbatch throughput against worker concurrency');
      batch = await timed('batch', () =>
        runBatchBench({
          redisUrl,
          redisPid: redis?.pid,
          concurrency: quick ? [8] : [1, 4, 16, 64],
          items: quick ? 300 : 1_000,
          profile: !quick,
          log,
        }),
      );
      writeFileSync(join(OUT, 'batch.json'), `${JSON.stringify(batch, null, 2)}\n`);
    }
    if (only.includes('pool')) {
      log('\nwarm pool: warm vs cold, warm-hit ratio under steady load');
      pool = await timed('pool', () => runPoolBench({ ...plan.pool, redisUrl, outDir: OUT, log }));
      printPool(pool, log);
      const date = new Date().toISOString().slice(0, 16).replace('T', ' ') + ' UTC';
      writeFileSync(join(OUT, 'pool.json'), `${JSON.stringify({ date, result: pool }, null, 2)}\n`);
    }
  } finally {
    await redis?.dispose();
  }
  log('\n[4/4] evidence: creation and offline verification');
  const evidence = await timed('evidence', () => runEvidenceBench(quick ? 3 : 9));
  printEvidence(evidence, log);
  writeFileSync(join(OUT, 'evidence.json'), `${JSON.stringify(evidence, null, 2)}\n`);
  const run: RunInfo = {
    machine,
    quick,
    only,
    durationS: (performance.now() - started) / 1000,
    loadAverageAtEnd: os.loadavg().map((v) => +v.toFixed(2)),
    plan,
  };
  const analysis = analyze({ stage, http, cold });
  await writeCsvFiles(OUT, { stage, http, cold }, analysis, run);
  printAnalysis(analysis, run, log);
  if (!quick && ALL.every((b) => only.includes(b))) {
    const written = await writeDocs(ROOT, { stage: stage!, http: http!, cold: cold! }, analysis, run);
    const docs = join(ROOT, 'docs', 'benchmarks.md');
    writeFileSync(docs, evidenceDocs(readFileSync(docs, 'utf8'), evidence));
    if (batch) writeFileSync(docs, batchDocs(readFileSync(docs, 'utf8'), batch));
    if (pool) writeFileSync(docs, poolDocs(readFileSync(docs, 'utf8'), pool, poolDate()));
    log(`\nwrote ${written.join(', ')}`);
    log('\n[5/5] sealing: HPKE requests and responses');
    await sealBench(false, true, log);
  } else if (!quick && (batch || pool)) {
    const docs = join(ROOT, 'docs', 'benchmarks.md');
    if (batch) writeFileSync(docs, batchDocs(readFileSync(docs, 'utf8'), batch));
    if (pool) writeFileSync(docs, poolDocs(readFileSync(docs, 'utf8'), pool, poolDate()));
    log(
      `\nreplaced the ${[batch && 'batch', pool && 'pool'].filter(Boolean).join(' and ')} section(s) of docs/benchmarks.md`,
    );
  } else {
    log('\n(docs/benchmarks.md is regenerated only by a full run of all three benchmarks)');
  }
  log(`raw samples and summaries: ${OUT}/`);
}

main().catch((error: Error) => {
  console.error(`\nbenchmark FAILED: ${error.stack ?? error.message}`);
  process.exit(1);
});
