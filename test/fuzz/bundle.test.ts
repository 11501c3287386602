// Mutation fuzzing of bundle unpacking (runtime/bundle/archive.ts): recorded bundles mutated at the gzip
// and the tar level, and archives built from hostile entries. Whatever comes in, the reader answers with
// validated contents or a BundleArchiveError, and what it accepts, once materialized the way the
// registry does it, stays inside its directory.
import { createHash, randomBytes } from 'node:crypto';
import { lstat, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BundleArchiveError,
  DEFAULT_ARCHIVE_LIMITS,
  packDirectory,
  packFiles,
  readBundleArchive,
  type ArchiveLimits,
  type BundleContents,
} from '../../runtime/bundle/archive.ts';
import { materializeVersion } from '../../runtime/registry/cache.ts';
import { sampleDir } from '../helpers/env.ts';
import { fuzzAsync, fuzzTimeout, mutationsOf } from '../helpers/fuzz.ts';
import { paxEntry, rawEntry, tarOf, type RawEntry } from '../helpers/tar.ts';

let work: string;
let counter = 0;
/** Recorded corpus: the sample function's bundle and a small bundle with an executable and nesting. */
const corpus: { name: string; gz: Buffer; tar: Buffer; headers: number[] }[] = [];

/** Offsets of the header blocks of a well-formed tar stream. */
function headerOffsets(tar: Buffer): number[] {
  const out: number[] = [];
  for (let at = 0; at + 512 <= tar.length;) {
    const block = tar.subarray(at, at + 512);
    if (block.every((b) => b === 0)) break;
    out.push(at);
    const size = parseInt(block.toString('ascii', 124, 136).replace(/\0.*$/, '').trim() || '0', 8);
    at += 512 + Math.ceil(size / 512) * 512;
  }
  return out;
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'ebcc-fuzz-bundle-'));
  const sample = join(work, 'sample.tgz');
  await packDirectory(sampleDir, sample);
  const small = join(work, 'small.tgz');
  await packFiles(
    {
      'composite.json': '{"name":"fn"}',
      'anchor.js': 'export default { fetch() { return new Response("ok"); } };',
      'stages/bin/run': { data: '#!/bin/sh\necho hi\n', mode: 0o755 },
      'stages/a/b/c.txt': 'deep',
    },
    small,
  );
  for (const [name, path] of [
    ['sample', sample],
    ['small', small],
  ] as const) {
    const gz = await readFile(path);
    const tar = gunzipSync(gz);
    corpus.push({ name, gz, tar, headers: headerOffsets(tar) });
  }
});

afterAll(async () => {
  if (process.env.EBCC_FUZZ_REPORT) console.log('bundle outcomes', outcomes);
  await rm(work, { recursive: true, force: true });
});

async function read(
  bytes: Buffer,
  limits?: Partial<ArchiveLimits>,
): Promise<BundleContents | BundleArchiveError> {
  const path = join(work, `a${counter++}.tgz`);
  await writeFile(path, bytes);
  try {
    return await readBundleArchive(path, limits);
  } catch (error) {
    if (error instanceof BundleArchiveError) return error;
    throw error;
  } finally {
    await rm(path, { force: true });
  }
}

async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir)) {
    const full = join(dir, entry);
    const st = await lstat(full);
    expect(st.isSymbolicLink()).toBe(false);
    if (st.isDirectory()) out.push(...(await walk(full)));
    else {
      expect(st.isFile()).toBe(true);
      out.push(full);
    }
  }
  return out;
}

/** What every accepted archive satisfies; it is then materialized as the registry does, and walked. */
async function checkAccepted(contents: BundleContents, limits: ArchiveLimits): Promise<void> {
  const paths = [...contents.files.keys()];
  expect(paths.length).toBeLessThanOrEqual(limits.maxEntries);
  for (const [path, file] of contents.files) {
    expect(file.path).toBe(path);
    expect(path.startsWith('/') || path.includes('\\') || path.includes('\0')).toBe(false);
    const segments = path.split('/');
    expect(segments.every((s) => s !== '' && s !== '.' && s !== '..')).toBe(true);
    expect(segments.length).toBeLessThanOrEqual(limits.maxDepth);
    expect(Buffer.byteLength(path)).toBeLessThanOrEqual(limits.maxPathLength);
    expect(file.data.length).toBeLessThanOrEqual(limits.maxFileBytes);
    expect([0o644, 0o755]).toContain(file.mode);
    expect(createHash('sha256').update(file.data).digest('hex')).toBe(file.sha256);
    // No path is also the parent directory of another.
    expect(paths.some((other) => other.startsWith(`${path}/`))).toBe(false);
  }
  const home = await mkdtemp(join(work, 'home-'));
  try {
    const root = await materializeVersion(
      home,
      `sha256:${randomBytes(32).toString('hex')}`,
      contents.files.values(),
    );
    const written = await walk(root);
    expect(written.map((f) => relative(root, f)).sort()).toEqual([...paths].sort());
    // Nothing was written anywhere else in the home directory.
    expect((await walk(home)).every((f) => f.startsWith(`${root}/`))).toBe(true);
  } finally {
    await rm(home, { recursive: true, force: true });
  }
}

const smallLimits = fc.record(
  {
    maxEntries: fc.integer({ min: 1, max: 8 }),
    maxDepth: fc.integer({ min: 1, max: 4 }),
    maxFileBytes: fc.integer({ min: 1, max: 4096 }),
    maxPathLength: fc.integer({ min: 4, max: 64 }),
    maxUncompressedBytes: fc.integer({ min: 512, max: 64 * 1024 }),
  },
  { requiredKeys: [] },
);
const limitsArb: fc.Arbitrary<Partial<ArchiveLimits> | undefined> = fc.oneof(
  { weight: 3, arbitrary: fc.constant(undefined) },
  { weight: 1, arbitrary: smallLimits },
);

/** How many archives were accepted and refused: the properties mean little if everything is refused. */
const outcomes = { accepted: 0, refused: 0 };

async function property(bytes: Buffer, limits: Partial<ArchiveLimits> | undefined): Promise<void> {
  const result = await read(bytes, limits);
  outcomes[result instanceof BundleArchiveError ? 'refused' : 'accepted']++;
  if (result instanceof BundleArchiveError) {
    expect(result.message.length).toBeGreaterThan(0);
    return;
  }
  await checkAccepted(result, { ...DEFAULT_ARCHIVE_LIMITS, ...limits });
}

/** Recomputes the checksum of a header block, so that a mutation gets past it to the parser. */
function fixChecksum(tar: Buffer, at: number): void {
  if (at + 512 > tar.length) return;
  tar.fill(0x20, at + 148, at + 156);
  let sum = 0;
  for (let i = at; i < at + 512; i++) sum += tar[i]!;
  tar.write(`${sum.toString(8).padStart(6, '0')}\0 `, at + 148, 'ascii');
}

const corpusEntry = () => fc.constantFrom(...corpus);

describe('bundle unpacking under mutation', () => {
  it(
    'mutated .tar.gz bytes: contents that stay in the root, or a BundleArchiveError',
    () =>
      fuzzAsync(
        'bundle: gzip-level mutations',
        fc.asyncProperty(
          corpusEntry().chain((c) => mutationsOf(c.gz)),
          limitsArb,
          property,
        ),
        60,
      ),
    fuzzTimeout(),
  );

  it(
    'mutated tar bytes (headers re-checksummed): contents that stay in the root, or a BundleArchiveError',
    () =>
      fuzzAsync(
        'bundle: tar-level mutations',
        fc.asyncProperty(
          corpusEntry().chain((c) => fc.tuple(fc.constant(c), mutationsOf(c.tar))),
          limitsArb,
          async ([c, tar], limits) => {
            const copy = Buffer.from(tar);
            for (const at of c.headers) fixChecksum(copy, at);
            await property(gzipSync(copy), limits);
          },
        ),
        80,
      ),
    fuzzTimeout(),
  );

  const segment = fc.constantFrom(
    'a',
    'b',
    'c.js',
    '.',
    '..',
    '',
    'composite.json',
    'é',
    'e\u0301',
    'x'.repeat(70),
  );
  const name = fc.oneof(
    fc.array(segment, { minLength: 1, maxLength: 5 }).map((s) => s.join('/')),
    fc.constantFrom('/etc/passwd', 'C:/x', 'a\\..\\b', 'a\nb', '\u202e', './', '././a', 'a//b/'),
    fc.string({ maxLength: 20 }),
  );
  const entry: fc.Arbitrary<RawEntry | Buffer> = fc.oneof(
    {
      weight: 5,
      arbitrary: fc.record(
        {
          name,
          type: fc.constantFrom(
            '0',
            '0',
            '0',
            '5',
            '1',
            '2',
            '3',
            '4',
            '6',
            '7',
            'x',
            'g',
            'L',
            'K',
            'S',
            'V',
            'Z',
            '\0',
          ),
          data: fc.oneof(
            fc.string({ maxLength: 40 }),
            fc.uint8Array({ maxLength: 1100 }).map((b) => Buffer.from(b)),
          ),
          size: fc.option(fc.nat(3000), { nil: undefined }),
          mode: fc.constantFrom(0o644, 0o755, 0o4755, 0o777, 0),
          linkname: fc.option(name, { nil: undefined }),
          prefix: fc.option(fc.constantFrom('..', '/abs', 'p', 'a/b'), { nil: undefined }),
        },
        { requiredKeys: ['name'] },
      ),
    },
    {
      weight: 1,
      arbitrary: fc
        .record(
          {
            path: name,
            linkpath: name,
            size: fc.constantFrom('0', '1', '99999999999', '-1', 'x'),
            'GNU.sparse.name': name,
          },
          { requiredKeys: [] },
        )
        .chain((records) =>
          fc.constantFrom<'x' | 'g'>('x', 'g').map((t) => paxEntry(records as Record<string, string>, t)),
        ),
    },
  );

  it(
    'archives built from hostile entries (links, devices, PAX, long names, traversal): safe or refused',
    () =>
      fuzzAsync(
        'bundle: hostile entries',
        fc.asyncProperty(
          fc.array(entry, { minLength: 1, maxLength: 6 }),
          fc.boolean(),
          limitsArb,
          async (entries, end, limits) => {
            const tar = end
              ? tarOf(...entries)
              : Buffer.concat(entries.map((e) => (Buffer.isBuffer(e) ? e : rawEntry(e))));
            await property(gzipSync(tar), limits);
          },
        ),
        120,
      ),
    fuzzTimeout(),
  );
});
