// Two gateways as separate `ebcc serve` processes on one host, sharing one Redis and one libSQL file:
// a burst above the pool maximum on both never double-leases an instance and never crashes (429 with
// Retry-After), each keeps its minWarm and replaces a dead instance, and SIGTERM drains gracefully:
// the invocation in flight finishes, its lease is released and the node's upkeep queue removed.
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { openDatabase, type Database } from '../db/client.ts';
import { ensureTenant, issueToken } from '../runtime/auth/tokens.ts';
import { installationId } from '../db/queries/installation.ts';
import { redisNamespace, type RedisNamespace } from '../runtime/queues/namespace.ts';
import { callFn, deployComposite, expectProblem, type CallResult } from './helpers/composite-kit.ts';
import { api, cleanupAll, tempDir, type TestGateway } from './helpers/env.ts';
import { spawnServer, type ServerProcess } from './helpers/process.ts';

/** Answers 500 if it is ever entered while it serves another invocation. */
const GUARDED_ANCHOR = `
const boot = crypto.randomUUID();
let busy = false;
let served = 0;
export default {
  async fetch(request) {
    if (busy) return Response.json({ overlap: true, boot }, { status: 500 });
    busy = true;
    try {
      const ms = Number(new URL(request.url).searchParams.get('ms') ?? '0');
      await new Promise((resolve) => setTimeout(resolve, ms));
      served += 1;
      return Response.json({ boot, served });
    } finally {
      busy = false;
    }
  },
};
`;

const redis = new Redis(inject('redisUrl'));
let servers: ServerProcess[] = [];
let database: Database;
let token: string;
let ns: RedisNamespace;
const gw = (i: number) => ({ url: servers[i]!.url }) as TestGateway;

beforeAll(async () => {
  const home = await tempDir('ebcc-scale-');
  const env = { REDIS_URL: inject('redisUrl') };
  servers = [await spawnServer(home, env)];
  servers.push(await spawnServer(home, env));
  database = await openDatabase(`file:${home}/ebcc.db`);
  ns = redisNamespace(await installationId(database.db));
  const tenant = await ensureTenant(database.db, 'acme');
  token = (
    await issueToken(database.db, { tenantId: tenant.id, name: 't', scopes: ['admin'], expiresAt: null })
  ).token;
  await deployComposite(gw(0), token, {
    name: 'guarded',
    anchor: GUARDED_ANCHOR,
    anchorLimits: { timeoutMs: 20_000 },
    pool: { maxInstances: 2, minWarm: 1 },
  });
}, 180_000);
afterAll(async () => {
  // The gateway runs under its own supervisor: killing only the launcher would orphan it.
  for (const s of servers) {
    try {
      process.kill(s.gatewayPid, 'SIGKILL');
    } catch {
      // already gone (the SIGTERM test stops one)
    }
    s.child.kill('SIGKILL');
  }
  database?.close();
  redis.disconnect();
  await cleanupAll();
});

async function ownedBy(pid: number): Promise<any[]> {
  const { body } = await api(servers[0]!.url, token, 'GET', '/v1/instances');
  return (body.instances as any[]).filter(
    (s) =>
      s.annotations['ebcc.function'] === 'guarded' && Number(s.annotations['ebcc.supervisorPid']) === pid,
  );
}

async function eventually<T>(what: string, probe: () => Promise<T>, ok: (v: T) => boolean, ms = 30_000) {
  const deadline = Date.now() + ms;
  let last = await probe();
  while (!ok(last) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 250));
    last = await probe();
  }
  if (!ok(last)) throw new Error(`${what}: not reached; last ${JSON.stringify(last)}`);
  return last;
}

describe('two gateway processes, one Redis, one database', () => {
  it('a burst above the maximum on both: no instance serves two invocations at once, the rest get 429', async () => {
    const calls: Promise<CallResult & { gateway: number }>[] = [];
    for (let i = 0; i < 32; i++) {
      const g = i % 2;
      calls.push(callFn(gw(g), token, 'guarded', { path: '/?ms=1200' }).then((r) => ({ ...r, gateway: g })));
    }
    const results = await Promise.all(calls);
    const odd = results.filter((r) => r.status !== 200 && r.status !== 429);
    expect(odd.map((r) => `${r.status} ${r.text}`)).toEqual([]);
    for (const r of results.filter((x) => x.status === 429)) {
      expectProblem(r, 429, 'pool-exhausted', false);
      expect(Number(r.headers.get('retry-after'))).toBeGreaterThan(0);
    }
    for (const g of [0, 1]) {
      const mine = results.filter((r) => r.gateway === g);
      const ok = mine.filter((r) => r.status === 200);
      expect(ok.length, `gateway ${g}`).toBeGreaterThan(0);
      expect(
        mine.some((r) => r.status === 429),
        `gateway ${g} sent some 429s`,
      ).toBe(true);
      const cids = new Set(ok.map((r) => r.headers.get('x-ebcc-cid')));
      expect(cids.size).toBeLessThanOrEqual(2);
      // Every instance counted its invocations one after another: no count was seen twice.
      for (const boot of new Set(ok.map((r) => r.body.boot))) {
        const counts = ok.filter((r) => r.body.boot === boot).map((r) => r.body.served);
        expect(new Set(counts).size).toBe(counts.length);
      }
    }
    // Instances are host-local to the process that made them: the gateways never shared one.
    const [a, b] = [0, 1].map(
      (g) =>
        new Set(
          results.filter((r) => r.gateway === g && r.status === 200).map((r) => r.headers.get('x-ebcc-cid')),
        ),
    );
    expect([...a!].filter((cid) => b!.has(cid))).toEqual([]);
    // Nothing crashed, and no lease is left behind.
    for (const s of servers) expect(s.child.exitCode).toBeNull();
    for (const cid of [...a!, ...b!]) expect(await redis.exists(ns.leasePrefix + cid)).toBe(0);
  });

  it('each gateway keeps its minWarm instance and replaces one that dies', async () => {
    for (const s of servers)
      await eventually(
        'a running instance',
        () => ownedBy(s.gatewayPid),
        (l) => l.some((i) => i.status === 'running'),
      );
    const [victim] = (await ownedBy(servers[1]!.gatewayPid)).filter((i) => i.status === 'running');
    process.kill(Number(victim.pid), 'SIGKILL');
    await eventually(
      'the dead instance replaced',
      () => ownedBy(servers[1]!.gatewayPid),
      (l) => !l.some((i) => i.id === victim.id) && l.some((i) => i.status === 'running'),
    );
    const r = await callFn(gw(1), token, 'guarded');
    expect(r.status).toBe(200);
    expect(r.headers.get('x-ebcc-start')).toBe('warm');
  });

  it('SIGTERM: the invocation in flight finishes, its lease is released, the node leaves Redis', async () => {
    const s = servers[0]!;
    const queueName = (await redis.zrange(ns.poolNodesKey, '0', '-1')).find((n) =>
      n.endsWith(`_${s.gatewayPid}`),
    );
    expect(queueName).toBeDefined();
    const slow = callFn(gw(0), token, 'guarded', { path: '/?ms=2000' });
    const busy = await eventually(
      'a busy instance',
      () => ownedBy(s.gatewayPid),
      (l) => l.some((i) => Number(i.annotations['ebcc.inflight']) > 0),
    );
    const cid = busy.find((i) => Number(i.annotations['ebcc.inflight']) > 0).id;
    expect(await redis.exists(ns.leasePrefix + cid)).toBe(1);
    s.child.kill('SIGTERM');
    const result = await slow;
    expect(result.status, result.text).toBe(200);
    expect((await s.exited).code).toBe(0);
    expect(await redis.exists(ns.leasePrefix + cid)).toBe(0);
    expect(await redis.zscore(ns.poolNodesKey, queueName!)).toBeNull();
    expect(await redis.keys(`ebcc:${queueName}:*`)).toEqual([]);
    // The other gateway serves on.
    expect((await callFn(gw(1), token, 'guarded')).status).toBe(200);
  });
});
