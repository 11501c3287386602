import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ManifestError, manifestJsonSchema, parseManifest } from '../runtime/manifest/index.ts';
import { repoRoot, sampleDir } from './helpers/env.ts';

const minimal = () => ({
  schemaVersion: 1,
  name: 'hello',
  version: '1.0.0',
  anchor: { entry: 'anchor.js' },
  stages: [{ name: 'echo', image: { kind: 'script', interpreter: 'sh', entry: 'echo.sh' } }],
});

function rejection(edit: (m: Record<string, any>) => void): ManifestError {
  const manifest: Record<string, any> = minimal();
  edit(manifest);
  try {
    parseManifest(manifest);
  } catch (error) {
    expect(error).toBeInstanceOf(ManifestError);
    return error as ManifestError;
  }
  throw new Error('the manifest was accepted');
}

describe('manifest schema', () => {
  it('accepts the sample function and fills in defaults', () => {
    const manifest = parseManifest(JSON.parse(readFileSync(join(sampleDir, 'composite.json'), 'utf8')));
    expect(manifest.stages[0]).toMatchObject({ name: 'sign', backend: 'sim', mode: 'persistent' });
    const m = parseManifest(minimal());
    expect(m.stages[0]!.backend).toBe('sim');
    expect(m.stages[0]!.mode).toBe('oneshot');
    expect(m.anchor.network.allow).toEqual([]);
    expect(m.pool).toEqual({
      minWarm: 0,
      maxInstances: 4,
      idleTimeoutMs: 300_000,
      concurrent: false,
      prewarm: false,
    });
    expect(m.triggers.http.public).toBe(false);
  });

  it.each([
    ['an unknown top-level field', (m: any) => (m.extra = 1), 'unknown field(s): extra'],
    ['an unknown nested field', (m: any) => (m.anchor.memory = 1), 'anchor: unknown field(s): memory'],
    ['an unknown backend', (m: any) => (m.stages[0].backend = 'nitro'), 'stages[0].backend'],
    [
      'a limit out of range',
      (m: any) => (m.stages[0].limits = { memoryMb: 100000 }),
      'stages[0].limits.memoryMb',
    ],
    ['a zero timeout', (m: any) => (m.anchor.limits = { timeoutMs: 0 }), 'anchor.limits.timeoutMs'],
    ['a traversing path', (m: any) => (m.anchor.entry = '../etc/passwd'), 'anchor.entry'],
    ['an absolute path', (m: any) => (m.stages[0].image.entry = '/bin/sh'), 'stages[0].image.entry'],
    ['an unnormalized path', (m: any) => (m.stages[0].image.files = ['a//b']), 'stages[0].image.files[0]'],
    ['a bad schema version', (m: any) => (m.schemaVersion = 2), 'schemaVersion'],
    ['a bad name', (m: any) => (m.name = 'Hello World'), 'name'],
    ['no stages', (m: any) => (m.stages = []), 'stages'],
    ['minWarm above maxInstances', (m: any) => (m.pool = { minWarm: 5, maxInstances: 2 }), 'pool.minWarm'],
    [
      'a route that shadows the API',
      (m: any) => (m.triggers = { http: { route: '/v1/functions' } }),
      'triggers.http.route',
    ],
    [
      'a bad network host',
      (m: any) => (m.anchor.network = { allow: ['http://x'] }),
      'anchor.network.allow[0]',
    ],
    [
      'a bad pinned digest',
      (m: any) => (m.stages[0].reference = { imageDigest: 'md5:00' }),
      'stages[0].reference.imageDigest',
    ],
  ])('rejects %s and names the field', (_what, edit, field) => {
    expect(rejection(edit).message).toContain(field);
  });

  it('rejects duplicate stage names', () => {
    const error = rejection((m) => m.stages.push({ ...m.stages[0] }));
    expect(error.issues).toContainEqual({ path: 'stages[1].name', message: 'duplicate stage name "echo"' });
  });

  it('rejects a request schema that is not a usable JSON Schema', () => {
    const error = rejection((m) => (m.stages[0].requestSchema = { type: 'no-such-type' }));
    expect(error.issues[0]!.path).toBe('stages[0].requestSchema');
  });

  it('publishes a JSON Schema generated from the zod schema, kept in sync in docs/', () => {
    const published = JSON.parse(readFileSync(join(repoRoot, 'docs', 'composite.schema.json'), 'utf8'));
    expect(published).toEqual(manifestJsonSchema());
    expect(published.required).toEqual(
      expect.arrayContaining(['schemaVersion', 'name', 'version', 'anchor', 'stages']),
    );
    expect(published.additionalProperties).toBe(false);
  });
});
