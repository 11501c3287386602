import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enclaves } from '../db/schema.ts';
import {
  api,
  cleanupAll,
  postJson,
  sampleBundle,
  sampleOrder,
  startSampleGateway,
  upload,
  type TestGateway,
} from './helpers/env.ts';

let gw: TestGateway;
let token: string;

beforeAll(async () => {
  ({ gw, token } = await startSampleGateway());
});
afterAll(cleanupAll);

const create = async () => {
  const res = await api(gw.url, token, 'POST', '/v1/instances', {
    function: 'order-signer',
    annotations: { owner: 'ops' },
  });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body as {
    id: string;
    status: string;
    pid?: number;
    bundle: string;
    annotations: Record<string, string>;
    ociVersion: string;
  };
};
const processAlive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('composite lifecycle (OCI semantics)', () => {
  it('create leaves the instance created, with a live anchor, prepared enclaves and an OCI state', async () => {
    const state = await create();
    expect(state.ociVersion).toBe('1.2.0');
    expect(state.status).toBe('created');
    expect(state.pid).toBeGreaterThan(0);
    expect(processAlive(state.pid!)).toBe(true);
    expect(state.bundle).toContain('/cache/versions/');
    expect(state.annotations).toMatchObject({
      owner: 'ops',
      'ebcc.function': 'order-signer',
      'ebcc.version': '1.0.0',
    });
    const [enclave] = JSON.parse(state.annotations['ebcc.enclaves']!);
    expect(enclave).toMatchObject({ stage: 'sign', backend: 'sim', destroyed: false });
    expect(enclave.measurement).toMatch(/^sha3-512:[0-9a-f]{128}$/);
    const again = await api(gw.url, token, 'GET', `/v1/instances/${state.id}`);
    expect(again.body).toEqual(state);
    await api(gw.url, token, 'DELETE', `/v1/instances/${state.id}?force=true`);
  });

  it('enforces transitions: start twice, delete while running, kill after stop', async () => {
    const { id } = await create();
    expect((await api(gw.url, token, 'POST', `/v1/instances/${id}/start`)).body.status).toBe('running');
    const twice = await api(gw.url, token, 'POST', `/v1/instances/${id}/start`);
    expect(twice.status).toBe(409);
    expect(twice.body.detail).toBe(`instance ${id} is already running`);
    const deleting = await api(gw.url, token, 'DELETE', `/v1/instances/${id}`);
    expect(deleting.status).toBe(409);
    expect(deleting.body.detail).toContain('kill it first');
    const killed = await api(gw.url, token, 'POST', `/v1/instances/${id}/kill`, { signal: 'SIGTERM' });
    expect(killed.status).toBe(202);
    expect(killed.body.status).toBe('stopped');
    expect(killed.body.annotations['ebcc.stopReason']).toBe('killed by SIGTERM');
    expect(killed.body.pid).toBeUndefined();
    expect((await api(gw.url, token, 'POST', `/v1/instances/${id}/kill`)).status).toBe(409);
    expect((await api(gw.url, token, 'POST', `/v1/instances/${id}/start`)).status).toBe(409);
    const waited = await api(gw.url, token, 'GET', `/v1/instances/${id}/wait?timeout=1000`);
    expect(waited.body).toEqual({ status: 'stopped', exitStatus: 128 + 15, reason: 'killed by SIGTERM' });
    expect((await api(gw.url, token, 'DELETE', `/v1/instances/${id}`)).status).toBe(204);
    expect((await api(gw.url, token, 'GET', `/v1/instances/${id}`)).status).toBe(404);
  });

  it('delete destroys the enclaves and the processes', async () => {
    const state = await create();
    await api(gw.url, token, 'POST', `/v1/instances/${state.id}/start`);
    const eid = JSON.parse(state.annotations['ebcc.enclaves']!)[0].eid;
    expect((await api(gw.url, token, 'DELETE', `/v1/instances/${state.id}?force=true`)).status).toBe(204);
    expect(processAlive(state.pid!)).toBe(false);
    const rows = await gw.database.db.select().from(enclaves);
    expect(rows.find((e) => e.eid === eid)?.destroyedAt).toBeGreaterThan(0);
  });

  it('wait blocks until the instance stops', async () => {
    const { id } = await create();
    await api(gw.url, token, 'POST', `/v1/instances/${id}/start`);
    const stillRunning = await api(gw.url, token, 'GET', `/v1/instances/${id}/wait?timeout=200`);
    expect(stillRunning.body.status).toBe('running');
    const waiting = api(gw.url, token, 'GET', `/v1/instances/${id}/wait?timeout=10000`);
    await new Promise((r) => setTimeout(r, 100));
    await api(gw.url, token, 'POST', `/v1/instances/${id}/kill`, { signal: 'KILL' });
    expect((await waiting).body).toMatchObject({ status: 'stopped', exitStatus: 137 });
    await api(gw.url, token, 'DELETE', `/v1/instances/${id}`);
  });

  it('serializes concurrent operations on one CID', async () => {
    const { id } = await create();
    const starts = await Promise.all(
      Array.from({ length: 6 }, () => api(gw.url, token, 'POST', `/v1/instances/${id}/start`)),
    );
    expect(starts.map((s) => s.status).sort()).toEqual([200, 409, 409, 409, 409, 409]);
    const ops = await Promise.all([
      api(gw.url, token, 'POST', `/v1/instances/${id}/kill`, { signal: 'SIGKILL' }),
      api(gw.url, token, 'DELETE', `/v1/instances/${id}?force=true`),
      api(gw.url, token, 'POST', `/v1/instances/${id}/kill`, { signal: 'SIGKILL' }),
    ]);
    expect(ops.some((o) => o.status === 204)).toBe(true);
    expect((await api(gw.url, token, 'GET', `/v1/instances/${id}`)).status).toBe(404);
  });

  it('routes invocations to an instance the operator started, as a warm hit', async () => {
    const { id } = await create();
    await api(gw.url, token, 'POST', `/v1/instances/${id}/start`);
    const response = await postJson(gw.url, '/fn/order-signer', token, sampleOrder('x'));
    expect(response.status).toBe(200);
    expect(response.headers.get('x-ebcc-start')).toBe('warm');
    expect(response.headers.get('x-ebcc-cid')).toBe(id);
    const ps = await api(gw.url, token, 'GET', '/v1/instances');
    expect(ps.body.instances.map((s: { id: string }) => s.id)).toContain(id);
    await api(gw.url, token, 'DELETE', `/v1/instances/${id}?force=true`);
  });

  it('answers bad requests with problem documents', async () => {
    expect((await api(gw.url, token, 'POST', '/v1/instances', { function: 'nope' })).status).toBe(404);
    expect(
      (await api(gw.url, token, 'POST', '/v1/instances', { function: 'order-signer', version: '9' })).status,
    ).toBe(404);
    expect((await api(gw.url, token, 'POST', '/v1/instances', { fn: 'order-signer' })).status).toBe(400);
    expect((await api(gw.url, token, 'POST', '/v1/instances/c_nope/start')).status).toBe(404);
    const { id } = await create();
    const badSignal = await api(gw.url, token, 'POST', `/v1/instances/${id}/kill`, { signal: 'SIGNOPE' });
    expect(badSignal.status).toBe(400);
    const other = await gw.token('globex', ['admin']);
    expect((await api(gw.url, other, 'GET', `/v1/instances/${id}`)).status).toBe(404);
    expect((await api(gw.url, other, 'POST', `/v1/instances/${id}/kill`)).status).toBe(404);
    expect((await api(gw.url, other, 'DELETE', `/v1/instances/${id}?force=true`)).status).toBe(404);
    const invokeOnly = await gw.token('acme', ['invoke']);
    expect((await api(gw.url, invokeOnly, 'POST', `/v1/instances/${id}/kill`)).status).toBe(403);
    await api(gw.url, token, 'DELETE', `/v1/instances/${id}?force=true`);
  });

  it('deleting a function drains and deletes the instances its pool started', async () => {
    const other = await upload(gw.url, token, await sampleBundle((m) => (m.name = 'short-lived')));
    expect(other.status).toBe(201);
    const response = await postJson(gw.url, '/fn/short-lived', token, sampleOrder('x'));
    expect(response.status).toBe(200);
    const cid = response.headers.get('x-ebcc-cid')!;
    const { pid } = (await api(gw.url, token, 'GET', `/v1/instances/${cid}`)).body;
    expect(processAlive(pid)).toBe(true);
    // The pool's instances go with the function (operator-made ones need force: test/pool-upkeep.test.ts).
    expect((await api(gw.url, token, 'DELETE', '/v1/functions/short-lived')).status).toBe(204);
    expect(processAlive(pid)).toBe(false);
    expect((await api(gw.url, token, 'GET', `/v1/instances/${cid}`)).status).toBe(404);
    expect((await api(gw.url, token, 'GET', '/v1/functions/short-lived')).status).toBe(404);
  });
});
