// Instance leases as Redis locks, across real processes: no two holders at once, fencing tokens that
// only grow, renewal while held, and a dead holder's lease reclaimed after its TTL.
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { LeaseStore } from '../runtime/pool/leases.ts';
import { redisNamespace } from '../runtime/queues/namespace.ts';
import { repoRoot } from './helpers/env.ts';

const redisUrl = inject('redisUrl');
const redis = new Redis(redisUrl);
const installation = `inst_leases${process.pid}`;
const keys = redisNamespace(installation);
const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
  redis.disconnect();
});

function contender(args: string[]): {
  child: ChildProcess;
  lines: () => any[];
  exited: Promise<number | null>;
} {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', join(repoRoot, 'test/helpers/lease-contender.ts'), redisUrl, ...args],
    {
      cwd: repoRoot,
      env: { ...process.env, EBCC_TEST_INSTALLATION: installation },
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  children.push(child);
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d));
  return {
    child,
    lines: () =>
      out
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l)),
    exited: new Promise((resolve) => child.once('exit', (code) => resolve(code))),
  };
}

const unique = () => `test-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;

describe('leases across processes', () => {
  it('three processes contending for two resources never hold one at the same time', async () => {
    const resources = [unique(), unique()];
    const procs = [0, 1, 2].map(() => contender(['contend', resources.join(','), '25', '3']));
    expect(await Promise.all(procs.map((p) => p.exited))).toEqual([0, 0, 0]);
    const holds = procs.flatMap((p, i) => p.lines().map((h) => ({ ...h, proc: i })));
    expect(holds.length).toBe(75);
    for (const resource of resources) {
      const mine = holds.filter((h) => h.resource === resource).sort((a, b) => a.start - b.start);
      expect(mine.length).toBeGreaterThan(0);
      for (let i = 1; i < mine.length; i++) {
        // Each hold starts after the previous one ended, and under a larger fencing token.
        expect(mine[i].start).toBeGreaterThanOrEqual(mine[i - 1].end);
        expect(mine[i].token).toBeGreaterThan(mine[i - 1].token);
      }
    }
    // The contention was real: more than one process held each resource at some point.
    for (const resource of resources)
      expect(new Set(holds.filter((h) => h.resource === resource).map((h) => h.proc)).size).toBeGreaterThan(
        1,
      );
    for (const resource of resources) expect(await redis.exists(keys.leasePrefix + resource)).toBe(0);
  });

  it('a lease held by a process that dies is reclaimed once its TTL passes, under a larger token', async () => {
    const resource = unique();
    const holder = contender(['hold', resource, '1500']);
    for (let i = 0; i < 200 && holder.lines().length === 0; i++) await new Promise((r) => setTimeout(r, 50));
    const [{ held, token }] = holder.lines();
    expect(held).toBe(true);
    const store = new LeaseStore(redis, redisUrl, 'test', { ttlMs: 5_000, keys });
    expect(await store.tryAcquire(resource)).toBeNull();
    holder.child.kill('SIGKILL');
    await holder.exited;
    let lease = null;
    for (let i = 0; i < 100 && !lease; i++) {
      lease = await store.tryAcquire(resource);
      if (!lease) await new Promise((r) => setTimeout(r, 100));
    }
    expect(lease).not.toBeNull();
    expect(lease!.token).toBeGreaterThan(token);
    expect(await store.holderOf(resource)).toBe(`${lease!.token}:test`);
    await lease!.release();
    expect(await store.holderOf(resource)).toBeNull();
  });

  it('a live holder keeps its lease past the TTL by renewing it; release only frees its own lease', async () => {
    const resource = unique();
    const store = new LeaseStore(redis, redisUrl, 'a', { ttlMs: 2_000, keys });
    const other = new LeaseStore(redis, redisUrl, 'b', { ttlMs: 2_000, keys });
    const lease = (await store.tryAcquire(resource))!;
    await new Promise((r) => setTimeout(r, 5_000));
    expect(lease.lost).toBe(false);
    expect(await other.tryAcquire(resource)).toBeNull();
    // A stale token (an older holder's) neither renews nor releases the current lease.
    expect(await other.release(resource, lease.token - 1)).toBe(false);
    expect(await other.renew(resource, lease.token - 1)).toBe(false);
    expect(await store.holderOf(resource)).toBe(`${lease.token}:a`);
    await lease.release();
    const next = await other.tryAcquire(resource);
    expect(next!.token).toBeGreaterThan(lease.token);
    await next!.release();
  });

  it('tokens stay above the floor a holder has seen (Redis restarted empty, counter back at 1)', async () => {
    const resource = unique();
    const store = new LeaseStore(redis, redisUrl, 'a', { ttlMs: 2_000, keys });
    const floor = Number(await redis.get(keys.fenceKey)) + 1_000_000;
    const lease = (await store.tryAcquire(resource, floor))!;
    expect(lease.token).toBe(floor + 1);
    await lease.release();
    expect((await store.tryAcquire(unique()))!.token).toBeGreaterThan(floor + 1);
  });

  it('two installations sharing one Redis lease the same resource name independently', async () => {
    const resource = unique();
    const mine = new LeaseStore(redis, redisUrl, 'a', { ttlMs: 2_000, keys });
    const theirs = new LeaseStore(redis, redisUrl, 'b', {
      ttlMs: 2_000,
      keys: redisNamespace(`inst_other${process.pid}`),
    });
    const a = await mine.tryAcquire(resource);
    const b = await theirs.tryAcquire(resource);
    expect(a).not.toBeNull();
    expect(b).not.toBeNull();
    expect(await mine.tryAcquire(resource)).toBeNull();
    expect(await redis.get(keys.leasePrefix + resource)).toBe(`${a!.token}:a`);
    await Promise.all([a!.release(), b!.release()]);
  });
});
