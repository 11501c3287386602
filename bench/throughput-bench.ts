/**
 * Benchmark 4 of issue 8, throughput: warm invocations/s against concurrent clients, for a function whose
 * anchor calls one `persistent` stage and the same function with a `oneshot` stage, through one gateway
 * process with durable artifacts (every answer is sent only once its invocation record and stage
 * execution are committed). Load from autocannon (keep-alive connections, one request in flight each).
 * The two modes alternate at each client count, in an order rotated from count to count.
 */
import autocannon from 'autocannon';
import { join } from 'node:path';
import { FUNCTIONS_DIR, startGatewayEnv, type GatewayEnv } from './lib/gateway-env.ts';
import type { BenchRecorder } from './lib/results.ts';
import { rotate } from './lib/rounds.ts';

export const STAGE_MODES = ['persistent', 'oneshot'] as const;
export type StageMode = (typeof STAGE_MODES)[number];
const BODY = JSON.stringify({ n: 1 });

export interface LoadResult {
  /** Answered 2xx per second, from the first request sent to the last response received. */
  perSecond: number;
  ok: number;
  failed: number;
  latency: { p50: number; p99: number; p999: number | undefined };
}

/**
 * `amount` requests from `connections` closed-loop clients. A fixed amount rather than a fixed duration:
 * when latency grows with the client count (oneshot stages, a loaded machine), a timed run would drop
 * the requests still in flight at its end, or measure none. The elapsed time is taken here, from the
 * start to the last response (autocannon's own duration is rounded to its 1-second ticks).
 */
export async function load(url: string, connections: number, amount: number): Promise<LoadResult> {
  let last = 0;
  const t0 = performance.now();
  const instance = autocannon({
    url,
    method: 'POST',
    body: BODY,
    headers: { 'content-type': 'application/json' },
    connections,
    amount,
    timeout: 300,
  });
  instance.on('response', () => (last = performance.now()));
  const r = await instance;
  const ok = r['2xx'];
  if (!(ok > 0) || last === 0)
    throw new Error(
      `${url} with ${connections} clients: no request succeeded (${r.non2xx} non-2xx, ${r.errors} errors, ${r.timeouts} timeouts)`,
    );
  return {
    perSecond: ok / ((last - t0) / 1000),
    ok,
    failed: r.non2xx + r.errors + r.timeouts,
    latency: { p50: r.latency.p50, p99: r.latency.p99, p999: r.latency.p99_9 },
  };
}

export async function deployThroughputFunctions(env: GatewayEnv, instances: number) {
  const names = {} as Record<StageMode, string>;
  for (const mode of STAGE_MODES) {
    const fn = await env.deploy(join(FUNCTIONS_DIR, 'http-stage'), (m) => {
      m.name = `bench-tp-${mode}`;
      // Overload shows as latency here, not as timeouts: the limits of the latency benchmarks are tight.
      m.anchor.limits.timeoutMs = 120_000;
      for (const stage of m.stages) {
        stage.mode = mode;
        stage.limits.timeoutMs = 60_000;
      }
      m.pool = {
        minWarm: instances,
        maxInstances: instances,
        concurrent: true,
        prewarm: true,
        idleTimeoutMs: 3_600_000,
      };
    });
    names[mode] = fn.name;
  }
  return names;
}

export async function runThroughputBench(options: {
  redisUrl: string;
  outDir: string;
  clients: number[];
  /** Requests per client at each client count, by stage mode. */
  perClient: Record<StageMode, number>;
  rec: BenchRecorder;
  log: (line: string) => void;
}): Promise<void> {
  const { rec, log } = options;
  const env = await startGatewayEnv({
    redisUrl: options.redisUrl,
    logFile: join(options.outDir, 'throughput-gateway.log'),
  });
  try {
    const instances = 2;
    const names = await deployThroughputFunctions(env, instances);
    const { url } = env.child.ready;
    // Warm: every instance started, caches filled; not counted.
    for (const mode of STAGE_MODES) await load(`${url}/fn/${names[mode]}`, instances * 2, instances * 4);
    const best = { persistent: 0, oneshot: 0 } as Record<StageMode, number>;
    const ok = { persistent: 0, oneshot: 0 } as Record<StageMode, number>;
    for (const [i, clients] of options.clients.entries()) {
      for (const mode of rotate(STAGE_MODES, i)) {
        const r = await load(`${url}/fn/${names[mode]}`, clients, clients * options.perClient[mode]);
        ok[mode] += r.ok;
        best[mode] = Math.max(best[mode], r.perSecond);
        log(
          `  ${mode.padEnd(10)} ${String(clients).padStart(3)} clients: ${r.perSecond.toPrecision(3)} inv/s, p50 ${r.latency.p50} ms, p99 ${r.latency.p99} ms, ${r.failed} failed`,
        );
        const stat = `c=${clients}`;
        rec.add({ quantity: 'invocations/s', variant: mode, stat, value: r.perSecond, unit: '1/s', n: r.ok });
        rec.add({ quantity: 'latency p50', variant: mode, stat, value: r.latency.p50, unit: 'ms', n: r.ok });
        rec.add({ quantity: 'latency p99', variant: mode, stat, value: r.latency.p99, unit: 'ms', n: r.ok });
        if (r.latency.p999 !== undefined)
          rec.add({
            quantity: 'latency p99.9',
            variant: mode,
            stat,
            value: r.latency.p999,
            unit: 'ms',
            n: r.ok,
          });
        rec.add({
          quantity: 'failed requests',
          variant: mode,
          stat,
          value: r.failed,
          unit: 'requests',
          n: r.ok + r.failed,
        });
      }
    }
    // Durable artifacts: every answered invocation has its stage execution committed, with evidence. A
    // request the client gave up on (a timeout under overload) may still have run and signed, or have
    // been cut short unsigned, so only answered ones are counted against signed executions.
    const stats = await env.stats();
    for (const mode of STAGE_MODES) {
      const executions = stats.executions.find((e) => e.fn === names[mode]);
      if (!executions || executions.signed < ok[mode])
        throw new Error(
          `throughput ${mode}: ${ok[mode]} answered invocations but ${executions?.n ?? 0} stage executions (${executions?.signed ?? 0} signed) in the database`,
        );
      rec.add({
        quantity: 'invocations/s',
        variant: mode,
        stat: 'best',
        value: best[mode],
        unit: '1/s',
        n: ok[mode],
      });
    }
  } finally {
    await env.close();
  }
}
