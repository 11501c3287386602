/**
 * Deterministic bundle packing for `ebcc deploy <dir>`.
 *
 * The tar stream is written by hand (ustar, plus a PAX `path` record for paths
 * longer than 100 bytes) so that every byte is under our control: entries are
 * sorted by the UTF-8 bytes of their path, only regular files are stored (no
 * directory entries), mtime is 0, uid/gid are 0, owner names are empty, modes
 * are 0644 or 0755, and the gzip header carries no name, mtime 0 and OS byte
 * 255 ("unknown"). Packing the same tree twice with the same Node/zlib gives
 * byte-identical output. Every path is checked with the same rules and limits
 * as the reader, so a bundle we pack is a bundle we accept.
 */
import { createHash, randomBytes } from 'node:crypto';
import { constants as fsConstants, createWriteStream } from 'node:fs';
import { lstat, open, readdir, rename, rm, stat } from 'node:fs/promises';
import nodePath from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import {
  BundleArchiveError,
  BundlePathRegistry,
  normalizeBundlePath,
  normalizeFileMode,
  resolveArchiveLimits,
  type ArchiveLimits,
} from './archive.ts';

export interface PackResult {
  /** Lowercase hex sha256 of the written `.tar.gz`. */
  sha256: string;
  /** Size of the written `.tar.gz` in bytes. */
  size: number;
}

export interface PackFileInput {
  data: Buffer | string;
  /** Only the exec bit is kept; defaults to 0o644. */
  mode?: number;
}

export type PackFilesInput = Record<string, Buffer | string | PackFileInput>;

/** Skipped at every depth when packing a directory. */
export const PACK_SKIPPED_NAMES: ReadonlySet<string> = new Set(['node_modules', '.git']);

interface PackEntry {
  path: string;
  mode: 0o644 | 0o755;
  size: number;
  read: () => AsyncIterable<Buffer> | Iterable<Buffer>;
}

const BLOCK = 512;
const MAX_OCTAL_SIZE = 0o77777777777; // 11 octal digits in the ustar size field

const comparePaths = (a: string, b: string): number => Buffer.compare(Buffer.from(a), Buffer.from(b));

const padding = (size: number): number => (BLOCK - (size % BLOCK)) % BLOCK;

const octal = (n: number, digits: number): string => n.toString(8).padStart(digits, '0');

function ustarHeader(name: Buffer, size: number, mode: number, type: '0' | 'x'): Buffer {
  const h = Buffer.alloc(BLOCK);
  name.copy(h, 0, 0, Math.min(name.length, 100));
  h.write(`${octal(mode, 7)}\0`, 100, 'ascii');
  h.write('0000000\0', 108, 'ascii'); // uid
  h.write('0000000\0', 116, 'ascii'); // gid
  h.write(`${octal(size, 11)}\0`, 124, 'ascii');
  h.write('00000000000\0', 136, 'ascii'); // mtime
  h.fill(0x20, 148, 156); // checksum placeholder
  h.write(type, 156, 'ascii');
  h.write('ustar\0' + '00', 257, 'binary');
  // uname / gname stay empty
  h.write('0000000\0', 329, 'ascii'); // devmajor
  h.write('0000000\0', 337, 'ascii'); // devminor
  let sum = 0;
  for (const byte of h) sum += byte;
  h.write(`${octal(sum, 6)}\0 `, 148, 'ascii');
  return h;
}

function paxRecord(key: string, value: string): Buffer {
  const body = ` ${key}=${value}\n`;
  const bodyLen = Buffer.byteLength(body);
  // The length prefix counts its own digits.
  const digits = String(bodyLen).length;
  let len = bodyLen + digits;
  if (String(len).length > digits) len += 1;
  return Buffer.from(`${len}${body}`);
}

/** Header block(s) for one regular file: a PAX header first when the path exceeds 100 bytes. */
function fileHeaders(path: string, size: number, mode: number): Buffer[] {
  if (size > MAX_OCTAL_SIZE) throw new BundleArchiveError(path, 'file is too large for a tar header');
  const name = Buffer.from(path);
  if (name.length <= 100) return [ustarHeader(name, size, mode, '0')];
  const record = paxRecord('path', path);
  return [
    ustarHeader(Buffer.from('PaxHeader'), record.length, 0o644, 'x'),
    record,
    Buffer.alloc(padding(record.length)),
    // Readers without PAX support see a truncated name; ours uses the record.
    ustarHeader(name, size, mode, '0'),
  ];
}

function tarBytes(entries: PackEntry[]): number {
  let total = 2 * BLOCK;
  for (const e of entries) {
    total += fileHeaders(e.path, e.size, e.mode).reduce((n, b) => n + b.length, 0);
    total += e.size + padding(e.size);
  }
  return total;
}

async function* tarStream(entries: PackEntry[]): AsyncGenerator<Buffer> {
  for (const e of entries) {
    yield* fileHeaders(e.path, e.size, e.mode);
    let n = 0;
    for await (const chunk of e.read()) {
      n += chunk.length;
      if (n > e.size) break;
      yield chunk;
    }
    if (n !== e.size) throw new BundleArchiveError(e.path, 'file changed size while it was being packed');
    const pad = padding(e.size);
    if (pad) yield Buffer.alloc(pad);
  }
  yield Buffer.alloc(2 * BLOCK);
}

/** Hashes and counts the gzip output, and pins the gzip header's OS byte to 255. */
function gzipFinisher(): { transform: Transform; result: () => PackResult } {
  const hash = createHash('sha256');
  let size = 0;
  const transform = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      if (size <= 9 && size + chunk.length > 9) {
        chunk = Buffer.from(chunk);
        chunk[9 - size] = 0xff;
      }
      size += chunk.length;
      hash.update(chunk);
      cb(null, chunk);
    },
  });
  return { transform, result: () => ({ sha256: hash.digest('hex'), size }) };
}

async function writeBundle(
  entries: PackEntry[],
  outFile: string,
  limits: ArchiveLimits,
): Promise<PackResult> {
  if (entries.length === 0) throw new BundleArchiveError(null, 'nothing to pack: the bundle would be empty');
  if (entries.length > limits.maxEntries) {
    throw new BundleArchiveError(null, `too many files (${entries.length}, limit ${limits.maxEntries})`);
  }
  const registry = new BundlePathRegistry();
  for (const e of entries) {
    if (e.size > limits.maxFileBytes) {
      throw new BundleArchiveError(e.path, `file is ${e.size} bytes, limit is ${limits.maxFileBytes}`);
    }
    registry.addFile(e.path);
  }
  const total = tarBytes(entries);
  if (total > limits.maxUncompressedBytes) {
    throw new BundleArchiveError(
      null,
      `bundle would be ${total} bytes uncompressed, limit is ${limits.maxUncompressedBytes}`,
    );
  }
  entries.sort((a, b) => comparePaths(a.path, b.path));

  const out = nodePath.resolve(outFile);
  const tmp = `${out}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  const finisher = gzipFinisher();
  try {
    await pipeline(
      Readable.from(tarStream(entries)),
      createGzip({ level: 9 }),
      finisher.transform,
      createWriteStream(tmp, { flags: 'wx', mode: 0o644 }),
    );
    const result = finisher.result();
    if (result.size > limits.maxCompressedBytes) {
      throw new BundleArchiveError(
        null,
        `bundle is ${result.size} bytes compressed, limit is ${limits.maxCompressedBytes}`,
      );
    }
    await rename(tmp, out);
    return result;
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

/** Streams a file, refusing (O_NOFOLLOW) one that was swapped for a symlink after we lstat()ed it. */
async function* readFileNoFollow(abs: string): AsyncGenerator<Buffer> {
  const fh = await open(abs, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
  try {
    for await (const chunk of fh.createReadStream({ autoClose: false })) yield chunk as Buffer;
  } finally {
    await fh.close();
  }
}

/**
 * Packs `dir` into a deterministic bundle at `outFile` (written atomically).
 * Skips `node_modules` and `.git` at any depth and every dot-entry at the top
 * level (`.env`, `.DS_Store`, ...). Refuses symlinks and special files.
 */
export async function packDirectory(
  dir: string,
  outFile: string,
  limits: Partial<ArchiveLimits> = {},
): Promise<PackResult> {
  const lim = resolveArchiveLimits(limits);
  const root = nodePath.resolve(dir);
  const rootStat = await stat(root);
  if (!rootStat.isDirectory()) throw new BundleArchiveError(null, `${dir} is not a directory`);
  const outAbs = nodePath.resolve(outFile);
  const entries: PackEntry[] = [];

  const walk = async (absDir: string, relDir: string): Promise<void> => {
    const names = await readdir(absDir);
    names.sort(comparePaths);
    for (const name of names) {
      if (PACK_SKIPPED_NAMES.has(name)) continue;
      if (relDir === '' && name.startsWith('.')) continue;
      const abs = nodePath.join(absDir, name);
      const rel = relDir === '' ? name : `${relDir}/${name}`;
      if (abs === outAbs) continue;
      const st = await lstat(abs);
      if (st.isSymbolicLink()) {
        throw new BundleArchiveError(
          rel,
          'is a symbolic link; bundles cannot contain links - replace it with a copy of its target',
        );
      }
      if (st.isDirectory()) {
        normalizeBundlePath(rel, lim, true);
        await walk(abs, rel);
      } else if (st.isFile()) {
        const path = normalizeBundlePath(rel, lim);
        if (entries.length >= lim.maxEntries) {
          throw new BundleArchiveError(rel, `too many files (limit ${lim.maxEntries})`);
        }
        entries.push({
          path,
          mode: normalizeFileMode(st.mode),
          size: st.size,
          read: () => readFileNoFollow(abs),
        });
      } else {
        throw new BundleArchiveError(rel, 'is not a regular file or directory and cannot be packed');
      }
    }
  };

  await walk(root, '');
  return writeBundle(entries, outFile, lim);
}

/** Packs in-memory files (keys are bundle paths) into a deterministic bundle; mainly for tests. */
export async function packFiles(
  files: PackFilesInput,
  outFile: string,
  limits: Partial<ArchiveLimits> = {},
): Promise<PackResult> {
  const lim = resolveArchiveLimits(limits);
  const entries: PackEntry[] = Object.entries(files).map(([rawPath, value]) => {
    const input: PackFileInput =
      typeof value === 'string' || Buffer.isBuffer(value) ? { data: value } : value;
    const data = typeof input.data === 'string' ? Buffer.from(input.data) : input.data;
    return {
      path: normalizeBundlePath(rawPath, lim),
      mode: normalizeFileMode(input.mode ?? 0o644),
      size: data.length,
      read: () => [data],
    };
  });
  return writeBundle(entries, outFile, lim);
}
