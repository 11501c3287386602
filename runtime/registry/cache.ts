import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';

export interface CachedFile {
  path: string;
  mode: number;
  data: Uint8Array;
}

/**
 * The node-local extraction cache, keyed by version digest. Bytes live in libSQL; this is only a copy
 * that sandboxes can bind read-only. A directory appears whole or not at all (write aside, then rename).
 */
export async function materializeVersion(
  home: string,
  versionDigest: string,
  files: Iterable<CachedFile>,
): Promise<string> {
  const root = join(home, 'cache', 'versions');
  const final = join(root, versionDigest.replace(/^sha256:/, ''));
  if (existsSync(final)) return final;
  const staging = `${final}.tmp-${randomBytes(6).toString('hex')}`;
  await mkdir(staging, { recursive: true });
  await chmod(staging, 0o755);
  try {
    for (const file of files) {
      const target = join(staging, file.path);
      await mkdir(dirname(target), { recursive: true });
      await chmod(dirname(target), 0o755);
      await writeFile(target, file.data, { mode: file.mode & 0o111 ? 0o555 : 0o444 });
      await chmod(target, file.mode & 0o111 ? 0o555 : 0o444);
    }
    await rename(staging, final).catch(async (error: NodeJS.ErrnoException) => {
      // Another process materialized the same digest first; its copy is identical.
      if (error.code !== 'ENOTEMPTY' && error.code !== 'EEXIST') throw error;
      await rm(staging, { recursive: true, force: true });
    });
  } catch (error) {
    await rm(staging, { recursive: true, force: true });
    throw error;
  }
  return final;
}
