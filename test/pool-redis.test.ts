// The pool without Redis: a gateway started while Redis is down, and Redis stopped and started again
// under a running gateway (a private redis-server this test owns). Invocations that need a lease fail
// fast with 503 naming the URL, and everything recovers by itself once Redis answers again.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, startPrivateRedis, type PrivateRedis } from '../scripts/lib/redis-server.ts';
import { callFn, deployComposite, expectProblem, HEALTHY_ANCHOR } from './helpers/composite-kit.ts';
import { api, cleanupAll, startTestGateway, type TestGateway } from './helpers/env.ts';

let redis: PrivateRedis;
let gw: TestGateway;
let token: string;

beforeAll(async () => {
  redis = await startPrivateRedis();
  gw = await startTestGateway({ redisUrl: redis.url });
  token = await gw.token('acme', ['admin']);
  await deployComposite(gw, token, { name: 'leased', anchor: HEALTHY_ANCHOR });
  await deployComposite(gw, token, { name: 'shared', anchor: HEALTHY_ANCHOR, pool: { concurrent: true } });
});
afterAll(async () => {
  await cleanupAll();
  await redis.dispose();
});

async function untilStatus(name: string, status: number, ms = 30_000) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    last = await callFn(gw, token, name);
    if (last.status === status) return last;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${name} never answered ${status}; last ${last?.status} ${last?.text}`);
}

describe('Redis during operation', () => {
  it('stopped: leased invocations answer 503 redis-unavailable naming the URL; started again: they recover', async () => {
    expect((await callFn(gw, token, 'leased')).status).toBe(200);
    await redis.stop();
    const down = await untilStatus('leased', 503);
    expectProblem(down, 503, 'redis-unavailable', false);
    expect(down.body.detail).toContain(`Redis at ${redis.url} is unavailable`);
    expect(Number(down.headers.get('retry-after'))).toBeGreaterThan(0);
    // A concurrent function takes no exclusive lease: it keeps working without Redis.
    expect((await callFn(gw, token, 'shared')).status).toBe(200);
    // The gateway itself is fine: deploys and reads go on, readiness says what is missing.
    const ready = await api(gw.url, undefined, 'GET', '/readyz');
    expect(ready.status).toBe(503);
    expect(JSON.stringify(ready.body.checks)).toContain('"name":"redis","ok":false');

    await redis.start();
    const back = await untilStatus('leased', 200);
    expect(back.headers.get('x-ebcc-start')).toBe('warm');
    expect((await api(gw.url, undefined, 'GET', '/readyz')).status).toBe(200);
    // Upkeep resumes too: its queue answers again (a new deploy is pre-warmed).
    await deployComposite(gw, token, {
      name: 'after-outage',
      anchor: HEALTHY_ANCHOR,
      pool: { minWarm: 1, prewarm: true },
    });
    const deadline = Date.now() + 30_000;
    let warm = false;
    while (!warm && Date.now() < deadline) {
      const { body } = await api(gw.url, token, 'GET', '/v1/instances');
      warm = (body.instances as any[]).some(
        (s) => s.annotations['ebcc.function'] === 'after-outage' && s.status === 'running',
      );
      if (!warm) await new Promise((r) => setTimeout(r, 200));
    }
    expect(warm).toBe(true);
    expect((await callFn(gw, token, 'after-outage')).headers.get('x-ebcc-start')).toBe('warm');
  }, 90_000);
});

describe('Redis unavailable at start', () => {
  it('the gateway comes up, and invocations answer 503 naming the URL', async () => {
    const url = `redis://127.0.0.1:${await freePort()}`;
    const cold = await startTestGateway({ redisUrl: url });
    const t = await cold.token('acme', ['admin']);
    await deployComposite(cold, t, { name: 'no-redis', anchor: HEALTHY_ANCHOR });
    const result = await callFn(cold, t, 'no-redis');
    expectProblem(result, 503, 'redis-unavailable', false);
    expect(result.body.detail).toContain(`Redis at ${url} is unavailable`);
  });
});
