import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createClient, type Client } from '@libsql/client';
import { drizzle, type LibSQLDatabase } from 'drizzle-orm/libsql';
import { migrate } from 'drizzle-orm/libsql/migrator';
import * as schema from './schema.ts';
import { serializeWrites } from './write-serializer.ts';

export type Db = LibSQLDatabase<typeof schema>;
export interface Database {
  db: Db;
  client: Client;
  url: string;
  close(): void;
}

const BUSY_TIMEOUT_MS = 10_000;
/**
 * Connections of the client's pool on a local file. The pool opens a connection whenever every one it has
 * is borrowed, up to this many, and keeps each open for the life of the client: two descriptors each (the
 * database and its WAL), plus one shared `-shm`, and a page cache each. The embedded driver runs every
 * statement synchronously on the event loop and writers take one lock (write-serializer.ts), so beyond one
 * transaction and the reads started alongside it, more connections buy no parallelism, only descriptors
 * and memory. libSQL's default is 20 (41 descriptors); the soak test asserts this bound.
 */
export const LOCAL_DB_CONNECTIONS = 4;
const migrationsFolder = resolve(dirname(fileURLToPath(import.meta.url)), 'migrations');

/**
 * Opens the embedded file database (WAL) or a remote libSQL server. The same code serves both; only
 * the URL and the auth token differ.
 */
export async function openDatabase(url: string, authToken?: string): Promise<Database> {
  if (url.startsWith('file:')) mkdirSync(dirname(url.slice('file:'.length)), { recursive: true });
  // The client keeps a pool of connections, so per-connection settings go through its options: the
  // busy timeout lets writers of different processes wait for each other. libSQL's defaults already
  // give synchronous=FULL and foreign_keys=ON on every connection.
  const local = url.startsWith('file:');
  const pooled = createClient({
    url,
    authToken,
    timeout: BUSY_TIMEOUT_MS,
    ...(local ? { concurrency: LOCAL_DB_CONNECTIONS } : {}),
  });
  const client = local ? serializeWrites(pooled) : pooled;
  // WAL is a property of the file: readers proceed while the group commit writes.
  if (local) await client.execute('PRAGMA journal_mode = WAL');
  const db = drizzle(client, { schema });
  return { db, client, url, close: () => client.close() };
}

export async function migrateDatabase(database: Database): Promise<void> {
  await migrate(database.db, { migrationsFolder });
}
