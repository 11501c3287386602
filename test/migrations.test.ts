import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { migrateDatabase, openDatabase } from '../db/client.ts';
import { cleanupAll, tempDir } from './helpers/env.ts';

afterAll(cleanupAll);

describe('migrations', () => {
  it('build the whole schema on an empty database, once, and are idempotent', async () => {
    const database = await openDatabase(`file:${join(await tempDir(), 'fresh.db')}`);
    await migrateDatabase(database);
    await migrateDatabase(database);
    const tables = (
      await database.client.execute("select name from sqlite_master where type = 'table' order by name")
    ).rows.map((r) => r.name);
    expect(tables).toEqual(
      expect.arrayContaining([
        'api_tokens',
        'blobs',
        'eid_blocks',
        'enclaves',
        'function_versions',
        'functions',
        'instances',
        'invocations',
        'stage_executions',
        'stages',
        'tenants',
        'version_files',
      ]),
    );
    const applied = await database.client.execute('select count(*) as n from __drizzle_migrations');
    expect(Number(applied.rows[0]!.n)).toBeGreaterThan(0);
    expect((await database.client.execute('pragma journal_mode')).rows[0]!.journal_mode).toBe('wal');
    expect((await database.client.execute('pragma foreign_keys')).rows[0]!.foreign_keys).toBe(1);
    database.close();
  });
});
