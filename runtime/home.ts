import { chmodSync, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Lays out the data directory. Sandboxed code runs as other, unprivileged uids and must be able to
 * reach the read-only extraction cache, but nothing else: the home is traversable but not listable,
 * and the database and spooled uploads stay private to us.
 */
export function prepareHome(home: string, dbUrl: string): void {
  mkdirSync(home, { recursive: true });
  chmodSync(home, 0o711);
  for (const dir of ['cache', join('cache', 'versions')]) {
    mkdirSync(join(home, dir), { recursive: true });
    chmodSync(join(home, dir), 0o711);
  }
  mkdirSync(join(home, 'tmp'), { recursive: true, mode: 0o700 });
  chmodSync(join(home, 'tmp'), 0o700);
  if (dbUrl.startsWith('file:')) {
    const path = dbUrl.slice('file:'.length);
    for (const file of [path, `${path}-wal`, `${path}-shm`]) if (existsSync(file)) chmodSync(file, 0o600);
  }
}
