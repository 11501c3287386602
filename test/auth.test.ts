import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { revokeToken } from '../runtime/auth/tokens.ts';
import { api, cleanupAll, sampleBundle, startTestGateway, upload, type TestGateway } from './helpers/env.ts';

let gw: TestGateway;
let acmeAdmin: string;
let bundle: string;

beforeAll(async () => {
  gw = await startTestGateway();
  acmeAdmin = await gw.token('acme', ['admin']);
  bundle = await sampleBundle();
  expect((await upload(gw.url, acmeAdmin, bundle)).status).toBe(201);
});
afterAll(cleanupAll);

describe('API tokens', () => {
  it('answers 401 with a problem document and a challenge when no token is sent', async () => {
    const res = await api(gw.url, undefined, 'GET', '/v1/functions');
    expect(res.status).toBe(401);
    expect(res.headers.get('content-type')).toBe('application/problem+json');
    expect(res.headers.get('www-authenticate')).toContain('Bearer');
    expect(res.body).toMatchObject({ type: 'urn:ebcc:problem:unauthorized', status: 401 });
    expect((await upload(gw.url, undefined, bundle)).status).toBe(401);
  });

  it('refuses malformed and forged tokens', async () => {
    expect((await api(gw.url, 'nonsense', 'GET', '/v1/functions')).status).toBe(401);
    const real = await gw.token('acme', ['deploy']);
    const forged = real.slice(0, -4) + (real.endsWith('AAAA') ? 'BBBB' : 'AAAA');
    const res = await api(gw.url, forged, 'GET', '/v1/functions');
    expect(res.status).toBe(401);
    expect(res.body.detail).toContain('not valid');
  });

  it('answers 403 when the token lacks the scope', async () => {
    const invokeOnly = await gw.token('acme', ['invoke']);
    const res = await upload(gw.url, invokeOnly, bundle);
    expect(res.status).toBe(403);
    expect(res.body.requiredScope).toBe('deploy');
    expect((await api(gw.url, invokeOnly, 'DELETE', '/v1/functions/order-signer')).status).toBe(403);
    const deployOnly = await gw.token('acme', ['deploy']);
    expect((await api(gw.url, deployOnly, 'GET', '/v1/tokens')).status).toBe(403);
  });

  it('stops honouring a token the moment it is revoked, and one that has expired', async () => {
    const token = await gw.token('acme', ['deploy']);
    expect((await api(gw.url, token, 'GET', '/v1/functions')).status).toBe(200);
    const id = /^ebcc_(tok_[0-9a-z]+)_/.exec(token)![1]!;
    expect(await revokeToken(gw.database.db, id)).toBe(true);
    const res = await api(gw.url, token, 'GET', '/v1/functions');
    expect(res.status).toBe(401);
    expect(res.body.detail).toContain('revoked');
    const expired = await gw.token('acme', ['deploy'], Date.now() - 1);
    expect((await api(gw.url, expired, 'GET', '/v1/functions')).body.detail).toContain('expired');
  });

  it('stores only a hash of the secret', async () => {
    const token = await gw.token('acme', ['deploy']);
    const secret = token.split('_').slice(3).join('_');
    const rows = await gw.database.client.execute('select * from api_tokens');
    expect(JSON.stringify(rows.rows)).not.toContain(secret);
  });

  it('lets a tenant admin issue and revoke tokens of its own tenant only', async () => {
    const created = await api(gw.url, acmeAdmin, 'POST', '/v1/tokens', {
      name: 'ci',
      scopes: ['deploy'],
      expires: '1d',
    });
    expect(created.status).toBe(201);
    expect(created.body.tenant).toBe('acme');
    expect((await api(gw.url, created.body.token, 'GET', '/v1/functions')).status).toBe(200);
    expect((await api(gw.url, acmeAdmin, 'POST', '/v1/tokens', { name: 'x', scopes: ['root'] })).status).toBe(
      400,
    );
    const globexAdmin = await gw.token('globex', ['admin']);
    expect((await api(gw.url, globexAdmin, 'DELETE', `/v1/tokens/${created.body.id}`)).status).toBe(404);
    const listed = await api(gw.url, globexAdmin, 'GET', '/v1/tokens');
    expect(listed.body.tokens.every((t: { tenant: string }) => t.tenant === 'globex')).toBe(true);
    expect((await api(gw.url, acmeAdmin, 'DELETE', `/v1/tokens/${created.body.id}`)).status).toBe(204);
    expect((await api(gw.url, created.body.token, 'GET', '/v1/functions')).status).toBe(401);
  });
});

describe('tenant isolation', () => {
  it("[T1 tenant isolation] never shows, changes or deletes another tenant's function", async () => {
    const globex = await gw.token('globex', ['admin']);
    expect((await api(gw.url, globex, 'GET', '/v1/functions')).body.functions).toEqual([]);
    const read = await api(gw.url, globex, 'GET', '/v1/functions/order-signer');
    expect(read.status).toBe(404);
    expect((await api(gw.url, globex, 'POST', '/v1/functions/order-signer/rollback')).status).toBe(404);
    expect((await api(gw.url, globex, 'DELETE', '/v1/functions/order-signer?force=true')).status).toBe(404);
    const overwrite = await upload(gw.url, globex, await sampleBundle((m) => (m.version = '6.6.6')));
    expect(overwrite.status).toBe(409);
    expect(overwrite.body.type).toBe('urn:ebcc:problem:function-name-taken');
    const mine = await api(gw.url, acmeAdmin, 'GET', '/v1/functions/order-signer');
    expect(mine.status).toBe(200);
    expect(mine.body.versions.map((v: { version: string }) => v.version)).toEqual(['1.0.0']);
  });
});

describe('health', () => {
  it('serves /healthz and a /readyz that checks the database and Redis', async () => {
    expect((await api(gw.url, undefined, 'GET', '/healthz')).body).toEqual({ status: 'ok' });
    const ready = await api(gw.url, undefined, 'GET', '/readyz');
    expect(ready.status).toBe(200);
    expect(ready.body.checks.map((c: { name: string; ok: boolean }) => [c.name, c.ok])).toEqual([
      ['database', true],
      ['redis', true],
    ]);
  });

  it('reports not ready, naming Redis, when Redis cannot be reached', async () => {
    const noRedis = await startTestGateway({ redisUrl: 'redis://127.0.0.1:1' });
    const res = await api(noRedis.url, undefined, 'GET', '/readyz');
    expect(res.status).toBe(503);
    expect(res.body.detail).toContain('redis');
    expect((await api(noRedis.url, undefined, 'GET', '/healthz')).status).toBe(200);
  });

  it('answers unknown routes with a 404 problem document and a request id', async () => {
    const res = await api(gw.url, undefined, 'GET', '/nope');
    expect(res.status).toBe(404);
    expect(res.body.requestId).toBe(res.headers.get('x-request-id'));
  });
});
