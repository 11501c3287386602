// The database client's descriptors are a bounded pool, not a leak (issue 9 §5, docs/reliability.md): the
// libSQL client opens a connection whenever all of its connections are borrowed and keeps it for its
// life, so a process holds at most LOCAL_DB_CONNECTIONS of them however much work it does.
import { readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LOCAL_DB_CONNECTIONS, migrateDatabase, openDatabase, type Database } from '../db/client.ts';
import { cleanupAll, tempDir } from './helpers/env.ts';

let database: Database;
let file: string;

/** This process's open descriptors on the database, by file: `{ '': n, '-wal': n, '-shm': n }`. */
function handles(): Record<string, number> {
  const found: Record<string, number> = {};
  for (const fd of readdirSync('/proc/self/fd')) {
    let target: string;
    try {
      target = readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      continue; // the descriptor readdir itself used, closed since
    }
    if (target.startsWith(file))
      found[target.slice(file.length)] = (found[target.slice(file.length)] ?? 0) + 1;
  }
  return found;
}

/** Reads, writes and transactions all at once, as a busy gateway issues them. */
async function burst(round: number): Promise<void> {
  const reads = () =>
    Array.from({ length: 50 }, () => database.client.execute('select count(*) from invocations'));
  const tx = await database.client.transaction('write');
  // Reads started while a transaction holds a connection still get theirs (the pool is never exhausted
  // by the one transaction the write lock lets through).
  await Promise.all(reads());
  await tx.execute({ sql: 'create table if not exists soak_probe (round integer)', args: [] });
  await tx.execute({ sql: 'insert into soak_probe (round) values (?)', args: [round] });
  await tx.commit();
  await Promise.all([
    ...reads(),
    ...Array.from({ length: 10 }, (_, i) =>
      database.client.execute({ sql: 'insert into soak_probe (round) values (?)', args: [round * 100 + i] }),
    ),
    database.client.batch(['select 1', 'select count(*) from soak_probe'], 'read'),
  ]);
}

beforeAll(async () => {
  file = join(await tempDir('ebcc-db-pool-'), 'ebcc.db');
  database = await openDatabase(`file:${file}`);
  await migrateDatabase(database);
});

afterAll(async () => {
  database?.close();
  await cleanupAll();
});

describe('the local database client', () => {
  it(`holds at most ${LOCAL_DB_CONNECTIONS} connections, and stops there however much work follows`, async () => {
    await burst(1);
    // 50 concurrent reads borrow every connection the pool may open: it is full now.
    const full = handles();
    expect(full).toEqual({ '': LOCAL_DB_CONNECTIONS, '-wal': LOCAL_DB_CONNECTIONS, '-shm': 1 });
    for (let round = 2; round <= 20; round++) await burst(round);
    expect(handles()).toEqual(full);
    const rows = await database.client.execute('select count(*) from soak_probe');
    expect(Number(rows.rows[0]![0])).toBe(20 * 11);
  });
});
