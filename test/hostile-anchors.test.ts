// Hostile anchors and tenants (docs/security.md, rules A1, A2 and T1): anchor code that goes after
// other functions' files and stages, and a tenant that goes after another tenant's invocations,
// evidence and instances. The other anchor rules (A3–A6) are checked in anchor-failures.test.ts and
// anchor-sandbox.test.ts, whose tests carry their rule names too.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { callFn, deployComposite, invocationRecord, uploadComposite } from './helpers/composite-kit.ts';
import { api, cleanupAll, filesUnder, startTestGateway, type TestGateway } from './helpers/env.ts';

let gw: TestGateway;
let alice: string;
let mallory: string;

/** Reads every path it is given; forges stage calls on the harness's channel to the host. */
const INTRUDER = `
import { readFileSync, readdirSync, writeSync } from 'node:fs';
import { encodeFrame } from '/ebcc/wire.mjs';

function attempt(fn) {
  try {
    return { ok: true, value: String(fn()).slice(0, 80) };
  } catch (e) {
    return { ok: false, code: e?.code ?? null };
  }
}

/** A stage call written straight onto fd 3, bypassing env.stages (the host's reply goes to the harness). */
async function forgedStageCall(stage, invocation) {
  const callId = 1_000_000 + Math.floor(Math.random() * 1000);
  writeSync(3, encodeFrame({ t: 'stage', stage, callId, invocation }, Buffer.from('give me the secret')));
  await new Promise((r) => setTimeout(r, 300));
  return 'sent';
}

export default {
  async fetch(request, env) {
    const { paths, invocation } = await request.json();
    return Response.json({
      reads: Object.fromEntries(paths.map((p) => [p, attempt(() => readFileSync(p))])),
      listing: attempt(() => readdirSync('/fn/..').join(',')),
      stagesSeen: Object.keys(env.stages),
      secretViaEnv: typeof env.stages.secret,
      forgedCurrent: await forgedStageCall('secret', invocation),
      forgedNone: await forgedStageCall('secret', null),
    });
  },
};
`;

const VAULT = `
export default {
  async fetch(request, env) {
    const reply = await env.stages.secret.invoke('open');
    return new Response(await reply.text());
  },
};
`;

async function secretExecutions(): Promise<number> {
  const result = await gw.database.client.execute(
    "select count(*) from stage_executions where stage = 'secret'",
  );
  return Number(result.rows[0]![0]);
}

beforeAll(async () => {
  gw = await startTestGateway();
  alice = await gw.token('alice', ['admin']);
  mallory = await gw.token('mallory', ['admin']);
  await deployComposite(gw, alice, {
    name: 'vault',
    anchor: VAULT,
    stages: [{ name: 'secret', image: { kind: 'script', interpreter: 'sh', entry: 'stages/secret.sh' } }],
    files: { 'stages/secret.sh': 'cat >/dev/null; printf "the-vault-secret"\n' },
  });
  await deployComposite(gw, mallory, {
    name: 'intruder',
    anchor: INTRUDER,
    stages: [{ name: 'own', image: { kind: 'script', interpreter: 'sh', entry: 'stages/own.sh' } }],
    files: { 'stages/own.sh': 'exec cat\n' },
  });
}, 60_000);
afterAll(cleanupAll);

describe('a hostile anchor', () => {
  it('[A1 own files only] cannot read another function’s files, the database or EBCC’s home', async () => {
    const opened = await callFn(gw, alice, 'vault');
    expect(opened.status, opened.text).toBe(200);
    const vaultFiles = filesUnder(join(gw.home, 'cache')).filter((f) => /secret\.sh$|anchor\.mjs$/.test(f));
    expect(vaultFiles.length).toBeGreaterThan(0);
    const dbFile = gw.config.dbUrl.replace(/^file:/, '');
    const paths = [...vaultFiles, dbFile, `${dbFile}-wal`, '/fn/../../etc/passwd', '/proc/1/environ'];
    const result = await callFn(gw, mallory, 'intruder', {
      body: JSON.stringify({ paths, invocation: null }),
    });
    expect(result.status, result.text).toBe(200);
    for (const path of paths) {
      expect(result.body.reads[path], path).toMatchObject({ ok: false });
      expect(['ERR_ACCESS_DENIED', 'ENOENT', 'EACCES']).toContain(result.body.reads[path].code);
    }
    expect(result.body.listing).toMatchObject({ ok: false, code: 'ERR_ACCESS_DENIED' });
  });

  it('[A2 own stages only] cannot call another function’s stage, through env or forged frames', async () => {
    const before = await callFn(gw, alice, 'vault');
    expect(before.text).toBe('the-vault-secret');
    const secretBefore = await secretExecutions();
    const result = await callFn(gw, mallory, 'intruder', {
      body: JSON.stringify({ paths: [], invocation: 1 }),
    });
    expect(result.status, result.text).toBe(200);
    expect(result.body.stagesSeen).toEqual(['own']);
    expect(result.body.secretViaEnv).toBe('undefined');
    expect(result.body.forgedCurrent).toBe('sent');
    expect(JSON.stringify(result.body)).not.toContain('the-vault-secret');
    // The host resolves a stage name among the caller's own stages only: the forged calls ran nothing.
    const record = await invocationRecord(gw, mallory, result.headers.get('x-ebcc-invocation')!);
    expect(record.executions).toEqual([]);
    expect(await secretExecutions()).toBe(secretBefore);
  });
});

describe('a hostile tenant', () => {
  let invocationId: string;
  let cid: string;

  beforeAll(async () => {
    const call = await callFn(gw, alice, 'vault');
    expect(call.status).toBe(200);
    invocationId = call.headers.get('x-ebcc-invocation')!;
    cid = call.headers.get('x-ebcc-cid')!;
  });

  it('[T1 tenant isolation] cannot read another tenant’s invocation, its artifacts or its evidence', async () => {
    expect((await api(gw.url, alice, 'GET', `/v1/invocations/${invocationId}`)).status).toBe(200);
    for (const path of [`/v1/invocations/${invocationId}`, `/v1/invocations/${invocationId}/evidence`]) {
      const seen = await api(gw.url, mallory, 'GET', path);
      expect(seen.status, path).toBe(404);
      expect(JSON.stringify(seen.body)).not.toContain('the-vault-secret');
    }
  });

  it('[T1 tenant isolation] cannot see, kill or delete another tenant’s instance', async () => {
    expect((await api(gw.url, mallory, 'GET', `/v1/instances/${cid}`)).status).toBe(404);
    const listed = await api(gw.url, mallory, 'GET', '/v1/instances');
    expect(JSON.stringify(listed.body)).not.toContain(cid);
    expect(
      (await api(gw.url, mallory, 'POST', `/v1/instances/${cid}/kill`, { signal: 'SIGKILL' })).status,
    ).toBe(404);
    expect((await api(gw.url, mallory, 'DELETE', `/v1/instances/${cid}?force=true`)).status).toBe(404);
    // Still alice's, and still serving.
    expect((await api(gw.url, alice, 'GET', `/v1/instances/${cid}`)).body.status).toBe('running');
    expect((await callFn(gw, alice, 'vault')).text).toBe('the-vault-secret');
  });

  it('[T1 tenant isolation] cannot invoke, deploy over, roll back or delete another tenant’s function', async () => {
    const invoked = await callFn(gw, mallory, 'vault');
    expect(invoked.status).toBe(404);
    expect(invoked.text).not.toContain('the-vault-secret');
    const redeploy = await uploadComposite(gw, mallory, { name: 'vault', version: '9.9.9', anchor: VAULT });
    expect(redeploy.status).toBe(409);
    expect((await api(gw.url, mallory, 'POST', '/v1/functions/vault/rollback', {})).status).toBe(404);
    expect((await api(gw.url, mallory, 'DELETE', '/v1/functions/vault?force=true')).status).toBe(404);
    expect((await callFn(gw, alice, 'vault')).text).toBe('the-vault-secret');
  });
});
