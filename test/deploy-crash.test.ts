import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { migrateDatabase, openDatabase } from '../db/client.ts';
import { ensureTenant, issueToken } from '../runtime/auth/tokens.ts';
import { bundleFromFiles, cleanupAll, sampleBundle, tempDir } from './helpers/env.ts';
import { spawnServer } from './helpers/process.ts';

afterAll(cleanupAll);

async function adminToken(home: string): Promise<string> {
  const database = await openDatabase(`file:${join(home, 'ebcc.db')}`);
  await migrateDatabase(database);
  const tenant = await ensureTenant(database.db, 'acme');
  const { token } = await issueToken(database.db, { tenantId: tenant.id, name: 't', scopes: ['deploy'] });
  database.close();
  return token;
}

/** Every version in the database is whole: its files, blobs and stages are all there. */
async function assertNoHalfVersions(home: string): Promise<number> {
  const database = await openDatabase(`file:${join(home, 'ebcc.db')}`);
  const q = async (sql: string) => (await database.client.execute(sql)).rows;
  const versions = await q('select id, manifest from function_versions');
  for (const v of versions) {
    const manifest = JSON.parse(String(v.manifest));
    const stages = await q(`select count(*) as n from stages where version_id = '${v.id}'`);
    expect(Number(stages[0]!.n)).toBe(manifest.stages.length);
    const files = await q(`select count(*) as n from version_files where version_id = '${v.id}'`);
    expect(Number(files[0]!.n)).toBeGreaterThan(0);
  }
  const dangling = await q(
    'select count(*) as n from version_files vf left join blobs b on b.digest = vf.blob_digest where b.digest is null',
  );
  expect(Number(dangling[0]!.n)).toBe(0);
  const dangling2 = await q(
    'select count(*) as n from functions f left join function_versions v on v.id = f.active_version_id where v.id is null',
  );
  expect(Number(dangling2[0]!.n)).toBe(0);
  const integrity = await q('pragma integrity_check');
  expect(integrity[0]!.integrity_check).toBe('ok');
  database.close();
  return versions.length;
}

async function post(url: string, token: string, bundle: string) {
  return fetch(`${url}/v1/functions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/gzip' },
    body: await readFile(bundle),
  }).catch((error: Error) => error);
}

describe('a crash during deploy', () => {
  it('inside the version transaction leaves no half version, and the retry succeeds after restart', async () => {
    const home = await tempDir('ebcc-crash-');
    const token = await adminToken(home);
    const bundle = await sampleBundle();
    const doomed = await spawnServer(home, { EBCC_CRASH_AT: 'deploy:before-commit' });
    const result = await post(doomed.url, token, bundle);
    expect(result).toBeInstanceOf(Error);
    // The gateway killed itself; its supervisor reports that as 128 + SIGKILL.
    expect((await doomed.exited).code).toBe(137);
    expect(await assertNoHalfVersions(home)).toBe(0);

    const server = await spawnServer(home);
    const retry = await post(server.url, token, bundle);
    expect(retry).toBeInstanceOf(Response);
    expect((retry as Response).status).toBe(201);
    expect(await assertNoHalfVersions(home)).toBe(1);
    server.child.kill('SIGTERM');
    expect((await server.exited).code).toBe(0);
  });

  it('mid-upload, at random points of a large deploy, never leaves half a version', async () => {
    const home = await tempDir('ebcc-crash-');
    const token = await adminToken(home);
    const files: Record<string, string> = {};
    for (let i = 0; i < 400; i++) files[`data/file-${i}.txt`] = `file ${i} `.repeat(200 + i);
    const manifest = {
      schemaVersion: 1,
      name: 'big',
      version: '1',
      anchor: { entry: 'anchor.js' },
      stages: [
        {
          name: 'echo',
          image: { kind: 'script', interpreter: 'sh', entry: 'echo.sh', files: Object.keys(files) },
        },
      ],
    };
    let committed = 0;
    for (const delayMs of [5, 20, 40, 80, 120]) {
      manifest.version = `v${delayMs}`;
      const bundle = await bundleFromFiles({
        ...files,
        'composite.json': JSON.stringify(manifest),
        'anchor.js': 'x',
        'echo.sh': 'cat',
      });
      const server = await spawnServer(home);
      const pending = post(server.url, token, bundle);
      await new Promise((r) => setTimeout(r, delayMs));
      process.kill(server.gatewayPid, 'SIGKILL');
      const outcome = await pending;
      if (outcome instanceof Response && outcome.status === 201) committed++;
      await server.exited;
      const versions = await assertNoHalfVersions(home);
      expect(versions).toBeGreaterThanOrEqual(committed);
    }
  }, 120_000);
});
