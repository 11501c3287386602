import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import { afterAll, describe, expect, it } from 'vitest';
import { migrateDatabase, openDatabase } from '../db/client.ts';
import { tenants } from '../db/schema.ts';
import { GroupCommitter } from '../runtime/artifacts/group-commit.ts';
import { EidAllocator } from '../runtime/stages/eid-allocator.ts';
import { cleanupAll, tempDir } from './helpers/env.ts';

afterAll(cleanupAll);

async function freshDb() {
  const database = await openDatabase(`file:${join(await tempDir(), 'eids.db')}`);
  await migrateDatabase(database);
  return database;
}

describe('EID allocation', () => {
  it('is unique across allocators, increasing within each, and never reuses a block after a crash', async () => {
    const database = await freshDb();
    const a = new EidAllocator(database.db, 'a', 16);
    const b = new EidAllocator(database.db, 'b', 16);
    const fromA: number[] = [];
    const fromB: number[] = [];
    await Promise.all(
      Array.from({ length: 100 }, async () => {
        fromA.push(await a.allocate());
        fromB.push(await b.allocate());
      }),
    );
    expect(new Set([...fromA, ...fromB]).size).toBe(200);
    expect(fromA).toEqual([...fromA].sort((x, y) => x - y));
    // A new allocator (a restarted process) starts past every block ever handed out.
    const restarted = new EidAllocator(database.db, 'a', 16);
    const next = await restarted.allocate();
    expect(next).toBeGreaterThan(Math.max(...fromA, ...fromB));
    const blocks = await database.client.execute('select count(*) as n from eid_blocks');
    expect(Number(blocks.rows[0]!.n)).toBeLessThanOrEqual(15);
    database.close();
  });

  it('never overlaps between processes sharing the database file', async () => {
    const database = await freshDb();
    const run = (owner: string) =>
      new Promise<number[]>((resolve, reject) => {
        const child = spawn(
          process.execPath,
          [
            '--import',
            'tsx',
            join(import.meta.dirname, 'helpers', 'allocate-eids.ts'),
            database.url,
            owner,
            '200',
            '4',
          ],
          {
            stdio: ['ignore', 'pipe', 'inherit'],
          },
        );
        let out = '';
        child.stdout.on('data', (d: Buffer) => (out += d));
        child.once('exit', (code) =>
          code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`allocator ${owner} exited ${code}`)),
        );
      });
    const [p, q] = await Promise.all([run('p'), run('q')]);
    expect(new Set([...p, ...q]).size).toBe(400);
    database.close();
  }, 60_000);
});

describe('group commit', () => {
  it('commits concurrent writes in few transactions, each caller waiting for durability', async () => {
    const database = await freshDb();
    const committer = new GroupCommitter(database.db);
    await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        committer.submit((tx) => tx.insert(tenants).values({ id: `t${i}`, name: `tenant-${i}` })),
      ),
    );
    expect(committer.writes).toBe(200);
    expect(committer.batches).toBeLessThan(10);
    const count = await database.db
      .select({ n: sql<number>`count(*)` })
      .from(tenants)
      .get();
    expect(count?.n).toBe(200);
    database.close();
  });

  it('fails only the bad write of a batch', async () => {
    const database = await freshDb();
    const committer = new GroupCommitter(database.db);
    const results = await Promise.allSettled([
      committer.submit((tx) => tx.insert(tenants).values({ id: 'ok1', name: 'one' })),
      committer.submit((tx) => tx.insert(tenants).values({ id: 'dup', name: 'one' })),
      committer.submit((tx) => tx.insert(tenants).values({ id: 'ok2', name: 'two' })),
    ]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    const names = (await database.db.select().from(tenants)).map((t) => t.id).sort();
    expect(names).toEqual(['ok1', 'ok2']);
    await committer.close();
    await expect(committer.submit(async () => undefined)).rejects.toThrow('closed');
    database.close();
  });
});
