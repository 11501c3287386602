// `ebcc worker` as a real process: Redis required at start (the error names the URL), the role
// registry, its pool node registered in Redis, and a graceful stop on SIGTERM that cleans up.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { WORKER_ROLES } from '../runtime/queues/roles.ts';
import { selectRoles } from '../runtime/queues/host.ts';
import { NODES_KEY } from '../runtime/pool/upkeep.ts';
import { cleanupAll, repoRoot, tempDir } from './helpers/env.ts';
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
  });

  it('rejects an unknown role with the known ones (exit 2)', async () => {
    const result = await runEbcc(['worker', '--roles', 'nope'], { EBCC_HOME: await tempDir() });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('unknown worker role(s) nope; known: pool');
    expect(selectRoles(['pool']).map((r) => r.name)).toEqual(['pool']);
    expect(WORKER_ROLES.map((r) => r.name)).toContain('pool');
  });

  it('runs its roles, registers its pool node, and stops cleanly on SIGTERM', async () => {
    const redisUrl = inject('redisUrl');
    const home = await tempDir();
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
    child.stdout.on('data', (d: Buffer) => (out += d));
    child.stderr.on('data', (d: Buffer) => (out += d));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const redis = new Redis(redisUrl);
    try {
      const queueName = `pool.${(process.env.EBCC_NODE_ID ?? (await import('node:os')).hostname()).replace(/[^A-Za-z0-9_.-]/g, '_')}_${child.pid}`;
      for (let i = 0; i < 200 && !(await redis.zscore(NODES_KEY, queueName)); i++)
        await new Promise((r) => setTimeout(r, 100));
      expect(out).toMatch(/ebcc worker running as \S+ \(pid \d+\): roles pool/);
      expect(await redis.zscore(NODES_KEY, queueName), out).not.toBeNull();
      expect(await redis.exists(`ebcc:${queueName}:repeat:tick`)).toBe(1);

      child.kill('SIGTERM');
      expect(await exited, out).toBe(0);
      expect(out).toContain('ebcc worker stopped');
      // Its node and its upkeep queue are gone; the shared janitor schedule stays for other workers.
      expect(await redis.zscore(NODES_KEY, queueName)).toBeNull();
      expect(await redis.keys(`ebcc:${queueName}:*`)).toEqual([]);
      expect(await redis.exists('ebcc:pool-janitor:repeat:janitor')).toBe(1);
    } finally {
      child.kill('SIGKILL');
      redis.disconnect();
    }
  });
});
