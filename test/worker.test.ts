// `ebcc worker` as a real process: Redis required at start (the error names the URL), the role
// registry, its pool node registered in Redis, and a graceful stop on SIGTERM that cleans up.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { WORKER_ROLES } from '../runtime/queues/roles.ts';
import { selectRoles } from '../runtime/queues/host.ts';
import { installationId } from '../db/queries/installation.ts';
import { migrateDatabase, openDatabase } from '../db/client.ts';
import { redisNamespace } from '../runtime/queues/namespace.ts';
import { eq } from 'drizzle-orm';
import { instances } from '../db/schema.ts';
import {
  api,
  cleanupAll,
  repoRoot,
  sampleBundle,
  sampleOrder,
  startTestGateway,
  tempDir,
  upload,
} from './helpers/env.ts';
import { runEbcc } from './helpers/process.ts';

afterAll(cleanupAll);

describe('ebcc worker', () => {
  it('refuses to start without Redis, naming the URL (exit 3)', async () => {
    const home = await tempDir();
    const result = await runEbcc(['worker'], {
      EBCC_HOME: home,
      REDIS_URL: 'redis://:secret@127.0.0.1:1',
    });
    expect(result.code).toBe(3);
    expect(result.stderr).toContain('Redis at redis://:***@127.0.0.1:1 is unavailable');
    expect(result.stderr).not.toContain('secret');
  }, 120_000);

  it('rejects an unknown role with the known ones (exit 2)', async () => {
    const result = await runEbcc(['worker', '--roles', 'nope'], { EBCC_HOME: await tempDir() });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('unknown worker role(s) nope; known: pool, batch');
    expect(selectRoles(['pool']).map((r) => r.name)).toEqual(['pool']);
    expect(WORKER_ROLES.map((r) => r.name)).toContain('pool');
  }, 120_000);

  it('runs its roles, registers its pool node, and stops cleanly on SIGTERM', async () => {
    const redisUrl = inject('redisUrl');
    const home = await tempDir();
    // The worker's queues and keys carry the installation id of its database.
    const database = await openDatabase(`file:${join(home, 'ebcc.db')}`);
    await migrateDatabase(database);
    const ns = redisNamespace(await installationId(database.db));
    database.close();
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', join(repoRoot, 'runtime/cli/entry.ts'), 'worker'],
      {
        cwd: repoRoot,
        env: {
          ...process.env,
          EBCC_HOME: home,
          REDIS_URL: redisUrl,
          EBCC_LOG_LEVEL: 'warn',
          EBCC_SUPERVISED: '1',
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let out = '';
    const running = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no "running" line in 60 s:\n${out}`)), 60_000);
      const onData = (d: Buffer) => {
        out += d;
        if (/ebcc worker running as/.test(out)) {
          clearTimeout(timer);
          resolve();
        }
      };
      child.stdout.on('data', onData);
      child.stderr.on('data', (d: Buffer) => (out += d));
      child.once('exit', (code) => reject(new Error(`the worker exited (${code}) before running:\n${out}`)));
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const redis = new Redis(redisUrl);
    try {
      await running;
      expect(out).toMatch(/ebcc worker running as \S+ \(pid \d+\): roles pool, batch/);
      const queueName = ns.upkeepQueue(
        `${process.env.EBCC_NODE_ID ?? (await import('node:os')).hostname()}:${child.pid}`,
      );
      // The line comes after every role started: the node is registered by then.
      expect(await redis.zscore(ns.poolNodesKey, queueName), out).not.toBeNull();
      expect(await redis.exists(`ebcc:${queueName}:repeat:tick`)).toBe(1);

      child.kill('SIGTERM');
      expect(await exited, out).toBe(0);
      expect(out).toContain('ebcc worker stopped');
      // Its node and its upkeep queue are gone; the shared janitor schedule stays for other workers.
      expect(await redis.zscore(ns.poolNodesKey, queueName)).toBeNull();
      expect(await redis.keys(`ebcc:${queueName}:*`)).toEqual([]);
      expect(await redis.exists(`ebcc:${ns.janitorQueue}:repeat:janitor`)).toBe(1);
    } finally {
      child.kill('SIGKILL');
      redis.disconnect();
    }
  }, 120_000);

  it('runs batch items: a gateway without batch workers takes the batch, the worker runs every item', async () => {
    const gw = await startTestGateway({ batchWorkers: false });
    const token = await gw.token('acme', ['admin']);
    expect((await upload(gw.url, token, await sampleBundle())).status).toBe(201);
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', join(repoRoot, 'runtime/cli/entry.ts'), 'worker', '--roles', 'batch'],
      {
        cwd: repoRoot,
        env: {
          ...process.env,
          EBCC_HOME: await tempDir(),
          EBCC_DB_URL: gw.config.dbUrl,
          EBCC_KEK_FILE: gw.config.kek.file,
          EBCC_QUEUE_PREFIX: gw.config.queuePrefix,
          EBCC_NODE_ID: 'batch-worker',
          REDIS_URL: gw.config.redisUrl,
          EBCC_LOG_LEVEL: 'warn',
          EBCC_SUPERVISED: '1',
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d));
    child.stderr.on('data', (d: Buffer) => (out += d));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      const items = [0, 1, 2].map((i) => sampleOrder(`w-${i}`));
      const submitted = await api(gw.url, token, 'POST', '/v1/functions/order-signer/batches', items);
      expect(submitted.status).toBe(202);
      let body: any;
      for (let i = 0; i < 900; i++) {
        body = (await api(gw.url, token, 'GET', `/v1/batches/${submitted.body.id}?limit=10`)).body;
        if (body.complete) break;
        await new Promise((r) => setTimeout(r, 200));
      }
      expect(body.counts, out).toEqual({ queued: 0, succeeded: 3, failed: 0, dead: 0 });
      expect(out).toMatch(/roles batch\n/);
      // The items ran on the worker's own pool node.
      for (const item of body.items) expect(item.invocationId).toMatch(/^inv_/);
      const hosts = await gw.database.db
        .select({ host: instances.hostId })
        .from(instances)
        .where(
          eq(
            instances.functionId,
            (await gw.database.client.execute("select id from functions where name = 'order-signer'"))
              .rows[0]!.id as string,
          ),
        );
      expect(new Set(hosts.map((h) => h.host))).toEqual(new Set(['batch-worker']));
      child.kill('SIGTERM');
      expect(await exited, out).toBe(0);
    } finally {
      child.kill('SIGKILL');
    }
  }, 300_000);
});
