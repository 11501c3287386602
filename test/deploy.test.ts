import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { instances } from '../db/schema.ts';
import {
  api,
  bundleFromFiles,
  cleanupAll,
  sampleBundle,
  startTestGateway,
  upload,
  type TestGateway,
} from './helpers/env.ts';

let gw: TestGateway;
let token: string;

beforeAll(async () => {
  gw = await startTestGateway({ maxBundleBytes: 256 * 1024 });
  token = await gw.token('acme', ['deploy']);
});
afterAll(cleanupAll);

const withVersion = (version: string) => (m: Record<string, any>) => (m.version = version);

describe('deploy by bundle upload', () => {
  it('deploys the sample function and reports its stage digests and measurements', async () => {
    const res = await upload(gw.url, token, await sampleBundle());
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ function: 'order-signer', version: '1.0.0', active: true });
    expect(res.body.versionDigest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(res.body.bundleDigest).toMatch(/^sha256:[0-9a-f]{64}$/);
    const [stage] = res.body.stages;
    expect(stage).toMatchObject({ name: 'sign', backend: 'sim', mode: 'persistent' });
    expect(stage.imageDigest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(stage.measurement.alg).toBe('sha3-512');
    expect(stage.measurement.value).toMatch(/^[0-9a-f]{128}$/);

    const shown = await api(gw.url, token, 'GET', '/v1/functions/order-signer');
    expect(shown.status).toBe(200);
    expect(shown.body.activeVersion).toBe('1.0.0');
    expect(shown.body.versions[0].stages[0].imageDigest).toBe(stage.imageDigest);
  });

  it('is idempotent for the same bytes and refuses the same version with other bytes', async () => {
    const bundle = await sampleBundle(withVersion('1.0.1'));
    const first = await upload(gw.url, token, bundle);
    const again = await upload(gw.url, token, bundle);
    expect(first.status).toBe(201);
    expect(again.status).toBe(200);
    expect(again.body.versionDigest).toBe(first.body.versionDigest);
    const changed = await sampleBundle(withVersion('1.0.1'), { 'notes.txt': 'different bytes' });
    const clash = await upload(gw.url, token, changed);
    expect(clash.status).toBe(409);
    expect(clash.body.type).toBe('urn:ebcc:problem:version-immutable');
    const count = await gw.database.client.execute(
      "select count(*) as n from function_versions where version = '1.0.1'",
    );
    expect(count.rows[0]!.n).toBe(1);
  });

  it('changes the image digest when a stage byte or its config changes, and only then', async () => {
    const a = await upload(
      gw.url,
      token,
      await sampleBundle(withVersion('2.0.0-a'), { 'README.txt': 'unrelated' }),
    );
    const b = await upload(gw.url, token, await sampleBundle(withVersion('2.0.0-b')));
    const c = await upload(
      gw.url,
      token,
      await sampleBundle((m) => {
        m.version = '2.0.0-c';
        m.stages[0].limits.timeoutMs = 2999;
      }),
    );
    expect(a.body.stages[0].imageDigest).toBe(b.body.stages[0].imageDigest);
    expect(c.body.stages[0].imageDigest).not.toBe(b.body.stages[0].imageDigest);
    expect(c.body.stages[0].measurement.value).not.toBe(b.body.stages[0].measurement.value);
  });

  it('accepts multipart/form-data uploads', async () => {
    const data = await readFile(await sampleBundle(withVersion('3.0.0')));
    const form = new FormData();
    form.append('bundle', new Blob([data], { type: 'application/gzip' }), 'bundle.tgz');
    const response = await fetch(`${gw.url}/v1/functions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}` },
      body: form,
    });
    expect(response.status).toBe(201);
    expect((await response.json()).version).toBe('3.0.0');
  });

  it('streams the upload and stops at the size limit, leaving no temporary file', async () => {
    const limit = gw.config.maxBundleBytes;
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        // No Content-Length: the gateway has to count while streaming.
        if (sent > limit * 4) return controller.close();
        sent += 64 * 1024;
        controller.enqueue(new Uint8Array(64 * 1024));
      },
    });
    const response = await fetch(`${gw.url}/v1/functions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/gzip' },
      body,
      duplex: 'half',
    } as RequestInit).catch((error: Error) => error);
    if (response instanceof Response) {
      expect(response.status).toBe(413);
      expect((await response.json()).type).toBe('urn:ebcc:problem:bundle-too-large');
    }
    const declared = await fetch(`${gw.url}/v1/functions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/gzip' },
      body: new Uint8Array(limit + 1),
    });
    expect(declared.status).toBe(413);
    expect(declared.headers.get('content-type')).toBe('application/problem+json');
    const leftovers = await readdir(join(gw.home, 'tmp')).catch(() => []);
    expect(leftovers).toEqual([]);
  });

  it('refuses a wrong content type and an empty body with problem documents', async () => {
    const wrongType = await fetch(`${gw.url}/v1/functions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'text/plain' },
      body: 'hello',
    });
    expect(wrongType.status).toBe(415);
    const garbage = await fetch(`${gw.url}/v1/functions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/gzip' },
      body: 'not a gzip stream',
    });
    expect(garbage.status).toBe(422);
    expect((await garbage.json()).type).toBe('urn:ebcc:problem:bundle-invalid');
  });

  it.each([
    ['a missing manifest', { 'anchor.js': 'x' }, 'bundle-missing-manifest', 'composite.json'],
    ['invalid JSON', { 'composite.json': '{', 'anchor.js': 'x' }, 'manifest-invalid', 'not valid JSON'],
  ])('refuses %s', async (_what, files, type, mention) => {
    const res = await upload(gw.url, token, await bundleFromFiles(files));
    expect(res.status).toBe(422);
    expect(res.body.type).toBe(`urn:ebcc:problem:${type}`);
    expect(JSON.stringify(res.body)).toContain(mention);
  });

  it('refuses a manifest naming a file that is not in the bundle, naming the field', async () => {
    const res = await upload(
      gw.url,
      token,
      await sampleBundle((m) => (m.stages[0].image.files = ['stages/missing.mjs'])),
    );
    expect(res.status).toBe(422);
    expect(res.body.field).toBe('stages[0].image.files[0]');
    expect(res.body.detail).toContain('stages/missing.mjs');
  });

  it('refuses an invalid manifest with every offending field listed', async () => {
    const res = await upload(
      gw.url,
      token,
      await sampleBundle((m) => {
        m.stages[0].backend = 'nitro';
        m.colour = 'blue';
      }),
    );
    expect(res.status).toBe(422);
    expect(res.body.issues.map((i: { path: string }) => i.path)).toEqual(
      expect.arrayContaining(['(root)', 'stages[0].backend']),
    );
  });

  it('refuses a pinned image digest or measurement that does not match', async () => {
    const wrong = `sha256:${'0'.repeat(64)}`;
    const res = await upload(
      gw.url,
      token,
      await sampleBundle((m) => ((m.version = '9.9.8'), (m.stages[0].reference = { imageDigest: wrong }))),
    );
    expect(res.status).toBe(422);
    expect(res.body.type).toBe('urn:ebcc:problem:measurement-mismatch');
    const resM = await upload(
      gw.url,
      token,
      await sampleBundle((m) => {
        m.version = '9.9.9';
        m.stages[0].reference = { measurement: { alg: 'sha3-512', value: 'ab'.repeat(64) } };
      }),
    );
    expect(resM.status).toBe(422);
    expect(resM.body.field).toBe('stages[0].reference.measurement');
  });

  it('accepts a pinned image digest that matches', async () => {
    const probe = await upload(gw.url, token, await sampleBundle(withVersion('4.0.0')));
    const pinned = probe.body.stages[0];
    const res = await upload(
      gw.url,
      token,
      await sampleBundle((m) => {
        m.version = '4.0.1';
        m.stages[0].reference = { imageDigest: pinned.imageDigest, measurement: pinned.measurement };
      }),
    );
    expect(res.status).toBe(201);
  });

  it('refuses a stage on a backend this host cannot measure when a measurement is pinned, and records why otherwise', async () => {
    const unpinned = await upload(
      gw.url,
      token,
      await sampleBundle((m) => {
        m.name = 'on-sgx';
        m.stages[0].backend = 'sgx';
      }),
    );
    expect(unpinned.status).toBe(201);
    expect(unpinned.body.stages[0].measurement).toBeNull();
    expect(unpinned.body.stages[0].measurementNote).toContain('unavailable');
    const pinned = await upload(
      gw.url,
      token,
      await sampleBundle((m) => {
        m.name = 'on-sgx';
        m.version = '1.0.1';
        m.stages[0].backend = 'sgx';
        m.stages[0].reference = { measurement: { alg: 'mrenclave', value: 'ab'.repeat(32) } };
      }),
    );
    expect(pinned.status).toBe(422);
    expect(pinned.body.type).toBe('urn:ebcc:problem:measurement-unavailable');
  });
});

describe('versions, rollback and delete', () => {
  it('rolls back to the previous version, or to a named one, in one call', async () => {
    await upload(gw.url, token, await sampleBundle((m) => ((m.name = 'rolly'), (m.version = '1'))));
    await upload(gw.url, token, await sampleBundle((m) => ((m.name = 'rolly'), (m.version = '2'))));
    await upload(gw.url, token, await sampleBundle((m) => ((m.name = 'rolly'), (m.version = '3'))));
    expect((await api(gw.url, token, 'GET', '/v1/functions/rolly')).body.activeVersion).toBe('3');
    const back = await api(gw.url, token, 'POST', '/v1/functions/rolly/rollback');
    expect(back.status).toBe(200);
    expect(back.body.activeVersion).toBe('2');
    const named = await api(gw.url, token, 'POST', '/v1/functions/rolly/rollback', { version: '1' });
    expect(named.body.activeVersion).toBe('1');
    expect((await api(gw.url, token, 'POST', '/v1/functions/rolly/rollback')).status).toBe(409);
    expect((await api(gw.url, token, 'POST', '/v1/functions/rolly/rollback', { version: '7' })).status).toBe(
      404,
    );
    const listed = await api(gw.url, token, 'GET', '/v1/functions');
    expect(listed.body.functions.find((f: { name: string }) => f.name === 'rolly')).toMatchObject({
      activeVersion: '1',
      versions: 3,
    });
  });

  it('deletes a function with live pool instances (their node drains them), and removes its blobs', async () => {
    const deployed = await upload(
      gw.url,
      token,
      await sampleBundle(
        (m) => ((m.name = 'doomed'), (m.version = '1'), (m.description = 'unique bytes for doomed')),
      ),
    );
    expect(deployed.status).toBe(201);
    const fn = (
      await gw.database.client.execute(
        "select id, active_version_id, tenant_id from functions where name = 'doomed'",
      )
    ).rows[0]!;
    await gw.database.db.insert(instances).values({
      cid: 'cid-live',
      tenantId: String(fn.tenant_id),
      functionId: String(fn.id),
      versionId: String(fn.active_version_id),
      status: 'running',
      hostId: 'test',
      bundlePath: '/nowhere',
    });
    // A live instance of another node's pool: the rows go with the function, and that node's upkeep
    // drains the instance itself. (Instances an operator made are refused without force: pool-upkeep.)
    const deleted = await api(gw.url, token, 'DELETE', '/v1/functions/doomed');
    expect(deleted.status).toBe(204);
    expect((await api(gw.url, token, 'GET', '/v1/functions/doomed')).status).toBe(404);
    const orphans = await gw.database.client.execute(
      'select count(*) as n from version_files vf left join blobs b on b.digest = vf.blob_digest where b.digest is null',
    );
    expect(orphans.rows[0]!.n).toBe(0);
    const manifestBlob = await gw.database.client.execute(
      "select count(*) as n from blobs where cast(data as text) like '%unique bytes for doomed%'",
    );
    expect(manifestBlob.rows[0]!.n).toBe(0);
  });
});
