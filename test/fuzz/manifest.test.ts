// Property tests of the manifest parser (composite.json comes from tenants' bundles) and of the stage
// request validators compiled from it (requests come from untrusted anchor code).
import { readFileSync } from 'node:fs';
import { join, posix } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  bundlePath,
  ManifestError,
  parseManifest,
  parseManifestText,
  referencedFiles,
  type Manifest,
} from '../../runtime/manifest/index.ts';
import { compileRequestSchema } from '../../runtime/stages/request-schema.ts';
import { sampleDir } from '../helpers/env.ts';
import { fuzz, fuzzTimeout, mutationsOf } from '../helpers/fuzz.ts';

const sampleText = readFileSync(join(sampleDir, 'composite.json'), 'utf8');
const sample = JSON.parse(sampleText) as Record<string, unknown>;

type Json = unknown;
/** Every path to a value inside a JSON document. */
function paths(value: Json, at: (string | number)[] = []): (string | number)[][] {
  const out = [at];
  if (Array.isArray(value)) value.forEach((v, i) => out.push(...paths(v, [...at, i])));
  else if (value && typeof value === 'object')
    for (const [k, v] of Object.entries(value)) out.push(...paths(v, [...at, k]));
  return out;
}
const samplePaths = paths(sample).filter((p) => p.length > 0);

/** Values that sit near the schema's edges: boundaries, wrong types, hostile strings. */
const edgeValue: fc.Arbitrary<Json> = fc.oneof(
  fc.jsonValue({ maxDepth: 2 }),
  fc.constantFrom(0, -1, 1, 7, 8, 16, 4096, 4097, 600_000, 600_001, 2 ** 31, 1.5, Number.MAX_SAFE_INTEGER),
  fc.constantFrom(
    '',
    '.',
    '..',
    '/',
    './a',
    'a/../b',
    'a//b',
    '/etc/passwd',
    'a\\b',
    'a\0b',
    'x'.repeat(300),
  ),
  fc.constantFrom('sim', 'keystone', 'optee', 'persistent', 'oneshot', 'node', 'sh', 'wasm', 'executable'),
  fc.constantFrom({ type: 'object' }, { type: 'nope' }, { $ref: '#/x' }, { anyOf: [] }, { pattern: '(' }),
);

/** A structural mutation of the recorded sample manifest: replace, delete or add at a random path. */
const mutatedManifest = fc
  .array(
    fc.tuple(
      fc.constantFrom(...samplePaths),
      fc.constantFrom('set', 'delete', 'add'),
      edgeValue,
      fc.string(),
    ),
    { minLength: 1, maxLength: 4 },
  )
  .map((edits) => {
    const doc = structuredClone(sample) as Record<string, unknown>;
    for (const [path, op, value, key] of edits) {
      let parent: any = doc;
      for (const k of path.slice(0, -1)) {
        if (parent === null || typeof parent !== 'object') break;
        parent = parent[k];
      }
      if (parent === null || typeof parent !== 'object') continue;
      const last = path.at(-1)!;
      if (op === 'set') parent[last] = value;
      else if (op === 'delete') {
        if (Array.isArray(parent)) parent.splice(Number(last), 1);
        else delete parent[last];
      } else if (!Array.isArray(parent)) parent[key] = value;
      else parent.push(value);
    }
    return doc;
  });

function parsedOrManifestError(run: () => Manifest): Manifest | undefined {
  try {
    return run();
  } catch (error) {
    expect(error).toBeInstanceOf(ManifestError);
    const issues = (error as ManifestError).issues;
    expect(issues.length).toBeGreaterThan(0);
    for (const i of issues) expect(typeof i.path === 'string' && i.path.length > 0).toBe(true);
    return undefined;
  }
}

/** What every accepted manifest must satisfy, whatever it was built from. */
function checkAccepted(m: Manifest): void {
  // Parsing is idempotent: the output is a valid input that means the same.
  expect(parseManifest(structuredClone(m))).toEqual(m);
  // Every file it names stays inside the bundle root.
  for (const { path } of referencedFiles(m)) {
    const resolved = posix.resolve('/bundle', path);
    expect(resolved.startsWith('/bundle/')).toBe(true);
    expect(posix.relative('/bundle', resolved)).toBe(path);
  }
  // Its request schemas compile (the instance manager compiles them at start).
  for (const stage of m.stages) expect(() => compileRequestSchema(stage.requestSchema)).not.toThrow();
  expect(new Set(m.stages.map((s) => s.name)).size).toBe(m.stages.length);
  expect(m.pool.minWarm).toBeLessThanOrEqual(m.pool.maxInstances);
}

describe('manifest parser (runtime/manifest)', () => {
  it(
    'structural mutations of the sample: accepted manifests are sound, the rest get a ManifestError naming fields',
    () =>
      fuzz(
        'manifest: structural mutations',
        fc.property(mutatedManifest, (doc) => {
          const m = parsedOrManifestError(() => parseManifest(doc));
          if (m) checkAccepted(m);
        }),
        300,
      ),
    fuzzTimeout(),
  );

  it(
    'byte mutations of the recorded composite.json text: a manifest or a ManifestError, nothing else',
    () =>
      fuzz(
        'manifest: text mutations',
        fc.property(mutationsOf(Buffer.from(sampleText)), (bytes) => {
          const m = parsedOrManifestError(() => parseManifestText(bytes.toString('utf8')));
          if (m) checkAccepted(m);
        }),
        300,
      ),
    fuzzTimeout(),
  );

  it(
    'arbitrary JSON values: a ManifestError, never an exception of another kind',
    () =>
      fuzz(
        'manifest: arbitrary JSON',
        fc.property(fc.jsonValue({ maxDepth: 4 }), (value) => {
          const m = parsedOrManifestError(() => parseManifest(value));
          if (m) checkAccepted(m);
        }),
        300,
      ),
    fuzzTimeout(),
  );

  it(
    'bundle paths: whatever the schema accepts stays inside the bundle root',
    () =>
      fuzz(
        'manifest: bundle paths',
        fc.property(
          fc.oneof(
            fc.string({ maxLength: 40 }),
            fc
              .array(fc.constantFrom('a', 'b.js', '.', '..', '', '...', '.x', 'c d', '\\', '%2e%2e', '\0'), {
                maxLength: 6,
              })
              .map((parts) => parts.join('/')),
          ),
          (p) => {
            if (!bundlePath.safeParse(p).success) return;
            const resolved = posix.resolve('/bundle', p);
            expect(resolved.startsWith('/bundle/')).toBe(true);
            expect(posix.relative('/bundle', resolved)).toBe(p);
          },
        ),
        1000,
      ),
    fuzzTimeout(),
  );

  // Found by the property above: "a/" passed as a normalized file path (posix.normalize keeps a
  // trailing slash), although no bundle file can have that name.
  it('regression: a bundle path with a trailing slash is refused', () => {
    expect(bundlePath.safeParse('a/').success).toBe(false);
    expect(bundlePath.safeParse('stages/').success).toBe(false);
    expect(bundlePath.safeParse('stages/a.mjs').success).toBe(true);
  });
});

/** Small JSON Schemas of the kinds stage manifests use. */
const jsonSchema: fc.Arbitrary<Record<string, unknown>> = fc.letrec<{ schema: Record<string, unknown> }>(
  (tie) => ({
    schema: fc.oneof(
      { depthSize: 'small', withCrossShrink: true },
      fc.constantFrom(
        { type: 'string', minLength: 1, maxLength: 8 },
        { type: 'string', pattern: '^[a-z]+$' },
        { type: 'integer', minimum: 0, maximum: 10 },
        { type: 'number', exclusiveMinimum: 0 },
        { type: 'boolean' },
        { type: 'null' },
        { enum: ['a', 1, null] },
        { const: 'x' },
        {},
      ),
      fc
        .record({
          properties: fc.dictionary(fc.constantFrom('a', 'b', 'c'), tie('schema'), { maxKeys: 3 }),
          additionalProperties: fc.boolean(),
        })
        .map((r) => ({ type: 'object', ...r, required: Object.keys(r.properties).slice(0, 1) })),
      fc
        .record({ items: tie('schema'), minItems: fc.nat(2), maxItems: fc.integer({ min: 2, max: 4 }) })
        .map((r) => ({ type: 'array', ...r })),
      fc.array(tie('schema'), { minLength: 1, maxLength: 3 }).map((anyOf) => ({ anyOf })),
    ),
  }),
).schema;

describe('stage request validation (runtime/stages/request-schema.ts)', () => {
  it(
    'any request bytes against any accepted schema: a verdict (null or a message), never an exception',
    () =>
      fuzz(
        'request schema: arbitrary requests',
        fc.property(
          jsonSchema,
          fc.oneof(
            fc.jsonValue({ maxDepth: 3 }).map((v) => Buffer.from(JSON.stringify(v) ?? 'null')),
            fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)),
            fc.string().map((s) => Buffer.from(s)),
          ),
          (schema, request) => {
            const manifest = structuredClone(sample) as any;
            manifest.stages[0].requestSchema = schema;
            const m = parsedOrManifestError(() => parseManifest(manifest));
            if (!m) return;
            const validate = compileRequestSchema(m.stages[0]!.requestSchema)!;
            const verdict = validate(request);
            expect(verdict === null || (typeof verdict === 'string' && verdict.length > 0)).toBe(true);
          },
        ),
        500,
      ),
    fuzzTimeout(),
  );

  it(
    'the sample stage accepts exactly the orders its schema describes',
    () =>
      fuzz(
        'request schema: sample orders',
        fc.property(
          fc.record({
            orderId: fc.string({ minLength: 1, maxLength: 64 }),
            amountCents: fc.integer({ min: 1 }),
            currency: fc.string({ minLength: 3, maxLength: 3 }),
            items: fc.array(fc.record({ sku: fc.string(), qty: fc.integer({ min: 1 }) }), { minLength: 1 }),
          }),
          fc.option(fc.constantFrom('orderId', 'amountCents', 'currency', 'items'), { nil: undefined }),
          (order, drop) => {
            const validate = compileRequestSchema(parseManifest(sample).stages[0]!.requestSchema)!;
            const request: Record<string, unknown> = { ...order };
            if (drop) delete request[drop];
            const verdict = validate(Buffer.from(JSON.stringify(request)));
            if (drop) expect(verdict).toContain(drop);
            else expect(verdict).toBeNull();
          },
        ),
        300,
      ),
    fuzzTimeout(),
  );
});
