/**
 * Reader for untrusted function bundles (`.tar.gz`).
 *
 * Deploy receives bundle archives over HTTP; this module is the only code that
 * reads them. It never extracts anything to disk: the gzip stream is inflated by
 * our own zlib instance (so every decompressed byte is counted and the read is
 * aborted as soon as a limit is crossed), the raw tar stream is fed to
 * `tar.Parser` in strict mode, and every entry is vetted before a single byte of
 * its body is buffered. Only regular files (and directories, which are accepted
 * but not returned) may appear; links, devices, FIFOs and anything exotic are
 * refused outright.
 */
import { createHash } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
import { Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { Parser, type ReadEntry } from 'tar';

// Packing lives in pack.ts; re-exported so callers have one import for bundles.
// (pack.ts imports this module back; the cycle is safe because neither module
// touches the other's bindings while it is being evaluated.)
export {
  packDirectory,
  packFiles,
  PACK_SKIPPED_NAMES,
  type PackFileInput,
  type PackFilesInput,
  type PackResult,
} from './pack.ts';

/** Name of the bundle manifest that must sit at the archive root (checked by the deploy layer). */
export const BUNDLE_MANIFEST_NAME = 'composite.json';

export interface ArchiveLimits {
  /** Size of the `.tar.gz` file itself. */
  maxCompressedBytes: number;
  /** Total size of the inflated tar stream (headers, padding and trailing data included). */
  maxUncompressedBytes: number;
  /** Number of file + directory entries (metadata headers are bounded separately by the same number). */
  maxEntries: number;
  /** Maximum number of path segments (`a/b/c` has depth 3). */
  maxDepth: number;
  /** Size of any single file. */
  maxFileBytes: number;
  /** Length of a normalized path, in UTF-8 bytes. */
  maxPathLength: number;
}

const MiB = 1024 * 1024;

export const DEFAULT_ARCHIVE_LIMITS: ArchiveLimits = Object.freeze({
  maxCompressedBytes: 64 * MiB,
  maxUncompressedBytes: 256 * MiB,
  maxEntries: 4096,
  maxDepth: 16,
  maxFileBytes: 64 * MiB,
  maxPathLength: 255,
});

/** PAX / GNU long-name headers larger than this are refused (a path can never need more). */
const MAX_META_ENTRY_BYTES = 64 * 1024;

export interface BundleFile {
  /** Normalized posix relative path, no leading `./`, no trailing `/`. */
  path: string;
  /** 0o644 or 0o755: only the exec bit survives. */
  mode: number;
  data: Buffer;
  /** Lowercase hex sha256 of `data`. */
  sha256: string;
}

export interface BundleContents {
  /** Keyed by `BundleFile.path`, in archive order. */
  files: Map<string, BundleFile>;
}

const quoteEntry = (entry: string): string => {
  const q = JSON.stringify(entry);
  return q.length > 200 ? `${q.slice(0, 197)}..."` : q;
};

export class BundleArchiveError extends Error {
  override readonly name = 'BundleArchiveError';
  /** The message without the entry prefix. */
  readonly reason: string;

  constructor(
    public readonly entry: string | null,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(
      entry === null ? `bundle archive: ${message}` : `bundle entry ${quoteEntry(entry)}: ${message}`,
      options,
    );
    this.reason = message;
  }
}

/** Merges caller overrides onto the defaults; every limit must be a positive integer. */
export function resolveArchiveLimits(overrides: Partial<ArchiveLimits> = {}): ArchiveLimits {
  const out = { ...DEFAULT_ARCHIVE_LIMITS };
  for (const key of Object.keys(out) as (keyof ArchiveLimits)[]) {
    const v = overrides[key];
    if (v === undefined) continue;
    if (!Number.isSafeInteger(v) || v <= 0) {
      throw new RangeError(`archive limit ${key} must be a positive integer, got ${String(v)}`);
    }
    out[key] = v;
  }
  return out;
}

/** Keeps only the exec bit of a file mode. */
export const normalizeFileMode = (mode: number | undefined): 0o644 | 0o755 =>
  (mode ?? 0) & 0o111 ? 0o755 : 0o644;

function hasControlChar(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return true;
  }
  return false;
}

/**
 * Validates an entry path and returns its normalized form (`./` segments and
 * repeated / trailing slashes removed). Returns `''` only for a directory entry
 * naming the root itself (`./`), which callers skip. Throws BundleArchiveError.
 */
export function normalizeBundlePath(
  raw: string,
  limits: Pick<ArchiveLimits, 'maxDepth' | 'maxPathLength'>,
  isDirectory = false,
): string {
  const fail = (why: string): never => {
    throw new BundleArchiveError(raw, why);
  };
  if (raw.length === 0) fail('empty path');
  if (raw.includes('\0')) fail('path contains a NUL byte');
  if (hasControlChar(raw)) fail('path contains control characters');
  if (raw.includes('\\')) fail('path contains a backslash');
  if (raw.startsWith('/')) fail('absolute paths are not allowed');
  if (/^[A-Za-z]:/.test(raw)) fail('drive-letter paths are not allowed');
  const parts = raw.split('/');
  if (parts.includes('..')) fail("path contains a '..' segment");
  const segments = parts.filter((p) => p !== '' && p !== '.');
  if (segments.length === 0) {
    if (isDirectory) return '';
    fail('empty path after normalization');
  }
  const path = segments.join('/');
  const bytes = Buffer.byteLength(path);
  if (bytes > limits.maxPathLength) {
    fail(`path is ${bytes} bytes long, limit is ${limits.maxPathLength}`);
  }
  if (segments.length > limits.maxDepth) {
    fail(`path is ${segments.length} levels deep, limit is ${limits.maxDepth}`);
  }
  return path;
}

/**
 * Tracks paths already seen so duplicates (after normalization and Unicode NFC
 * folding) and file/directory conflicts (`a` as a file and `a/b`) are refused.
 */
export class BundlePathRegistry {
  readonly #files = new Set<string>();
  readonly #explicitDirs = new Set<string>();
  readonly #allDirs = new Set<string>();

  addFile(path: string, raw: string = path): void {
    const key = path.normalize('NFC');
    if (this.#files.has(key) || this.#explicitDirs.has(key)) {
      throw new BundleArchiveError(raw, `duplicate path ${quoteEntry(path)}`);
    }
    if (this.#allDirs.has(key)) {
      throw new BundleArchiveError(raw, `path ${quoteEntry(path)} is also used as a directory`);
    }
    this.#addParents(key, raw);
    this.#files.add(key);
  }

  addDirectory(path: string, raw: string = path): void {
    const key = path.normalize('NFC');
    if (this.#explicitDirs.has(key) || this.#files.has(key)) {
      throw new BundleArchiveError(raw, `duplicate path ${quoteEntry(path)}`);
    }
    this.#addParents(key, raw);
    this.#explicitDirs.add(key);
    this.#allDirs.add(key);
  }

  #addParents(key: string, raw: string): void {
    for (let i = key.indexOf('/'); i !== -1; i = key.indexOf('/', i + 1)) {
      const parent = key.slice(0, i);
      if (this.#files.has(parent)) {
        throw new BundleArchiveError(raw, `parent ${quoteEntry(parent)} is a file, not a directory`);
      }
      this.#allDirs.add(parent);
    }
  }
}

type EntryKind = 'file' | 'directory';

const LINK_REFUSAL = 'a bundle may not contain links of any kind';
const SPECIAL_REFUSAL = 'a bundle may only contain regular files and directories';

function classifyEntry(entry: ReadEntry): EntryKind {
  const type: string = entry.type;
  // A PAX record cannot legitimately change the type; refuse any disagreement.
  if (type !== entry.header.type) {
    throw new BundleArchiveError(entry.path, `inconsistent entry type (${entry.header.type} vs ${type})`);
  }
  switch (type) {
    case 'File':
    case 'OldFile':
    case 'ContiguousFile':
      return 'file';
    case 'Directory':
      return 'directory';
    case 'SymbolicLink':
      throw new BundleArchiveError(
        entry.path,
        `symbolic link (to ${quoteEntry(entry.linkpath ?? '')}) refused: ${LINK_REFUSAL}`,
      );
    case 'Link':
      throw new BundleArchiveError(
        entry.path,
        `hard link (to ${quoteEntry(entry.linkpath ?? '')}) refused: ${LINK_REFUSAL}`,
      );
    case 'CharacterDevice':
    case 'BlockDevice':
      throw new BundleArchiveError(entry.path, `device file (${type}) refused: ${SPECIAL_REFUSAL}`);
    case 'FIFO':
      throw new BundleArchiveError(entry.path, `FIFO refused: ${SPECIAL_REFUSAL}`);
    default:
      throw new BundleArchiveError(entry.path, `unsupported entry type ${type} refused: ${SPECIAL_REFUSAL}`);
  }
}

interface TarWarnData {
  tarCode?: string;
  entry?: { path?: unknown };
}

function tarError(err: unknown): BundleArchiveError {
  if (err instanceof BundleArchiveError) return err;
  const e = err as Error & TarWarnData;
  const msg = String(e?.message ?? err);
  if (/truncated/i.test(msg)) {
    const entry = typeof e.entry?.path === 'string' ? e.entry.path : null;
    return new BundleArchiveError(entry, `truncated tar stream (${msg})`, { cause: err });
  }
  if (/unrecognized archive format/i.test(msg)) {
    return new BundleArchiveError(null, 'not a tar archive, or it contains no valid entries', { cause: err });
  }
  return new BundleArchiveError(null, `corrupt tar stream: ${msg}`, { cause: err });
}

interface ZlibError extends Error {
  code?: string;
  errno?: number;
}

function isZlibError(err: unknown): err is ZlibError {
  return (
    err instanceof Error &&
    typeof (err as ZlibError).code === 'string' &&
    /^Z_/.test((err as ZlibError).code!)
  );
}

/** Feeds the inflated tar stream to tar.Parser and vets every entry. */
class BundleTarReader {
  readonly files = new Map<string, BundleFile>();
  readonly #limits: ArchiveLimits;
  readonly #paths = new BundlePathRegistry();
  readonly #parser: Parser;
  #failure: BundleArchiveError | null = null;
  #uncompressed = 0;
  #declaredFileBytes = 0;
  #entries = 0;
  #metaHeaders = 0;
  #head: Buffer | null = Buffer.alloc(0);
  #current: string | null = null;
  #sawEof = false;
  #parserEnded = false;
  #finished = false;

  constructor(limits: ArchiveLimits) {
    this.#limits = limits;
    this.#parser = new Parser({
      strict: true,
      // We inflate ourselves; never let tar sniff-and-decompress a nested stream.
      brotli: false,
      zstd: false,
      maxMetaEntrySize: MAX_META_ENTRY_BYTES,
    });
    const p = this.#parser;
    p.on('entry', (entry: ReadEntry) => this.#guard(() => this.#onEntry(entry)));
    p.on('ignoredEntry', (entry: ReadEntry) => this.#guard(() => this.#onIgnored(entry)));
    p.on('meta', () =>
      this.#guard(() => {
        if (++this.#metaHeaders > this.#limits.maxEntries) {
          throw new BundleArchiveError(null, `too many metadata headers (limit ${this.#limits.maxEntries})`);
        }
      }),
    );
    p.on('eof', () => {
      this.#sawEof = true;
    });
    p.on('end', () => {
      this.#parserEnded = true;
    });
    p.on('error', (err: unknown) => this.#fail(tarError(err)));
    // strict mode turns warnings into errors; this is belt and braces.
    p.on('warn', (_code: string, message: string, data: unknown) =>
      this.#fail(tarError(Object.assign(new Error(message), data))),
    );
  }

  #fail(err: BundleArchiveError): void {
    this.#failure ??= err;
  }

  #guard(fn: () => void): void {
    if (this.#failure) return;
    try {
      fn();
    } catch (err) {
      this.#fail(tarError(err));
    }
  }

  #throwIfFailed(): void {
    if (this.#failure) throw this.#failure;
  }

  /** Called with each inflated chunk, in order. Throws on the first problem. */
  push(chunk: Buffer): void {
    this.#throwIfFailed();
    this.#uncompressed += chunk.length;
    if (this.#uncompressed > this.#limits.maxUncompressedBytes) {
      this.#fail(
        new BundleArchiveError(
          this.#current,
          `uncompressed size exceeds the limit of ${this.#limits.maxUncompressedBytes} bytes`,
        ),
      );
      this.#throwIfFailed();
    }
    // After the end-of-archive marker tar would buffer everything; we only count it.
    if (this.#sawEof) return;
    if (this.#head) {
      // Refuse a gzip stream nested inside the gzip stream: tar.Parser would
      // otherwise inflate it itself, outside our byte accounting.
      const head: Buffer = Buffer.concat([this.#head, chunk]);
      if (head.length < 2) {
        this.#head = head;
        return;
      }
      this.#head = null;
      if (head[0] === 0x1f && head[1] === 0x8b) {
        this.#fail(new BundleArchiveError(null, 'nested compression is not allowed: expected a tar stream'));
        this.#throwIfFailed();
      }
      chunk = head;
    }
    this.#parser.write(chunk);
    this.#throwIfFailed();
  }

  /** Called once the inflated stream ended. Returns the files or throws. */
  finish(): BundleContents {
    if (!this.#finished) {
      this.#finished = true;
      this.#throwIfFailed();
      if (this.#head && this.#head.length > 0) this.#parser.write(this.#head);
      this.#parser.end();
    }
    this.#throwIfFailed();
    if (this.#current !== null) {
      throw new BundleArchiveError(this.#current, 'truncated tar stream: entry data is incomplete');
    }
    if (!this.#sawEof) throw new BundleArchiveError(null, 'truncated tar stream: no end-of-archive marker');
    if (!this.#parserEnded) throw new BundleArchiveError(null, 'tar stream did not terminate cleanly');
    return { files: this.files };
  }

  #countEntry(raw: string): void {
    if (++this.#entries > this.#limits.maxEntries) {
      throw new BundleArchiveError(raw, `too many entries (limit ${this.#limits.maxEntries})`);
    }
  }

  #onIgnored(entry: ReadEntry): void {
    this.#countEntry(entry.path);
    if (entry.meta) {
      throw new BundleArchiveError(
        entry.path,
        `${entry.type} metadata header of ${entry.size} bytes refused (limit ${MAX_META_ENTRY_BYTES})`,
      );
    }
    classifyEntry(entry); // always throws for ignored (unsupported) entry types
    throw new BundleArchiveError(
      entry.path,
      `unsupported entry type ${entry.type} refused: ${SPECIAL_REFUSAL}`,
    );
  }

  #onEntry(entry: ReadEntry): void {
    const raw = entry.path;
    this.#countEntry(raw);
    const kind = classifyEntry(entry);
    const path = normalizeBundlePath(raw, this.#limits, kind === 'directory');
    if (entry.linkpath) {
      throw new BundleArchiveError(raw, 'link target set on a non-link entry');
    }
    if (kind === 'directory') {
      if (path !== '') this.#paths.addDirectory(path, raw);
      entry.resume();
      return;
    }
    this.#paths.addFile(path, raw);

    const size = entry.size;
    if (!Number.isSafeInteger(size) || size < 0) {
      throw new BundleArchiveError(raw, `invalid declared size ${String(size)}`);
    }
    if (size > this.#limits.maxFileBytes) {
      throw new BundleArchiveError(
        raw,
        `file is ${size} bytes, limit is ${this.#limits.maxFileBytes} bytes per file`,
      );
    }
    this.#declaredFileBytes += size;
    if (this.#declaredFileBytes > this.#limits.maxUncompressedBytes) {
      throw new BundleArchiveError(
        raw,
        `declared file sizes exceed the uncompressed limit of ${this.#limits.maxUncompressedBytes} bytes`,
      );
    }

    const mode = normalizeFileMode(entry.mode);
    const hash = createHash('sha256');
    const chunks: Buffer[] = [];
    let received = 0;
    this.#current = raw;
    entry.on('end', () =>
      this.#guard(() => {
        this.#current = null;
        if (received !== size) {
          throw new BundleArchiveError(raw, `truncated: got ${received} of ${size} bytes`);
        }
        const data = Buffer.concat(chunks, size);
        this.files.set(path, { path, mode, data, sha256: hash.digest('hex') });
      }),
    );
    entry.on('data', (chunk: Buffer) =>
      this.#guard(() => {
        received += chunk.length;
        if (received > size) throw new BundleArchiveError(raw, 'entry data exceeds its declared size');
        hash.update(chunk);
        chunks.push(chunk);
      }),
    );
  }
}

/** Counts compressed bytes and checks the gzip magic before zlib sees anything. */
function compressedGate(limit: number): Transform {
  let total = 0;
  let head = Buffer.alloc(0);
  let checked = false;
  const check = (): void => {
    if (head[0] !== 0x1f || head[1] !== 0x8b) {
      throw new BundleArchiveError(null, 'not a gzip stream (bad magic bytes)');
    }
    checked = true;
  };
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      try {
        total += chunk.length;
        if (total > limit) {
          throw new BundleArchiveError(null, `compressed size exceeds the limit of ${limit} bytes`);
        }
        if (!checked) {
          head = Buffer.concat([head, chunk]);
          if (head.length < 2) return cb();
          check();
          chunk = head;
        }
        cb(null, chunk);
      } catch (err) {
        cb(err as Error);
      }
    },
    flush(cb) {
      try {
        if (!checked) check();
        cb();
      } catch (err) {
        cb(err as Error);
      }
    },
  });
}

/**
 * Node's gunzip inflates concatenated gzip members and skips trailing NUL
 * padding, but fails on any other bytes after a member ("incorrect header
 * check" / "unknown compression method"). The output of that final inflate call
 * is dropped with the error, so such archives cannot be read reliably and are
 * refused rather than accepted depending on where read chunks happen to fall.
 */
const TRAILING_MEMBER_ERRORS = new Set(['incorrect header check', 'unknown compression method']);

function zlibError(err: ZlibError): BundleArchiveError {
  if (err.code === 'Z_BUF_ERROR' || /unexpected end of file/i.test(err.message)) {
    return new BundleArchiveError(null, `truncated gzip stream (${err.message})`, { cause: err });
  }
  const hint = TRAILING_MEMBER_ERRORS.has(err.message)
    ? ' (not a gzip stream, or unexpected data after the end of a gzip member)'
    : '';
  return new BundleArchiveError(null, `corrupt gzip stream: ${err.message}${hint}`, { cause: err });
}

/**
 * Reads and validates a bundle `.tar.gz` from disk, entirely in memory.
 * Rejects with BundleArchiveError for anything hostile, oversized or corrupt.
 */
export async function readBundleArchive(
  source: string,
  limits: Partial<ArchiveLimits> = {},
): Promise<BundleContents> {
  const lim = resolveArchiveLimits(limits);
  let fh: FileHandle;
  try {
    fh = await open(source, 'r');
  } catch (err) {
    throw new BundleArchiveError(null, `cannot open ${source}: ${(err as Error).message}`, { cause: err });
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new BundleArchiveError(null, `${source} is not a regular file`);
    if (st.size === 0) throw new BundleArchiveError(null, 'archive is empty');
    if (st.size > lim.maxCompressedBytes) {
      throw new BundleArchiveError(
        null,
        `compressed size ${st.size} exceeds the limit of ${lim.maxCompressedBytes} bytes`,
      );
    }

    const reader = new BundleTarReader(lim);
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        try {
          reader.push(chunk);
          cb();
        } catch (err) {
          cb(err as Error);
        }
      },
      final(cb) {
        try {
          reader.finish();
          cb();
        } catch (err) {
          cb(err as Error);
        }
      },
    });

    try {
      await pipeline(
        fh.createReadStream({ autoClose: false, highWaterMark: 64 * 1024 }),
        compressedGate(lim.maxCompressedBytes),
        createGunzip(),
        sink,
      );
    } catch (err) {
      if (err instanceof BundleArchiveError) throw err;
      if (isZlibError(err)) throw zlibError(err);
      throw new BundleArchiveError(null, `failed to read archive: ${(err as Error).message}`, { cause: err });
    }
    return reader.finish();
  } finally {
    await fh.close();
  }
}
