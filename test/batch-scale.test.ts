// Batches across processes: two gateways and two workers, each a separate `ebcc serve` process, share
// one libSQL file and one private Redis that this file starts (so it may stop and start it).
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { and, eq, inArray, isNotNull } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrateDatabase, openDatabase, type Database } from '../db/client.ts';
import { batchItems, instances, invocations } from '../db/schema.ts';
import { ensureTenant, issueToken } from '../runtime/auth/tokens.ts';
import { startPrivateRedis, type PrivateRedis } from '../scripts/lib/redis-server.ts';
import { api, cleanupAll, sampleBundle, sampleOrder, tempDir, upload } from './helpers/env.ts';
import { spawnServer, type ServerProcess } from './helpers/process.ts';

let redis: PrivateRedis;
let database: Database;
let dbUrl: string;
let kekFile: string;
let token: string;
const prefix = `s${randomBytes(6).toString('hex')}`;
const processes: ServerProcess[] = [];
let gateways: ServerProcess[] = [];
let workers: ServerProcess[] = [];

async function spawn(
  role: 'gateway' | 'worker',
  name: string,
  database: Record<string, string> = { EBCC_DB_URL: dbUrl, EBCC_KEK_FILE: kekFile },
): Promise<ServerProcess> {
  const proc = await spawnServer(await tempDir(`ebcc-${name}-`), {
    ...database,
    REDIS_URL: redis.url,
    EBCC_QUEUE_PREFIX: prefix,
    EBCC_NODE_ID: name,
    EBCC_BATCH_WORKERS: role === 'worker' ? '1' : '0',
    EBCC_BATCH_CONCURRENCY: '8',
    // A killed worker's jobs are taken back after about this long.
    EBCC_BATCH_LOCK_MS: '2000',
  });
  processes.push(proc);
  return proc;
}

async function stopAll(): Promise<void> {
  await Promise.all(
    processes.map(async (p) => {
      if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGTERM');
      await p.exited;
    }),
  );
}

async function waitComplete(url: string, id: string, timeoutMs = 120_000): Promise<any> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { status, body } = await api(url, token, 'GET', `/v1/batches/${id}?limit=1`);
    expect(status).toBe(200);
    if (body.complete) return body;
    if (Date.now() > deadline)
      throw new Error(`batch ${id} did not complete: ${JSON.stringify(body.counts)}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

async function waitDone(url: string, id: string, atLeast: number): Promise<void> {
  for (let i = 0; i < 600; i++) {
    const { body } = await api(url, token, 'GET', `/v1/batches/${id}?limit=1`);
    if (body.done >= atLeast) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`batch ${id} never reached ${atLeast} done items`);
}

async function submitOrders(url: string, tag: string, n: number): Promise<string> {
  const items = Array.from({ length: n }, (_, i) => sampleOrder(`${tag}-${i}`));
  const { status, body } = await api(url, token, 'POST', '/v1/functions/order-signer/batches', items);
  expect(status, JSON.stringify(body)).toBe(202);
  return body.id;
}

/** Every item of the batch succeeded with a result of its own, recorded once. */
async function expectExactlyOnce(batchId: string, n: number, tag: string) {
  const rows = await database.db.select().from(batchItems).where(eq(batchItems.batchId, batchId));
  expect(rows).toHaveLength(n);
  expect(rows.filter((r) => r.status === 'succeeded')).toHaveLength(n);
  const orders = rows.map((r) => JSON.parse(r.resultInline!.toString('utf8')).order).sort();
  expect(orders).toEqual(Array.from({ length: n }, (_, i) => `${tag}-${i}`).sort());
  const invocationIds = rows.map((r) => r.invocationId!);
  expect(new Set(invocationIds).size).toBe(n);
  // Each recorded result points at a real, successful invocation of its own.
  const recorded = await database.db
    .select({ id: invocations.id, status: invocations.status, cid: invocations.cid })
    .from(invocations)
    .where(inArray(invocations.id, invocationIds));
  expect(recorded).toHaveLength(n);
  expect(recorded.every((r) => r.status === 'ok')).toBe(true);
  return recorded;
}

// Nodes sharing a database share the key-encryption key of its sealed artifacts.
beforeAll(async () => {
  redis = await startPrivateRedis();
  const home = await tempDir('ebcc-scale-db-');
  dbUrl = `file:${join(home, 'shared.db')}`;
  kekFile = join(home, 'kek');
  await writeFile(kekFile, randomBytes(32), { mode: 0o600 });
  database = await openDatabase(dbUrl);
  await migrateDatabase(database);
  const tenant = await ensureTenant(database.db, 'acme');
  token = (await issueToken(database.db, { tenantId: tenant.id, name: 't', scopes: ['admin'] })).token;
  gateways = await Promise.all([spawn('gateway', 'gw-1'), spawn('gateway', 'gw-2')]);
  workers = await Promise.all([spawn('worker', 'worker-1'), spawn('worker', 'worker-2')]);
  const deployed = await upload(gateways[0]!.url, token, await sampleBundle());
  expect(deployed.status, JSON.stringify(deployed.body)).toBe(201);
}, 600_000);

// Processes spawned and killed on a shared 2-core machine: each test gets minutes, not seconds.
afterAll(async () => {
  await stopAll();
  database?.close();
  await redis?.dispose();
  await cleanupAll();
});

describe('two gateways and two workers as separate processes', () => {
  it('share the work, and a worker killed mid-batch loses no item and duplicates no result', async () => {
    const n = 120;
    const id = await submitOrders(gateways[0]!.url, 'k', n);
    await waitDone(gateways[1]!.url, id, 10);
    process.kill(workers[0]!.gatewayPid, 'SIGKILL');
    await workers[0]!.exited;
    const atKill = await api(gateways[1]!.url, token, 'GET', `/v1/batches/${id}?limit=1`);
    expect(atKill.body.done).toBeLessThan(n);
    const done = await waitComplete(gateways[1]!.url, id);
    expect(done.counts).toEqual({ queued: 0, succeeded: n, failed: 0, dead: 0 });
    const recorded = await expectExactlyOnce(id, n, 'k');
    // Both workers ran items: their instances are recorded under their node ids.
    const hosts = await database.db
      .select({ cid: instances.cid, host: instances.hostId })
      .from(instances)
      .where(
        inArray(
          instances.cid,
          recorded.map((r) => r.cid!),
        ),
      );
    expect(new Set(hosts.map((h) => h.host))).toEqual(new Set(['worker-1', 'worker-2']));
    // The gateways ran none: they only took the batch in and reported on it.
    workers[0] = await spawn('worker', 'worker-1');
  }, 300_000);

  it('survives a Redis restart mid-batch: unfinished items are given to Redis again from libSQL', async () => {
    const n = 120;
    const id = await submitOrders(gateways[1]!.url, 'r', n);
    await waitDone(gateways[0]!.url, id, 10);
    await redis.stop();
    const atStop = await api(gateways[0]!.url, token, 'GET', `/v1/batches/${id}?limit=1`);
    expect(atStop.body.done).toBeLessThan(n);
    await new Promise((r) => setTimeout(r, 1_000));
    await redis.start();
    const done = await waitComplete(gateways[0]!.url, id);
    expect(done.counts).toEqual({ queued: 0, succeeded: n, failed: 0, dead: 0 });
    await expectExactlyOnce(id, n, 'r');
  }, 300_000);

  it('takes a batch while Redis is down and runs it once Redis is back', async () => {
    await redis.stop();
    const items = [sampleOrder('down-0'), sampleOrder('down-1')];
    const { status, body } = await api(
      gateways[0]!.url,
      token,
      'POST',
      '/v1/functions/order-signer/batches',
      items,
    );
    expect(status).toBe(202);
    expect(body.enqueued).toBe(false);
    await redis.start();
    await waitComplete(gateways[0]!.url, body.id);
    await expectExactlyOnce(body.id, 2, 'down');
  }, 300_000);

  it('fires a cron trigger once per tick across both workers', async () => {
    const deployed = await upload(
      gateways[0]!.url,
      token,
      await sampleBundle((m) => {
        m.name = 'ticker';
        m.triggers.http.route = undefined;
        m.triggers.cron = [{ schedule: '* * * * * *', input: sampleOrder('tick') }];
      }),
    );
    expect(deployed.status, JSON.stringify(deployed.body)).toBe(201);
    const cronItems = () =>
      database.db
        .select()
        .from(batchItems)
        .where(and(eq(batchItems.source, 'cron'), isNotNull(batchItems.invocationId)));
    const deadline = Date.now() + 60_000;
    while ((await cronItems()).length < 4 && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 250));
    const del = await api(gateways[0]!.url, token, 'DELETE', '/v1/functions/ticker?force=true');
    expect(del.status).toBeLessThan(300);
    await new Promise((r) => setTimeout(r, 1_500));
    const ticks = await cronItems();
    expect(ticks.length).toBeGreaterThanOrEqual(4);
    // One item per tick time, and one invocation per item: no tick ran twice, on either worker.
    expect(new Set(ticks.map((t) => t.seq)).size).toBe(ticks.length);
    const fn = ticks[0]!.functionId;
    const runs = await database.db
      .select({ id: invocations.id })
      .from(invocations)
      .where(and(eq(invocations.trigger, 'cron'), eq(invocations.functionId, fn)));
    expect(runs.length).toBe(ticks.length);
    expect(new Set(ticks.map((t) => t.status))).toEqual(new Set(['succeeded']));
  }, 300_000);

  it("a second installation on the same Redis and queue prefix takes none of the first one's items", async () => {
    // Its own database (in its own home), so its own installation id; the same Redis and prefix.
    const other = await spawn('worker', 'other-install', {});
    const otherDb = await openDatabase(`file:${join(other.home, 'ebcc.db')}`);
    try {
      const tenant = await ensureTenant(otherDb.db, 'acme');
      const otherToken = (await issueToken(otherDb.db, { tenantId: tenant.id, name: 't', scopes: ['admin'] }))
        .token;
      expect((await upload(other.url, otherToken, await sampleBundle())).status).toBe(201);
      const n = 60;
      const id = await submitOrders(gateways[0]!.url, 'iso', n);
      // The other installation's workers are live on that Redis: they run a batch of their own meanwhile.
      const own = await api(
        other.url,
        otherToken,
        'POST',
        '/v1/functions/order-signer/batches',
        Array.from({ length: 5 }, (_, i) => sampleOrder(`own-${i}`)),
      );
      expect(own.status).toBe(202);
      const done = await waitComplete(gateways[1]!.url, id);
      expect(done.counts).toEqual({ queued: 0, succeeded: n, failed: 0, dead: 0 });
      await expectExactlyOnce(id, n, 'iso');
      for (let i = 0; ; i++) {
        expect(i, "the other installation's own batch completes").toBeLessThan(240);
        const mine = await api(other.url, otherToken, 'GET', `/v1/batches/${own.body.id}?limit=1`);
        if (mine.body.complete) {
          expect(mine.body.counts.succeeded).toBe(5);
          break;
        }
        await new Promise((r) => setTimeout(r, 250));
      }
      // It never took a job of the first installation (it would have found no such item).
      expect(other.output()).not.toContain('names an item this database does not hold');
      const ran = await otherDb.db.select({ id: invocations.id }).from(invocations);
      expect(ran).toHaveLength(5);
    } finally {
      otherDb.close();
    }
  }, 600_000);
});
