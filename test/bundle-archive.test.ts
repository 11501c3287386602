import { createHash, randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readFile, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { constants as zlibConstants, createGzip, gunzipSync, gzipSync } from 'node:zlib';
import { Parser, type ReadEntry } from 'tar';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BundleArchiveError,
  DEFAULT_ARCHIVE_LIMITS,
  packDirectory,
  packFiles,
  readBundleArchive,
  resolveArchiveLimits,
  type ArchiveLimits,
} from '../runtime/bundle/archive.ts';
import { END, paxEntry, rawEntry, tarOf, type RawEntry } from './helpers/tar.ts';

const MANIFEST = { name: 'composite.json', data: '{"name":"fn"}' } satisfies RawEntry;

// ---------------------------------------------------------------------------

let work: string;
let counter = 0;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'ebcc-bundle-test-'));
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

async function file(bytes: Buffer, ext = '.tar.gz'): Promise<string> {
  const p = join(work, `a${counter++}${ext}`);
  await writeFile(p, bytes);
  return p;
}

const gzFile = (tarBytes: Buffer): Promise<string> => file(gzipSync(tarBytes));

async function refusal(source: string, limits?: Partial<ArchiveLimits>): Promise<BundleArchiveError> {
  const err: unknown = await readBundleArchive(source, limits).then(
    (c) => new Error(`unexpectedly accepted: ${[...c.files.keys()].join(', ')}`),
    (e: unknown) => e,
  );
  if (!(err instanceof BundleArchiveError)) throw err;
  return err;
}

const sha256 = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex');

describe('readBundleArchive: hostile archives', () => {
  const cases: {
    title: string;
    tar: () => Buffer;
    match: RegExp;
    entry?: string | null;
    limits?: Partial<ArchiveLimits>;
  }[] = [
    {
      title: '../evil',
      tar: () => tarOf(MANIFEST, { name: '../evil', data: 'x' }),
      match: /'\.\.'/,
      entry: '../evil',
    },
    {
      title: 'absolute /etc/passwd',
      tar: () => tarOf({ name: '/etc/passwd', data: 'x' }),
      match: /absolute/,
    },
    {
      title: 'a/../../b',
      tar: () => tarOf({ name: 'a/../../b', data: 'x' }),
      match: /'\.\.'/,
      entry: 'a/../../b',
    },
    { title: 'inner a/../b', tar: () => tarOf({ name: 'a/../b', data: 'x' }), match: /'\.\.'/ },
    { title: 'backslash', tar: () => tarOf({ name: 'a\\..\\b', data: 'x' }), match: /backslash/ },
    { title: 'control character', tar: () => tarOf({ name: 'a\nb', data: 'x' }), match: /control/ },
    { title: 'drive letter', tar: () => tarOf({ name: 'C:/x', data: 'x' }), match: /drive-letter/ },
    {
      title: 'empty name',
      tar: () => tarOf({ name: '', data: 'x' }),
      match: /corrupt tar stream.*path is required/,
    },
    { title: '"." as a file', tar: () => tarOf({ name: '.', data: 'x' }), match: /empty path/, entry: '.' },
    {
      title: 'symlink escaping the root',
      tar: () => tarOf(MANIFEST, { name: 'lib', type: '2', linkname: '../../../etc' }),
      match: /symbolic link.*may not contain links/,
      entry: 'lib',
    },
    {
      title: 'symlink inside the root (still refused)',
      tar: () => tarOf(MANIFEST, { name: 'alias.json', type: '2', linkname: 'composite.json' }),
      match: /symbolic link.*may not contain links/,
      entry: 'alias.json',
    },
    {
      title: 'hardlink',
      tar: () => tarOf(MANIFEST, { name: 'hl', type: '1', linkname: 'composite.json' }),
      match: /hard link.*may not contain links/,
      entry: 'hl',
    },
    {
      title: 'char device',
      tar: () => tarOf({ name: 'null', type: '3' }),
      match: /device file.*regular files/,
      entry: 'null',
    },
    {
      title: 'block device',
      tar: () => tarOf({ name: 'sda', type: '4' }),
      match: /device file/,
      entry: 'sda',
    },
    { title: 'fifo', tar: () => tarOf({ name: 'pipe', type: '6' }), match: /FIFO/, entry: 'pipe' },
    {
      title: 'unsupported type (GNU sparse)',
      tar: () => tarOf({ name: 'sparse', type: 'S', data: 'x' }),
      match: /unsupported entry type/,
      entry: 'sparse',
    },
    {
      title: 'unknown type letter',
      tar: () => tarOf({ name: 'weird', type: 'Q', data: 'x' }),
      match: /unsupported entry type/,
      entry: 'weird',
    },
    {
      title: 'duplicate path after normalization',
      tar: () => tarOf(MANIFEST, { name: 'a.txt', data: '1' }, { name: './/a.txt', data: '2' }),
      match: /duplicate path "a.txt"/,
      entry: './/a.txt',
    },
    {
      title: 'duplicate path in another Unicode normalization form',
      tar: () => tarOf({ name: 'caf\u00e9', data: '1' }, { name: 'cafe\u0301', data: '2' }),
      match: /duplicate path/,
    },
    {
      title: 'file and directory with the same name',
      tar: () => tarOf({ name: 'lib', type: '5' }, { name: 'lib', data: '2' }),
      match: /duplicate path/,
    },
    {
      title: 'file used as a parent directory',
      tar: () => tarOf({ name: 'lib', data: '1' }, { name: 'lib/x.js', data: '2' }),
      match: /parent "lib" is a file/,
      entry: 'lib/x.js',
    },
    {
      title: 'huge declared size (octal)',
      tar: () => tarOf(MANIFEST, { name: 'big.bin', sizeField: Buffer.from('77777777777\0') }),
      match: /file is 8589934591 bytes, limit is 67108864 bytes per file/,
      entry: 'big.bin',
    },
    {
      title: 'huge declared size (base-256, 2^40)',
      tar: () => tarOf({ name: 'big.bin', sizeField: Buffer.from([0x80, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]) }),
      match: /file is 1099511627776 bytes, limit is \d+ bytes per file/,
      entry: 'big.bin',
    },
    {
      title: 'declared size beyond 2^53 (base-256)',
      tar: () =>
        tarOf({ name: 'big.bin', sizeField: Buffer.from([0x80, 0, 0, 0, 0x40, 0, 0, 0, 0, 0, 0, 0]) }),
      match: /corrupt tar stream.*safe integer/,
      entry: null,
    },
    {
      title: '5000 entries',
      tar: () => tarOf(...Array.from({ length: 5000 }, (_, i) => ({ name: `f${i}`, data: '' }))),
      match: /too many entries \(limit 4096\)/,
      entry: 'f4096',
    },
    {
      title: 'depth 40',
      tar: () => tarOf({ name: 'd/'.repeat(39) + 'f', data: 'x' }),
      match: /40 levels deep, limit is 16/,
    },
    {
      title: 'path longer than maxPathLength (via PAX)',
      tar: () => tarOf(paxEntry({ path: 'x'.repeat(300) }), { name: 'short', data: 'x' }),
      match: /300 bytes long, limit is 255/,
    },
    {
      title: 'PAX path header sneaking in ../',
      tar: () => tarOf(MANIFEST, paxEntry({ path: 'lib/../../evil.js' }), { name: 'innocent.js', data: 'x' }),
      match: /'\.\.'/,
      entry: 'lib/../../evil.js',
    },
    {
      title: 'PAX absolute path',
      tar: () => tarOf(paxEntry({ path: '/etc/cron.d/x' }), { name: 'innocent.js', data: 'x' }),
      match: /absolute/,
      entry: '/etc/cron.d/x',
    },
    {
      title: 'GNU long-name header sneaking in ../',
      tar: () =>
        tarOf({ name: '././@LongLink', type: 'L', data: '../../evil.js\0' }, { name: 'ok.js', data: 'x' }),
      match: /'\.\.'/,
      entry: '../../evil.js',
    },
    {
      title: 'ustar prefix field sneaking in ..',
      tar: () => tarOf({ name: 'evil.js', prefix: '..', data: 'x' }),
      match: /'\.\.'/,
      entry: '../evil.js',
    },
    {
      title: 'PAX linkpath on a regular file',
      tar: () => tarOf(paxEntry({ linkpath: '/etc/shadow' }), { name: 'f.js', data: 'x' }),
      match: /link target set on a non-link entry/,
    },
    {
      title: 'PAX type record cannot relabel a symlink',
      tar: () => tarOf(paxEntry({ type: '0' }), { name: 'l', type: '2', linkname: '/etc/passwd' }),
      match: /symbolic link/,
    },
    {
      title: 'oversized PAX header',
      tar: () => tarOf(paxEntry({ comment: 'x'.repeat(100_000) }), { name: 'f', data: 'x' }),
      match: /metadata header of \d+ bytes refused/,
    },
    {
      title: 'bad header checksum',
      tar: () => tarOf(MANIFEST, { name: 'f', data: 'x', badChecksum: true }),
      match: /corrupt tar stream.*checksum/,
      entry: null,
    },
    {
      title: 'file over maxFileBytes',
      tar: () => tarOf({ name: 'f', data: Buffer.alloc(2048) }),
      match: /file is 2048 bytes, limit is 1024 bytes per file/,
      limits: { maxFileBytes: 1024 },
    },
    {
      title: 'declared sizes over maxUncompressedBytes',
      tar: () =>
        tarOf(...Array.from({ length: 3 }, (_, i) => ({ name: `z${i}`, data: Buffer.alloc(600 * 1024) }))),
      match: /declared file sizes exceed the uncompressed limit of 1048576 bytes/,
      entry: 'z1',
      limits: { maxUncompressedBytes: 1024 * 1024 },
    },
    {
      title: 'empty archive',
      tar: () => END,
      match: /not a tar archive, or it contains no valid entries/,
    },
    {
      title: 'truncated tar (inside an entry body)',
      tar: () => tarOf(MANIFEST, { name: 'f', data: Buffer.alloc(4000, 1) }).subarray(0, 1536 + 1000),
      match: /truncated tar stream/,
    },
    {
      title: 'truncated tar (at an entry boundary, no end-of-archive marker)',
      tar: () => rawEntry(MANIFEST),
      match: /no end-of-archive marker/,
    },
    {
      title: 'truncated tar (inside a header)',
      tar: () => Buffer.concat([rawEntry(MANIFEST), rawEntry({ name: 'f', data: 'x' }).subarray(0, 300)]),
      match: /no end-of-archive marker/,
    },
    {
      title: 'not a tar at all',
      tar: () => Buffer.from('hello, I am definitely not a tarball'.repeat(40)),
      match: /corrupt tar stream|not a tar archive/,
    },
  ];

  it.each(cases)('refuses $title', async ({ tar, match, entry, limits }) => {
    const err = await refusal(await gzFile(tar()), limits);
    expect(err.message).toMatch(match);
    if (entry !== undefined) expect(err.entry).toBe(entry);
    if (err.entry !== null) expect(err.message).toContain(JSON.stringify(err.entry).slice(0, 50));
  });

  it('refuses a nested gzip stream', async () => {
    const err = await refusal(await file(gzipSync(gzipSync(tarOf(MANIFEST)))));
    expect(err.message).toMatch(/nested compression/);
  });

  it('refuses input that is not gzip', async () => {
    expect((await refusal(await file(tarOf(MANIFEST)))).message).toMatch(/not a gzip stream/);
    expect((await refusal(await file(Buffer.from([0x1f])))).message).toMatch(/not a gzip stream/);
    expect((await refusal(await file(Buffer.alloc(0)))).message).toMatch(/empty/);
  });

  it('refuses a corrupt gzip stream with a clear message', async () => {
    const good = gzipSync(tarOf(MANIFEST, { name: 'f', data: randomBytes(20_000) }));
    for (const at of [20, Math.floor(good.length / 2), good.length - 6]) {
      const bad = Buffer.from(good);
      bad[at] = bad[at]! ^ 0xff;
      const err = await refusal(await file(bad));
      expect(err.entry === null || typeof err.entry === 'string').toBe(true);
      expect(err.message).toMatch(/gzip|tar stream/);
    }
  });

  it('refuses a truncated gzip stream', async () => {
    const good = gzipSync(tarOf(MANIFEST, { name: 'f', data: randomBytes(20_000) }));
    const err = await refusal(await file(good.subarray(0, good.length >> 1)));
    expect(err.message).toMatch(/truncated gzip stream/);
    expect(err.entry).toBeNull();
  });

  it('refuses an archive over maxCompressedBytes before reading it', async () => {
    const err = await refusal(await gzFile(tarOf(MANIFEST)), { maxCompressedBytes: 16 });
    expect(err.message).toMatch(/compressed size \d+ exceeds the limit of 16 bytes/);
  });

  it('refuses a 1 GiB gzip bomb quickly, without allocating it', async () => {
    // 1 GiB of zeros gzips to ~1 MiB; Z_RLE makes generating it fast.
    const gz = createGzip({ level: 9, strategy: zlibConstants.Z_RLE });
    const parts: Buffer[] = [];
    gz.on('data', (c: Buffer) => parts.push(c));
    const done = new Promise((resolve) => gz.on('end', resolve));
    const zeros = Buffer.alloc(4 * 1024 * 1024);
    for (let i = 0; i < 256; i++) gz.write(zeros);
    gz.end();
    await done;
    const bomb = await file(Buffer.concat(parts));
    expect((await stat(bomb)).size).toBeLessThan(2 * 1024 * 1024);

    const before = process.memoryUsage();
    const started = Date.now();
    const err = await refusal(bomb);
    const elapsed = Date.now() - started;
    expect(err.message).toMatch(/uncompressed size exceeds the limit of 268435456 bytes/);
    expect(elapsed).toBeLessThan(5_000);
    const after = process.memoryUsage();
    expect(after.heapUsed + after.arrayBuffers - (before.heapUsed + before.arrayBuffers)).toBeLessThan(
      64 * 1024 * 1024,
    );
  });

  it('counts real stream bytes, not just declared sizes', async () => {
    // 10 000 empty files declare 0 bytes but are 5 MiB of headers.
    const many = tarOf(...Array.from({ length: 10_000 }, (_, i) => ({ name: `f${i}` })));
    const err = await refusal(await gzFile(many), {
      maxUncompressedBytes: 4 * 1024 * 1024,
      maxEntries: 100_000,
    });
    expect(err.message).toMatch(/uncompressed size exceeds the limit of 4194304 bytes/);
  });

  it('validates limits', async () => {
    expect(() => resolveArchiveLimits({ maxEntries: 0 })).toThrow(RangeError);
    expect(() => resolveArchiveLimits({ maxDepth: 1.5 })).toThrow(RangeError);
    expect(resolveArchiveLimits({ maxDepth: undefined })).toEqual(DEFAULT_ARCHIVE_LIMITS);
    await expect(readBundleArchive(join(work, 'missing.tar.gz'))).rejects.toThrow(BundleArchiveError);
  });
});

describe('readBundleArchive: acceptable archives', () => {
  it('accepts directories (not returned), ./ prefixes and a root ./ entry', async () => {
    const contents = await readBundleArchive(
      await gzFile(
        tarOf(
          { name: './', type: '5' },
          { name: './composite.json', data: '{}' },
          { name: 'lib/', type: '5' },
          { name: 'lib/sub', type: '5', mode: 0o755 },
          { name: 'lib//sub/./run.sh', data: '#!/bin/sh', mode: 0o4775 },
        ),
      ),
    );
    expect([...contents.files.keys()]).toEqual(['composite.json', 'lib/sub/run.sh']);
    expect(contents.files.get('lib/sub/run.sh')).toMatchObject({ path: 'lib/sub/run.sh', mode: 0o755 });
    expect(contents.files.get('composite.json')?.mode).toBe(0o644);
  });

  it('honours a legitimate PAX path and ignores a global header path', async () => {
    const long = `deep/${'n'.repeat(120)}.js`;
    const contents = await readBundleArchive(
      await gzFile(
        tarOf(paxEntry({ path: '../../g' }, 'g'), paxEntry({ path: long }), { name: 'trunc', data: 'ok' }),
      ),
    );
    expect([...contents.files.keys()]).toEqual([long]);
  });

  it('reads concatenated gzip members and trailing NUL padding; refuses other trailing bytes cleanly', async () => {
    const tar = tarOf(MANIFEST, { name: 'a.js', data: 'a' });
    const padded = await readBundleArchive(await file(Buffer.concat([gzipSync(tar), Buffer.alloc(4096)])));
    expect([...padded.files.keys()]).toEqual(['composite.json', 'a.js']);
    for (const tail of [Buffer.from('garbage!'), Buffer.from([0x1f, 0x8b, 0x01, 0x02])]) {
      const err = await refusal(await file(Buffer.concat([gzipSync(tar), tail])));
      expect(err.message).toMatch(/corrupt gzip stream: .*after the end of a gzip member/);
    }
    const split = await readBundleArchive(
      await file(Buffer.concat([gzipSync(tar.subarray(0, 700)), gzipSync(tar.subarray(700))])),
    );
    expect([...split.files.keys()]).toEqual(['composite.json', 'a.js']);
  });
});

describe('pack + read round trip', () => {
  it('packFiles -> readBundleArchive gives the same files, sha256s and exec bits', async () => {
    const input = {
      'composite.json': JSON.stringify({ name: 'demo', stages: [] }),
      'bin/handler': { data: '#!/bin/sh\necho hi\n', mode: 0o775 },
      'lib/util.js': Buffer.from('export const x = 1;\n'),
      'lib/empty.txt': '',
      'assets/blob.bin': randomBytes(150_000),
      'dir with space/ünïcødé.txt': 'unicode',
      [`long/${'p'.repeat(140)}/file.js`]: 'long path via PAX',
    };
    const out = join(work, 'roundtrip.tar.gz');
    const packed = await packFiles(input, out);
    const bytes = await readFile(out);
    expect(packed).toEqual({ sha256: sha256(bytes), size: bytes.length });

    const { files } = await readBundleArchive(out);
    expect([...files.keys()].sort()).toEqual(Object.keys(input).sort());
    for (const [path, value] of Object.entries(input)) {
      const data =
        typeof value === 'string' || Buffer.isBuffer(value) ? Buffer.from(value) : Buffer.from(value.data);
      const f = files.get(path)!;
      expect(f.path).toBe(path);
      expect(f.data.equals(data)).toBe(true);
      expect(f.sha256).toBe(sha256(data));
      expect(f.mode).toBe(path === 'bin/handler' ? 0o755 : 0o644);
    }
    // Entries are sorted by path bytes.
    expect([...files.keys()]).toEqual(
      [...files.keys()].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))),
    );
  });

  it('packFiles refuses paths the reader would refuse', async () => {
    const out = join(work, 'never.tar.gz');
    await expect(packFiles({ '../x': 'x' }, out)).rejects.toThrow(/'\.\.'/);
    await expect(packFiles({ a: '1', './a': '2' }, out)).rejects.toThrow(/duplicate path/);
    await expect(packFiles({}, out)).rejects.toThrow(/empty/);
    await expect(packFiles({ a: 'xx' }, out, { maxFileBytes: 1 })).rejects.toThrow(/limit is 1/);
    await expect(stat(out)).rejects.toThrow(/ENOENT/);
  });
});

describe('packDirectory', () => {
  let src: string;

  beforeAll(async () => {
    src = join(work, 'src');
    const put = async (rel: string, data: string, mode = 0o644): Promise<void> => {
      await mkdir(join(src, rel, '..'), { recursive: true });
      await writeFile(join(src, rel), data, { mode });
    };
    await put('composite.json', '{"name":"demo"}');
    await put('handler.sh', '#!/bin/sh\n', 0o700);
    await put('lib/a.js', 'a');
    await put('lib/b-c.js', 'bc');
    await put('lib/.well-known/keep', 'nested dotfiles are kept');
    await put('lib/node_modules/dep/index.js', 'skipped');
    await put('node_modules/dep/index.js', 'skipped');
    await put('.git/HEAD', 'skipped');
    await put('.env', 'SECRET=skipped');
    await mkdir(join(src, 'empty-dir'));
  });

  it('is deterministic: same tree, different mtimes and permission bits -> identical bytes', async () => {
    const one = join(work, 'one.tar.gz');
    const first = await packDirectory(src, one);
    await utimes(join(src, 'lib/a.js'), new Date(1_000_000), new Date(2_000_000));
    await chmod(join(src, 'handler.sh'), 0o755);
    await chmod(join(src, 'lib/b-c.js'), 0o600);
    const two = join(work, 'two.tar.gz');
    const second = await packDirectory(src, two);
    expect(second).toEqual(first);
    const [b1, b2] = [await readFile(one), await readFile(two)];
    expect(b1.equals(b2)).toBe(true);
    expect(first).toEqual({ sha256: sha256(b1), size: b1.length });
    // Fixed gzip header: deflate, no flags/name, mtime 0, max compression, OS unknown.
    expect([...b1.subarray(0, 10)]).toEqual([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 0xff]);
  });

  it('writes normalized headers and skips node_modules, .git and top-level dotfiles', async () => {
    const out = join(work, 'headers.tar.gz');
    await packDirectory(src, out);
    const seen: {
      path: string;
      mode?: number;
      uid?: number;
      gid?: number;
      uname?: string;
      mtime?: number;
    }[] = [];
    const parser = new Parser({ strict: true });
    parser.on('entry', (e: ReadEntry) => {
      seen.push({
        path: e.path,
        mode: e.mode,
        uid: e.uid,
        gid: e.gid,
        uname: e.uname,
        mtime: e.mtime?.getTime(),
      });
      e.resume();
    });
    parser.end(gunzipSync(await readFile(out)));
    expect(seen.map((e) => e.path)).toEqual([
      'composite.json',
      'handler.sh',
      'lib/.well-known/keep',
      'lib/a.js',
      'lib/b-c.js',
    ]);
    for (const e of seen) {
      expect(e).toMatchObject({ uid: 0, gid: 0, uname: '', mtime: 0 });
      expect(e.mode).toBe(e.path === 'handler.sh' ? 0o755 : 0o644);
    }
    const { files } = await readBundleArchive(out);
    expect(files.get('handler.sh')?.mode).toBe(0o755);
    expect(files.get('lib/b-c.js')?.data.toString()).toBe('bc');
  });

  it('refuses symlinks in the directory, naming them', async () => {
    const linked = join(work, 'linked');
    await mkdir(join(linked, 'lib'), { recursive: true });
    await writeFile(join(linked, 'composite.json'), '{}');
    await symlink('../composite.json', join(linked, 'lib', 'alias.json'));
    const out = join(work, 'linked.tar.gz');
    const err: unknown = await packDirectory(linked, out).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BundleArchiveError);
    expect((err as BundleArchiveError).entry).toBe('lib/alias.json');
    expect((err as BundleArchiveError).message).toMatch(
      /"lib\/alias.json": is a symbolic link; bundles cannot contain links/,
    );
    await expect(stat(out)).rejects.toThrow(/ENOENT/);
  });

  it('refuses a tree the reader would refuse', async () => {
    const deep = join(work, 'deep');
    await mkdir(join(deep, ...Array.from({ length: 20 }, () => 'd')), { recursive: true });
    await writeFile(join(deep, ...Array.from({ length: 20 }, () => 'd'), 'f'), 'x');
    await expect(packDirectory(deep, join(work, 'deep.tar.gz'))).rejects.toThrow(/levels deep/);
  });
});
