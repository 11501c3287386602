// Pool upkeep as BullMQ jobs in a real gateway: pre-warm on deploy, minWarm kept, dead instances
// replaced, idle ones reaped down to the minimum, old versions drained on deploy, a deleted function's
// instances drained and deleted; the per-function metrics at GET /metrics.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { callFn, deployComposite, HEALTHY_ANCHOR } from './helpers/composite-kit.ts';
import { api, cleanupAll, startTestGateway, type TestGateway } from './helpers/env.ts';

let gw: TestGateway;
let token: string;
let lazyInstances = 0;

beforeAll(async () => {
  gw = await startTestGateway();
  token = await gw.token('acme', ['admin']);
});
afterAll(cleanupAll);

interface PoolInstance {
  cid: string;
  status: string;
  version: string;
  pid: number | undefined;
}

async function poolInstances(fn: string): Promise<PoolInstance[]> {
  const { body } = await api(gw.url, token, 'GET', '/v1/instances');
  return (body.instances as any[])
    .filter((s) => s.annotations['ebcc.function'] === fn && s.annotations['ebcc.managedBy'] === 'pool')
    .map((s) => ({ cid: s.id, status: s.status, version: s.annotations['ebcc.version'], pid: s.pid }));
}

/** Polls until `check` returns true (upkeep runs every 2 s); fails with the last state seen. */
async function eventually(what: string, fn: string, check: (i: PoolInstance[]) => boolean, ms = 30_000) {
  const deadline = Date.now() + ms;
  let seen: PoolInstance[] = [];
  while (Date.now() < deadline) {
    seen = await poolInstances(fn);
    if (check(seen)) return seen;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${what}: not reached in ${ms} ms; instances: ${JSON.stringify(seen)}`);
}

const running = (list: PoolInstance[], version = '1.0.0') =>
  list.filter((i) => i.status === 'running' && i.version === version);

/** Answers after `?ms=` milliseconds. */
const SLOW_ANCHOR = `export default { async fetch(request) {
  const ms = Number(new URL(request.url).searchParams.get('ms') ?? '0');
  await new Promise((r) => setTimeout(r, ms));
  return new Response('ok');
} }`;

describe('pool upkeep', () => {
  it('pre-warms minWarm on deploy, serves warm, replaces a dead instance, and drains the old version on deploy', async () => {
    const pool = { minWarm: 2, maxInstances: 3, prewarm: true };
    await deployComposite(gw, token, { name: 'prewarmed', anchor: HEALTHY_ANCHOR, pool });
    const warm = await eventually('2 pre-warmed instances', 'prewarmed', (l) => running(l).length === 2);

    const first = await callFn(gw, token, 'prewarmed');
    expect(first.status, first.text).toBe(200);
    expect(first.headers.get('x-ebcc-start')).toBe('warm');
    expect(warm.map((i) => i.cid)).toContain(first.headers.get('x-ebcc-cid'));

    // An instance that dies is deleted and replaced by upkeep, without any invocation.
    const victim = warm[0]!;
    process.kill(victim.pid!, 'SIGKILL');
    const replaced = await eventually(
      'the dead instance replaced',
      'prewarmed',
      (l) => running(l).length === 2 && !l.some((i) => i.cid === victim.cid),
    );
    expect(replaced.map((i) => i.cid)).toContain(warm[1]!.cid);

    // A new version: the old pool drains, the new one is pre-warmed.
    await deployComposite(gw, token, { name: 'prewarmed', version: '2.0.0', anchor: HEALTHY_ANCHOR, pool });
    const after = await eventually(
      'the old version drained and the new one warm',
      'prewarmed',
      (l) => running(l, '2.0.0').length === 2 && l.every((i) => i.version === '2.0.0'),
    );
    const next = await callFn(gw, token, 'prewarmed');
    expect(next.headers.get('x-ebcc-start')).toBe('warm');
    expect(after.map((i) => i.cid)).toContain(next.headers.get('x-ebcc-cid'));
  });

  it('keeps minWarm once served, reaps idle instances beyond it, and deleting the function deletes its instances', async () => {
    await deployComposite(gw, token, {
      name: 'lazy',
      anchor: `export default { async fetch(request) {
        const ms = Number(new URL(request.url).searchParams.get('ms') ?? '0');
        await new Promise((r) => setTimeout(r, ms));
        return new Response('ok');
      } }`,
      pool: { minWarm: 1, maxInstances: 3, idleTimeoutMs: 1_000 },
    });
    // Without prewarm nothing is started before the first invocation.
    await new Promise((r) => setTimeout(r, 2_500));
    expect(await poolInstances('lazy')).toEqual([]);
    // Three at once: up to three instances (cold).
    const burst = await Promise.all([0, 1, 2].map(() => callFn(gw, token, 'lazy', { path: '/?ms=400' })));
    expect(burst.map((r) => r.status)).toEqual([200, 200, 200]);
    // At least two of them overlapped, so at least two instances were made (cold).
    lazyInstances = new Set(burst.map((r) => r.headers.get('x-ebcc-cid'))).size;
    expect(lazyInstances).toBeGreaterThanOrEqual(2);
    // Idle for more than a second: reaped down to minWarm (1), and kept there.
    await eventually('reaped down to minWarm', 'lazy', (l) => l.length === 1 && running(l).length === 1);
    await new Promise((r) => setTimeout(r, 3_000));
    expect(running(await poolInstances('lazy')).length).toBe(1);

    const slow = callFn(gw, token, 'lazy', { path: '/?ms=1500' });
    await new Promise((r) => setTimeout(r, 500));
    const deleted = await api(gw.url, token, 'DELETE', '/v1/functions/lazy?force=true');
    expect(deleted.status).toBe(204);
    // The invocation in flight finished (drained) before its instance was deleted.
    expect((await slow).status).toBe(200);
    expect(await poolInstances('lazy')).toEqual([]);
    const gone = await callFn(gw, token, 'lazy');
    expect(gone.status).toBe(404);
  });

  it('deleting a function (no force) drains its pool: the invocation in flight finishes, no new lease, then all is gone', async () => {
    await deployComposite(gw, token, {
      name: 'retired',
      anchor: SLOW_ANCHOR,
      pool: { minWarm: 2, maxInstances: 2, prewarm: true },
    });
    const warm = await eventually('2 pre-warmed instances', 'retired', (l) => running(l).length === 2);
    const slow = callFn(gw, token, 'retired', { path: '/?ms=2000' });
    await new Promise((r) => setTimeout(r, 500));
    const deleting = api(gw.url, token, 'DELETE', '/v1/functions/retired');
    await new Promise((r) => setTimeout(r, 300));
    // Draining: the idle instance is not handed out and no new one is started for the function.
    const during = await callFn(gw, token, 'retired');
    expect(during.status, during.text).toBe(404);
    expect(during.body.type).toBe('urn:ebcc:problem:function-deleted');
    const deleted = await deleting;
    expect(deleted.status, JSON.stringify(deleted.body)).toBe(204);
    expect((await slow).status).toBe(200);
    expect(await poolInstances('retired')).toEqual([]);
    for (const i of warm) if (i.pid) expect(() => process.kill(i.pid!, 0)).toThrow();
    expect((await api(gw.url, token, 'GET', '/v1/functions/retired')).status).toBe(404);
  });

  it('deleting a function cuts an invocation that outlives the grace period, and refuses while an operator holds an instance', async () => {
    await deployComposite(gw, token, { name: 'stubborn', anchor: SLOW_ANCHOR, pool: { maxInstances: 1 } });
    const long = callFn(gw, token, 'stubborn', { path: '/?ms=20000' });
    await eventually('a busy instance', 'stubborn', (l) => running(l).length === 1);
    const t0 = Date.now();
    const deleted = await api(gw.url, token, 'DELETE', '/v1/functions/stubborn?grace=500');
    expect(deleted.status, JSON.stringify(deleted.body)).toBe(204);
    expect(Date.now() - t0).toBeLessThan(15_000);
    expect((await long).status).toBeGreaterThanOrEqual(500);
    expect(await poolInstances('stubborn')).toEqual([]);

    await deployComposite(gw, token, { name: 'held', anchor: SLOW_ANCHOR });
    const created = await api(gw.url, token, 'POST', '/v1/instances', { function: 'held' });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const refused = await api(gw.url, token, 'DELETE', '/v1/functions/held');
    expect(refused.status).toBe(409);
    expect(refused.body.operatorInstances).toBe(1);
    expect((await api(gw.url, token, 'DELETE', '/v1/functions/held?force=true')).status).toBe(204);
    expect((await api(gw.url, token, 'GET', `/v1/instances/${created.body.id}`)).status).toBe(404);
  });

  it('serves per-function metrics in the Prometheus text format to admins', async () => {
    await deployComposite(gw, token, { name: 'metered', anchor: HEALTHY_ANCHOR, pool: { maxInstances: 2 } });
    expect((await callFn(gw, token, 'metered')).headers.get('x-ebcc-start')).toBe('cold');
    expect((await callFn(gw, token, 'metered')).headers.get('x-ebcc-start')).toBe('warm');
    expect((await callFn(gw, token, 'metered')).headers.get('x-ebcc-start')).toBe('warm');

    expect((await fetch(`${gw.url}/metrics`)).status).toBe(401);
    const invoker = await gw.token('acme', ['invoke']);
    expect(
      (await fetch(`${gw.url}/metrics`, { headers: { authorization: `Bearer ${invoker}` } })).status,
    ).toBe(403);
    const response = await fetch(`${gw.url}/metrics`, { headers: { authorization: `Bearer ${token}` } });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await response.text();
    const value = (line: string) => {
      const match = text.split('\n').find((l) => l.startsWith(`${line} `));
      return match ? Number(match.slice(line.length + 1)) : undefined;
    };
    expect(value('ebcc_pool_warm_hits_total{function="metered"}')).toBe(2);
    expect(value('ebcc_pool_cold_starts_total{function="metered"}')).toBe(1);
    expect(value('ebcc_pool_lease_wait_seconds_count{function="metered",start="warm"}')).toBe(2);
    expect(value('ebcc_pool_lease_wait_seconds_count{function="metered",start="cold"}')).toBe(1);
    expect(text).toContain('ebcc_pool_lease_wait_seconds_bucket{le="0.005",function="metered",start="warm"}');
    expect(value('ebcc_pool_instances{function="metered",state="idle"}')).toBe(1);
    expect(value('ebcc_pool_instances_created_total{function="metered",cause="invocation"}')).toBe(1);
    // Churn of the other tests on this gateway: pre-warmed, replaced, drained, reaped, deleted.
    expect(
      value('ebcc_pool_instances_created_total{function="prewarmed",cause="upkeep"}'),
    ).toBeGreaterThanOrEqual(5);
    expect(value('ebcc_pool_instances_removed_total{function="prewarmed",reason="died"}')).toBe(1);
    expect(value('ebcc_pool_instances_removed_total{function="prewarmed",reason="drained"}')).toBe(2);
    expect(value('ebcc_pool_instances_removed_total{function="lazy",reason="idle"}')).toBe(lazyInstances - 1);
    expect(value('ebcc_pool_instances_removed_total{function="lazy",reason="deleted"}')).toBe(1);
  });
});
