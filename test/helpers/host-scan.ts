import { closeSync, openSync, readdirSync, readFileSync, readSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Redis } from 'ioredis';

/** Every pid whose ancestry includes `root` (root included), from /proc. */
export function descendants(root: number): number[] {
  const parent = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // The command may contain spaces and parentheses: fields resume after the last ')'.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      parent.set(Number(entry), Number(fields[1]));
    } catch {
      // gone meanwhile
    }
  }
  const out = [root];
  for (let i = 0; i < out.length; i++)
    for (const [pid, ppid] of parent) if (ppid === out[i] && !out.includes(pid)) out.push(pid);
  return out;
}

export function commandLine(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ').trim();
  } catch {
    return '';
  }
}

function contains(haystack: Buffer, needles: Buffer[]): boolean {
  return needles.some((n) => haystack.includes(n));
}

/**
 * The needles to look for: each marker as bytes, and as UTF-16LE (how V8 may hold a two-byte string).
 * Several markers are looked for in one pass over the memory, files or keys.
 */
export function needlesOf(marker: string | readonly string[]): Buffer[] {
  return (typeof marker === 'string' ? [marker] : marker).flatMap((m) => [
    Buffer.from(m, 'latin1'),
    Buffer.from(m, 'utf16le'),
  ]);
}

/**
 * Whether the marker is anywhere in a process's readable memory (/proc/<pid>/mem over the readable
 * mappings of /proc/<pid>/maps). Returns the number of bytes scanned too, so a caller can tell a scan
 * that read nothing from one that found nothing.
 */
export function scanProcessMemory(
  pid: number,
  marker: string | readonly string[],
): { found: boolean; scanned: number } {
  const needles = needlesOf(marker);
  const overlap = Math.max(...needles.map((n) => n.length));
  const maps = readFileSync(`/proc/${pid}/maps`, 'utf8').trim().split('\n');
  const fd = openSync(`/proc/${pid}/mem`, 'r');
  let scanned = 0;
  try {
    for (const line of maps) {
      const [range, perms, , , , path] = line.split(/\s+/);
      if (!perms?.startsWith('r') || path === '[vvar]' || path === '[vsyscall]') continue;
      const [start, end] = range!.split('-').map((h) => BigInt(`0x${h}`)) as [bigint, bigint];
      const chunk = 8 * 1024 * 1024;
      let tail = Buffer.alloc(0);
      for (let at = start; at < end;) {
        const size = Number(end - at < BigInt(chunk) ? end - at : BigInt(chunk));
        const buffer = Buffer.alloc(size);
        let read = 0;
        try {
          read = readSync(fd, buffer, 0, size, at);
        } catch {
          break; // unreadable mapping (guard pages and the like)
        }
        if (read <= 0) break;
        scanned += read;
        const view = Buffer.concat([tail, buffer.subarray(0, read)]);
        if (contains(view, needles)) return { found: true, scanned };
        tail = view.subarray(Math.max(0, view.length - overlap));
        at += BigInt(read);
      }
    }
  } finally {
    closeSync(fd);
  }
  return { found: false, scanned };
}

/** Every regular file under `dir` whose bytes contain the marker, and how many files were read. */
export function scanFiles(
  dir: string,
  marker: string | readonly string[],
): { hits: string[]; files: number } {
  const needles = needlesOf(marker);
  const hits: string[] = [];
  let files = 0;
  const walk = (d: string) => {
    for (const entry of readdirSync(d, { withFileTypes: true })) {
      const path = join(d, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.isFile() && statSync(path).size > 0) {
        files++;
        if (contains(readFileSync(path), needles)) hits.push(path);
      }
    }
  };
  walk(dir);
  return { hits, files };
}

/** Every Redis key whose name or DUMPed value contains the marker, and how many keys were read. */
export async function scanRedis(
  redis: Redis,
  marker: string | readonly string[],
): Promise<{ hits: string[]; keys: number }> {
  const needles = needlesOf(marker);
  const hits: string[] = [];
  let keys = 0;
  let cursor = '0';
  do {
    const [next, batch] = await redis.scanBuffer(cursor, 'COUNT', 500);
    cursor = next.toString();
    for (const key of batch) {
      keys++;
      const value = await redis.dumpBuffer(key);
      if (contains(key, needles) || (value && contains(value, needles))) hits.push(key.toString());
    }
  } while (cursor !== '0');
  return { hits, keys };
}
