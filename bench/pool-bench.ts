/**
 * Benchmark 5: the warm pool. A function with `pool.minWarm` and `pool.prewarm` under a steady load
 * (a fixed number of clients, each sending its next request when the previous one is answered):
 * the warm-hit ratio and the warm latency. Against it, the cold latency of the same function in a
 * pool kept at zero: each round deletes the instance first, so the request pays create + start.
 * Every response is checked (status, `x-ebcc-start`), and the gateway's /metrics must agree with
 * what the client saw.
 */
import { join } from 'node:path';
import { FUNCTIONS_DIR, startGatewayEnv } from './lib/gateway-env.ts';
import { KeepAliveClient } from './lib/http-client.ts';
import { summarize, type Summary } from './lib/stats.ts';

export interface PoolBenchResult {
  clients: number;
  requests: number;
  warm: number;
  cold: number;
  warmRatio: number;
  warmMs: Summary;
  coldMs: Summary;
  coldRounds: number;
  /** From GET /metrics after the steady load: the gateway's own count. */
  metricsWarmHits: number;
  metricsColdStarts: number;
  poolPolicy: Record<string, unknown>;
}

export interface PoolBenchOptions {
  redisUrl: string;
  outDir: string;
  clients: number;
  requestsPerClient: number;
  coldRounds: number;
  log: (line: string) => void;
}

const BODY = JSON.stringify({ n: 1 });

export async function runPoolBench(options: PoolBenchOptions): Promise<PoolBenchResult> {
  const { log } = options;
  const env = await startGatewayEnv({
    redisUrl: options.redisUrl,
    logFile: join(options.outDir, 'pool-gateway.log'),
  });
  try {
    const { url, adminToken } = env.child.ready;
    const auth = { authorization: `Bearer ${adminToken}` };
    const poolPolicy = {
      minWarm: options.clients,
      maxInstances: options.clients + 2,
      prewarm: true,
      idleTimeoutMs: 3_600_000,
    };
    const warmFn = await env.deploy(join(FUNCTIONS_DIR, 'http-stage'), (m) => {
      m.name = 'bench-pool';
      m.pool = poolPolicy;
    });
    const coldFn = await env.deploy(join(FUNCTIONS_DIR, 'http-stage'), (m) => {
      m.name = 'bench-pool-cold';
      m.pool = { minWarm: 0, maxInstances: 1, idleTimeoutMs: 3_600_000 };
    });

    // Pre-warm on deploy: wait for upkeep to have started minWarm instances.
    const deadline = Date.now() + 60_000;
    for (;;) {
      const response = await fetch(`${url}/v1/instances`, { headers: auth });
      const { instances } = (await response.json()) as { instances: any[] };
      const running = instances.filter(
        (s) => s.annotations['ebcc.function'] === warmFn.name && s.status === 'running',
      ).length;
      if (running >= options.clients) break;
      if (Date.now() > deadline)
        throw new Error(`pre-warm did not reach ${options.clients} instances in 60 s`);
      await new Promise((r) => setTimeout(r, 200));
    }
    log(`  ${options.clients} instance(s) pre-warmed by upkeep`);

    // Steady load.
    const warmMs: number[] = [];
    let warm = 0;
    let cold = 0;
    await Promise.all(
      Array.from({ length: options.clients }, async () => {
        const client = new KeepAliveClient();
        for (let i = 0; i < options.requestsPerClient; i++) {
          const r = await client.post(`${url}/fn/${warmFn.name}`, BODY);
          if (r.status !== 200) throw new Error(`steady load: status ${r.status}: ${r.body.toString()}`);
          const start = r.headers['x-ebcc-start'];
          if (start === 'warm') {
            warm++;
            warmMs.push(r.ms);
          } else if (start === 'cold') cold++;
          else throw new Error(`steady load: no x-ebcc-start header`);
        }
      }),
    );
    const requests = options.clients * options.requestsPerClient;
    log(`  steady load: ${requests} requests from ${options.clients} clients, ${warm} warm, ${cold} cold`);

    // Cold: delete the instance, then one request.
    const coldMs: number[] = [];
    const client = new KeepAliveClient();
    let cid: string | undefined;
    for (let round = 0; round <= options.coldRounds; round++) {
      if (cid) {
        const deleted = await fetch(`${url}/v1/instances/${cid}?force=true`, {
          method: 'DELETE',
          headers: auth,
        });
        if (deleted.status !== 204)
          throw new Error(`deleting ${cid}: ${deleted.status} ${await deleted.text()}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      const r = await client.post(`${url}/fn/${coldFn.name}`, BODY);
      if (r.status !== 200) throw new Error(`cold round: status ${r.status}: ${r.body.toString()}`);
      if (r.headers['x-ebcc-start'] !== 'cold') throw new Error(`cold round ${round} was not cold`);
      cid = String(r.headers['x-ebcc-cid']);
      // Round 0 also fills the extraction cache and JIT: it is not counted.
      if (round > 0) coldMs.push(r.ms);
    }
    log(`  cold: ${options.coldRounds} rounds`);

    const metrics = await (await fetch(`${url}/metrics`, { headers: auth })).text();
    const metric = (name: string) => {
      const line = metrics.split('\n').find((l) => l.startsWith(`${name}{function="${warmFn.name}"} `));
      if (!line) throw new Error(`/metrics has no ${name} for ${warmFn.name}`);
      return Number(line.slice(line.lastIndexOf(' ') + 1));
    };
    const metricsWarmHits = metric('ebcc_pool_warm_hits_total');
    const metricsColdStarts = metrics.includes(`ebcc_pool_cold_starts_total{function="${warmFn.name}"}`)
      ? metric('ebcc_pool_cold_starts_total')
      : 0;
    if (metricsWarmHits !== warm || metricsColdStarts !== cold)
      throw new Error(
        `/metrics disagrees with the client: warm ${metricsWarmHits} vs ${warm}, cold ${metricsColdStarts} vs ${cold}`,
      );
    return {
      clients: options.clients,
      requests,
      warm,
      cold,
      warmRatio: warm / requests,
      warmMs: summarize(warmMs, 'warm latency'),
      coldMs: summarize(coldMs, 'cold latency'),
      coldRounds: options.coldRounds,
      metricsWarmHits,
      metricsColdStarts,
      poolPolicy,
    };
  } finally {
    await env.close();
  }
}

export function printPool(r: PoolBenchResult, log: (line: string) => void): void {
  log(
    `  warm-hit ratio ${(r.warmRatio * 100).toFixed(2)}% (${r.warm}/${r.requests}); warm p50 ${r.warmMs.p50.toFixed(2)} ms (p99 ${r.warmMs.p99.toFixed(2)}); cold p50 ${r.coldMs.p50.toFixed(1)} ms (p99 ${r.coldMs.p99.toFixed(1)}); warm/cold p50 = 1/${(r.coldMs.p50 / r.warmMs.p50).toFixed(1)}`,
  );
}
