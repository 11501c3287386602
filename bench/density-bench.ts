/**
 * Benchmark 5 of issue 8, density: N warm composites (an anchor calling one persistent stage, each its own
 * instance) on one host, N = 10 and 100 (1,000 with --density-1000). For each N, through a fresh gateway
 * process whose sandboxes run in a uid range of their own:
 *   - the time from deploy until upkeep has all N instances running (pool minWarm = N, prewarm);
 *   - memory per warm composite: the PSS and RSS of every process in the gateway's sandbox uid range,
 *     summed per sandbox and split into anchors (the harness's sandboxes) and stages (sim enclaves);
 *   - database and blob bytes per invocation over the throughput run below;
 *   - invocations/s with all N warm (autocannon, min(N, 64) clients).
 * The anchor executor is selectable (EBCC_ANCHOR_EXECUTOR: `process`, one sandboxed Node per anchor, or
 * `isolate`, V8 isolates in a shared sandboxed host process); every anchor sandbox found must run the
 * chosen executor's entry, and the executor is recorded as the time-to-warm row's variant.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { FUNCTIONS_DIR, startGatewayEnv } from './lib/gateway-env.ts';
import type { BenchRecorder } from './lib/results.ts';
import { load } from './throughput-bench.ts';

export const EXECUTORS = ['process', 'isolate'] as const;
/** What runs in an anchor sandbox of each executor. */
const ANCHOR_ENTRY: Record<(typeof EXECUTORS)[number], string> = {
  process: '/ebcc/harness.mjs',
  isolate: '/ebcc/isolate-host.mjs',
};

const UID_BASE = 1_900_000_000;
const UID_COUNT = 1_000_000;
const MiB = 1024 * 1024;

interface Usage {
  pssBytes: number;
  rssBytes: number;
  processes: number;
}

function kib(text: string, field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text);
  if (!m) throw new Error(`no ${field} in /proc`);
  return Number(m[1]) * 1024;
}

/** PSS and RSS of one process, or undefined if it is gone (or a zombie, which has no memory). */
function usageOf(pid: number): { pss: number; rss: number; uid: number; cmd: string } | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const uid = Number(/^Uid:\s+(\d+)/m.exec(status)![1]);
    if (!/^VmRSS:/m.test(status)) return { pss: 0, rss: 0, uid, cmd: '' };
    return {
      uid,
      rss: kib(status, 'VmRSS'),
      pss: kib(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'), 'Pss'),
      cmd: readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' '),
    };
  } catch {
    return undefined;
  }
}

/** The gateway's sandboxes, one per uid, classed by what runs in them. */
export function sandboxUsage(
  base: number,
  count: number,
): { anchor: (Usage & { anchor: string | undefined })[]; stage: Usage[] } {
  const byUid = new Map<number, Usage & { anchor: string | undefined }>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const u = usageOf(Number(name));
    if (!u || u.uid < base || u.uid >= base + count) continue;
    const s = byUid.get(u.uid) ?? { pssBytes: 0, rssBytes: 0, processes: 0, anchor: undefined };
    s.pssBytes += u.pss;
    s.rssBytes += u.rss;
    s.processes++;
    s.anchor ??= Object.values(ANCHOR_ENTRY).find((entry) => u.cmd.includes(entry));
    byUid.set(u.uid, s);
  }
  const all = [...byUid.values()];
  return { anchor: all.filter((s) => s.anchor), stage: all.filter((s) => !s.anchor) };
}

const sum = (xs: Usage[], key: 'pssBytes' | 'rssBytes') => xs.reduce((a, s) => a + s[key], 0);

interface DbBytes {
  usedBytes: number;
  blobBytes: number;
  invocations: number;
  executions: number;
}

export async function runDensityBench(options: {
  redisUrl: string;
  outDir: string;
  counts: number[];
  /** Requests per client in the throughput run with all warm. */
  perClient: number;
  executor: string;
  rec: BenchRecorder;
  log: (line: string) => void;
}): Promise<void> {
  const { rec, log, executor } = options;
  if (!EXECUTORS.includes(executor as (typeof EXECUTORS)[number]))
    throw new Error(`anchor executor "${executor}": the runtime offers ${EXECUTORS.join(', ')}`);
  const entry = ANCHOR_ENTRY[executor as (typeof EXECUTORS)[number]];
  let largest = 0;
  for (const n of options.counts) {
    const env = await startGatewayEnv({
      redisUrl: options.redisUrl,
      logFile: join(options.outDir, `density-${n}-gateway.log`),
      env: {
        EBCC_SANDBOX_UID_BASE: String(UID_BASE),
        EBCC_SANDBOX_UID_COUNT: String(UID_COUNT),
        EBCC_ANCHOR_EXECUTOR: executor,
      },
    });
    try {
      const { url, adminToken } = env.child.ready;
      const stat = `${n} warm`;
      const t0 = performance.now();
      const fn = await env.deploy(join(FUNCTIONS_DIR, 'http-stage'), (m) => {
        m.name = 'bench-density';
        m.pool = { minWarm: n, maxInstances: n, prewarm: true, concurrent: true, idleTimeoutMs: 3_600_000 };
      });
      const deadline = Date.now() + 60_000 + n * 3_000;
      for (;;) {
        const response = await fetch(`${url}/v1/instances`, {
          headers: { authorization: `Bearer ${adminToken}` },
        });
        if (response.status !== 200) throw new Error(`GET /v1/instances: ${response.status}`);
        const { instances } = (await response.json()) as {
          instances: { status: string; annotations: Record<string, string> }[];
        };
        const running = instances.filter(
          (s) => s.annotations['ebcc.function'] === fn.name && s.status === 'running',
        ).length;
        if (running >= n) break;
        if (Date.now() > deadline)
          throw new Error(
            `density ${n}: only ${running} of ${n} instances running after ${((performance.now() - t0) / 1000).toFixed(0)} s`,
          );
        await new Promise((r) => setTimeout(r, 100));
      }
      const warmS = (performance.now() - t0) / 1000;
      rec.add({ quantity: 'time to warm', variant: executor, stat, value: warmS, unit: 's', n: 1 });

      const usage = sandboxUsage(UID_BASE, UID_COUNT);
      // One sandbox per anchor with the process executor; isolates share host sandboxes.
      if (usage.anchor.length < (executor === 'process' ? n : 1))
        throw new Error(
          `density ${n}: ${n} instances running but ${usage.anchor.length} anchor sandboxes found`,
        );
      const foreign = usage.anchor.filter((s) => s.anchor !== entry);
      if (foreign.length)
        throw new Error(
          `density ${n}: ${foreign.length} anchor sandboxes run ${foreign[0]!.anchor}, not the ${executor} executor's ${entry}`,
        );
      rec.add({
        quantity: 'anchor sandboxes',
        variant: executor,
        stat,
        value: usage.anchor.length,
        unit: 'sandboxes',
        n: 1,
      });
      if (usage.stage.length < n)
        throw new Error(
          `density ${n}: ${n} instances running but ${usage.stage.length} stage sandboxes found`,
        );
      const gateway = usageOf(env.child.pid);
      if (!gateway) throw new Error('the gateway process is gone');
      for (const [variant, value] of [
        ['anchor', sum(usage.anchor, 'pssBytes') / n],
        ['stage', sum(usage.stage, 'pssBytes') / n],
        ['anchor+stage', (sum(usage.anchor, 'pssBytes') + sum(usage.stage, 'pssBytes')) / n],
      ] as const)
        rec.add({ quantity: 'PSS per composite', variant, stat, value: value / MiB, unit: 'MiB', n });
      for (const [variant, value] of [
        ['anchor', sum(usage.anchor, 'rssBytes') / n],
        ['stage', sum(usage.stage, 'rssBytes') / n],
      ] as const)
        rec.add({ quantity: 'RSS per composite', variant, stat, value: value / MiB, unit: 'MiB', n });
      rec.add({
        quantity: 'gateway process RSS',
        variant: 'host',
        stat,
        value: gateway.rss / MiB,
        unit: 'MiB',
        n: 1,
      });
      rec.add({
        quantity: 'sandbox processes',
        variant: 'anchor+stage',
        stat,
        value:
          usage.anchor.reduce((a, s) => a + s.processes, 0) +
          usage.stage.reduce((a, s) => a + s.processes, 0),
        unit: 'processes',
        n: 1,
      });
      log(
        `  ${n} warm in ${warmS.toFixed(1)} s; PSS per composite: anchor ${(sum(usage.anchor, 'pssBytes') / n / MiB).toFixed(1)} MiB, stage ${(sum(usage.stage, 'pssBytes') / n / MiB).toFixed(1)} MiB`,
      );

      const before = await env.child.ask<DbBytes>({ type: 'db-bytes' });
      const clients = Math.min(n, 64);
      const r = await load(`${url}/fn/${fn.name}`, clients, clients * options.perClient);
      const after = await env.child.ask<DbBytes>({ type: 'db-bytes' });
      const invocations = after.invocations - before.invocations;
      if (invocations < r.ok || after.executions - before.executions < r.ok)
        throw new Error(`density ${n}: ${r.ok} answered but ${invocations} invocations recorded`);
      rec.add({
        quantity: 'invocations/s, all warm',
        variant: `${clients} clients`,
        stat,
        value: r.perSecond,
        unit: '1/s',
        n: r.ok,
      });
      rec.add({
        quantity: 'failed requests, all warm',
        variant: `${clients} clients`,
        stat,
        value: r.failed,
        unit: 'requests',
        n: r.ok + r.failed,
      });
      rec.add({
        quantity: 'database bytes per invocation',
        variant: 'pages in use',
        stat,
        value: (after.usedBytes - before.usedBytes) / invocations,
        unit: 'B',
        n: invocations,
      });
      rec.add({
        quantity: 'database bytes per invocation',
        variant: 'of which blobs',
        stat,
        value: (after.blobBytes - before.blobBytes) / invocations,
        unit: 'B',
        n: invocations,
      });
      log(`  ${n} warm: ${r.perSecond.toFixed(0)} inv/s with ${clients} clients`);
    } finally {
      await env.close();
    }
    largest = n;
  }
  rec.add({
    quantity: 'warm composites',
    variant: 'all',
    stat: 'largest',
    value: largest,
    unit: 'composites',
    n: 1,
  });
}
