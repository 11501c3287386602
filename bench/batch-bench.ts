/**
 * Batch throughput (issue 6): jobs/s against worker concurrency, for a trivial function whose anchor
 * calls one persistent stage, every result durable in libSQL (group commit, synchronous=FULL) before it
 * counts. One `ebcc serve` process (the single-node default: gateway and batch workers) per concurrency
 * level, with a fresh database; the benchmark submits one batch over HTTP and polls it until no item is
 * queued. Afterwards the database must hold one succeeded item, with its own invocation record and
 * stage execution, per submitted item, or the run fails.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { migrateDatabase, openDatabase } from '../db/client.ts';
import { ensureTenant, issueToken } from '../runtime/auth/tokens.ts';
import { deployFunction } from './lib/deploy.ts';
import { FUNCTIONS_DIR } from './lib/gateway-env.ts';
import { summarizeProfile, type ProfileSummary } from './lib/profile.ts';

const ROOT = join(import.meta.dirname, '..');

export interface BatchLevel {
  concurrency: number;
  items: number;
  submitMs: number;
  runMs: number;
  jobsPerS: number;
  /** CPU time per job, ms: the gateway/worker process, its sandboxes (anchors, enclaves), Redis. */
  cpuMsPerJob: { gateway: number; sandboxes: number; redis: number | null };
  /** Means over the batch's invocation records, ms. */
  meanAcquireMs: number;
  meanAnchorMs: number;
  invocations: number;
  executions: number;
}

export interface BatchBenchResult {
  date: string;
  pool: Record<string, unknown>;
  levels: BatchLevel[];
  loadAverage: number[];
  /** A further run of the best level under the V8 profiler: where the gateway/worker process spends it. */
  profile?: { concurrency: number; items: number; jobsPerS: number; summary: ProfileSummary };
}

const TICK_MS = 1000 / 100; // USER_HZ

function cpuOf(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) * TICK_MS;
  } catch {
    return 0;
  }
}

/** Pids of every live descendant of `root`. */
function descendants(root: number): number[] {
  const parent = new Map<number, number>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      parent.set(Number(name), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      // gone meanwhile
    }
  }
  const out: number[] = [];
  const walk = (pid: number) => {
    for (const [child, p] of parent) {
      if (p !== pid) continue;
      out.push(child);
      walk(child);
    }
  };
  walk(root);
  return out;
}

async function serve(home: string, env: Record<string, string>, nodeArgs: string[] = []) {
  const child: ChildProcess = spawn(
    process.execPath,
    [...nodeArgs, '--import', 'tsx', join(ROOT, 'runtime', 'cli', 'entry.ts'), 'serve', '--port', '0'],
    {
      cwd: ROOT,
      env: { ...process.env, EBCC_HOME: home, EBCC_LOG_LEVEL: 'warn', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d));
  child.stderr!.on('data', (d: Buffer) => (out += d));
  const exited = new Promise((r) => child.once('exit', r));
  const [url, pid] = await new Promise<[string, number]>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`ebcc serve did not start:\n${out}`)), 30_000);
    child.stdout!.on('data', () => {
      const m = /listening on (\S+) \(pid (\d+)\)/.exec(out);
      if (!m) return;
      clearTimeout(timer);
      resolve([m[1]!, Number(m[2])]);
    });
    void exited.then(() => reject(new Error(`ebcc serve exited:\n${out}`)));
  });
  return {
    url,
    pid,
    stop: async () => {
      child.kill('SIGTERM');
      await exited;
    },
  };
}

async function api(url: string, token: string, method: string, path: string, body?: unknown) {
  const response = await fetch(`${url}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = (await response.json()) as any;
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${JSON.stringify(json)}`);
  return json;
}

async function runBatch(url: string, token: string, fn: string, n: number, tag: string) {
  const items = Array.from({ length: n }, (_, i) => ({ n: i, tag }));
  const t0 = performance.now();
  const submitted = await api(url, token, 'POST', `/v1/functions/${fn}/batches`, items);
  const t1 = performance.now();
  for (;;) {
    const s = await api(url, token, 'GET', `/v1/batches/${submitted.id}?limit=1`);
    if (s.complete) {
      const t2 = performance.now();
      if (s.counts.succeeded !== n) throw new Error(`batch ${submitted.id}: ${JSON.stringify(s.counts)}`);
      return { id: submitted.id as string, submitMs: t1 - t0, runMs: t2 - t0 };
    }
    // Polling costs the gateway CPU too; 4 polls a second bound the completion time to within 250 ms.
    await new Promise((r) => setTimeout(r, 250));
  }
}

export async function runBatchBench(options: {
  redisUrl: string;
  redisPid?: number;
  concurrency: number[];
  items: number;
  log: (line: string) => void;
  /** Write a V8 CPU profile of each gateway process into this directory. */
  profileDir?: string;
  /** After the levels, run the best one again under the profiler and summarize it. */
  profile?: boolean;
}): Promise<BatchBenchResult> {
  const pool = { maxInstances: 2, concurrent: true, idleTimeoutMs: 3_600_000 };
  const levels: BatchLevel[] = [];
  for (const concurrency of options.concurrency) {
    const home = await mkdtemp(join(tmpdir(), 'ebcc-bench-batch-'));
    const database = await openDatabase(`file:${join(home, 'ebcc.db')}`);
    try {
      await migrateDatabase(database);
      const tenant = await ensureTenant(database.db, 'bench');
      const { token } = await issueToken(database.db, { tenantId: tenant.id, name: 'b', scopes: ['admin'] });
      const server = await serve(
        home,
        {
          REDIS_URL: options.redisUrl,
          EBCC_QUEUE_PREFIX: `bench${randomBytes(4).toString('hex')}`,
          EBCC_BATCH_WORKERS: '1',
          EBCC_BATCH_CONCURRENCY: String(concurrency),
        },
        options.profileDir ? ['--cpu-prof', `--cpu-prof-dir=${options.profileDir}`] : [],
      );
      try {
        await deployFunction(
          server.url,
          token,
          join(FUNCTIONS_DIR, 'http-stage'),
          join(home, 'b.tgz'),
          (m) => {
            m.name = 'bench-batch';
            m.pool = pool;
            m.triggers = {};
          },
        );
        // Warm-up: the pool's instances are started and the code paths run before anything is timed.
        await runBatch(server.url, token, 'bench-batch', Math.max(50, concurrency * 2), 'warm');
        const tree = [server.pid, ...descendants(server.pid)];
        const cpu0 = tree.map(cpuOf);
        const redis0 = options.redisPid ? cpuOf(options.redisPid) : 0;
        const run = await runBatch(server.url, token, 'bench-batch', options.items, 'timed');
        const cpu1 = tree.map(cpuOf);
        const redis1 = options.redisPid ? cpuOf(options.redisPid) : 0;
        const delta = cpu1.map((c, i) => Math.max(0, c - cpu0[i]!));
        const gatewayCpu = delta[0]!;
        const sandboxCpu = delta.slice(1).reduce((a, b) => a + b, 0);
        const stats = (
          await database.client.execute({
            sql: `select count(*) as items,
                    sum(case when i.status = 'succeeded' then 1 else 0 end) as ok,
                    count(distinct i.invocation_id) as invs,
                    avg(json_extract(v.timings, '$.acquire')) as acquire,
                    avg(json_extract(v.timings, '$.anchor')) as anchor,
                    (select count(*) from stage_executions x where x.invocation_id in
                       (select invocation_id from batch_items where batch_id = ?)) as execs
                  from batch_items i join invocations v on v.id = i.invocation_id
                  where i.batch_id = ?`,
            args: [run.id, run.id],
          })
        ).rows[0]!;
        if (
          Number(stats.ok) !== options.items ||
          Number(stats.invs) !== options.items ||
          Number(stats.execs) !== options.items
        )
          throw new Error(`durability check failed: ${JSON.stringify(stats)}`);
        const level: BatchLevel = {
          concurrency,
          items: options.items,
          submitMs: +run.submitMs.toFixed(1),
          runMs: +run.runMs.toFixed(1),
          jobsPerS: +((options.items * 1000) / run.runMs).toFixed(1),
          cpuMsPerJob: {
            gateway: +(gatewayCpu / options.items).toFixed(3),
            sandboxes: +(sandboxCpu / options.items).toFixed(3),
            redis: options.redisPid ? +((redis1 - redis0) / options.items).toFixed(3) : null,
          },
          meanAcquireMs: +Number(stats.acquire).toFixed(3),
          meanAnchorMs: +Number(stats.anchor).toFixed(3),
          invocations: Number(stats.invs),
          executions: Number(stats.execs),
        };
        options.log(
          `  concurrency ${String(concurrency).padStart(3)}: ${level.jobsPerS} jobs/s (${options.items} items in ${(run.runMs / 1000).toFixed(2)} s; submit ${level.submitMs} ms); CPU ms/job gateway ${level.cpuMsPerJob.gateway}, sandboxes ${level.cpuMsPerJob.sandboxes}, redis ${level.cpuMsPerJob.redis ?? '-'}; mean anchor ${level.meanAnchorMs} ms`,
        );
        levels.push(level);
      } finally {
        await server.stop();
      }
    } finally {
      database.close();
      await rm(home, { recursive: true, force: true });
    }
  }
  const loadAverage = (await import('node:os')).loadavg();
  let profile: BatchBenchResult['profile'];
  if (options.profile && levels.length) {
    const best = levels.reduce((a, b) => (b.jobsPerS > a.jobsPerS ? b : a));
    const dir = await mkdtemp(join(tmpdir(), 'ebcc-bench-batch-prof-'));
    try {
      options.log(`  profiling concurrency ${best.concurrency} (not counted above)`);
      const [run] = (
        await runBatchBench({ ...options, concurrency: [best.concurrency], profile: false, profileDir: dir })
      ).levels;
      // The supervised gateway is the busiest of the processes profiled (the tini parent only waits).
      const summaries = await Promise.all(readdirSync(dir).map((f) => summarizeProfile(join(dir, f), 12)));
      const summary = summaries.reduce((a, b) => (b.busyMs > a.busyMs ? b : a));
      profile = { concurrency: best.concurrency, items: run!.items, jobsPerS: run!.jobsPerS, summary };
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
  return { date: new Date().toISOString(), pool, levels, loadAverage, ...(profile ? { profile } : {}) };
}
