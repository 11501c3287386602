import { createPublicKey, randomBytes, verify } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configureAdapters, trustAnchors } from '../adapters/index.ts';
import { appraiseEnclaveKey, parseTrustAnchor } from '../runtime/evidence/index.ts';
import { createHash } from 'node:crypto';
import { canonicalJson } from '../runtime/util/canonical-json.ts';
import {
  api,
  bundleFromFiles,
  cleanupAll,
  postJson,
  sampleOrder,
  startSampleGateway,
  upload,
  type TestGateway,
} from './helpers/env.ts';
import { scanFiles } from './helpers/host-scan.ts';
import { ed25519FromSeed, putSecret as putSecretAs } from './helpers/secrets.ts';

let gw: TestGateway;
let token: string;
const anchors = () => [parseTrustAnchor(trustAnchors()[0]!.anchor)];

beforeAll(async () => {
  ({ gw, token } = await startSampleGateway());
  configureAdapters({ dataDir: gw.home });
});
afterAll(cleanupAll);

const putSecret = (
  name: string,
  secret: Buffer,
  policy: { stage: string; measurements: string[] },
  fn = 'order-signer',
) => putSecretAs(gw.url, token, fn, name, secret, policy);

async function order(body: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await postJson(gw.url, '/fn/order-signer/', token, body);
  const text = await response.text();
  return { status: response.status, body: JSON.parse(text) as Record<string, unknown> };
}

/** Stops every instance, then starts a new one: its enclaves are attested afresh and ask for secrets. */
async function freshInstance(): Promise<void> {
  for (const i of (await api(gw.url, token, 'GET', '/v1/instances')).body.instances)
    expect((await api(gw.url, token, 'DELETE', `/v1/instances/${i.id}?force=true`)).status).toBe(204);
  const created = await api(gw.url, token, 'POST', '/v1/instances', { function: 'order-signer' });
  expect(created.status, JSON.stringify(created.body)).toBe(201);
}

describe('secrets released only after attestation', () => {
  it("serves the key broker's key with evidence a tenant verifies (the broker is an enclave too)", async () => {
    const { status, body } = await api(gw.url, token, 'GET', '/v1/key-release/key');
    expect(status).toBe(200);
    expect(body.format).toBe('ebcc-key-broker/1');
    const reference = [{ stage: 'key-broker', measurements: [body.enclave.measurement] }];
    const ok = appraiseEnclaveKey(body.enclave, body.cid, {
      trustAnchors: anchors(),
      allowSim: true,
      referenceValues: reference,
    });
    expect(ok.reasons.filter((r) => !r.ok)).toEqual([]);
    // The broker's key is derived from its sealing key: the same across requests (and restarts).
    expect((await api(gw.url, token, 'GET', '/v1/key-release/key')).body.kid).toBe(body.kid);
  });

  it("releases the tenant's signing key to the measured persistent stage, which signs with it", async () => {
    const stageKey = (await api(gw.url, token, 'GET', '/v1/functions/order-signer/stages/sign/key')).body;
    const measurement = stageKey.enclave.measurement.value as string;
    // Before any upload the sample's key is optional: the stage makes its own inside the enclave.
    const before = await order(sampleOrder('o-before'));
    expect(before.status, JSON.stringify(before.body)).toBe(200);
    expect(before.body.keySource).toBe('enclave');

    const seed = randomBytes(32);
    expect(
      (await putSecret('signing-key', seed, { stage: 'sign', measurements: [measurement] })).status,
    ).toBe(201);
    await freshInstance();
    const released = (
      await api(gw.url, token, 'GET', '/v1/functions/order-signer/secrets/signing-key/releases')
    ).body.releases;
    // One release per enclave started since the upload (the pool may keep a warm instance besides).
    expect(released.length).toBeGreaterThanOrEqual(1);
    for (const entry of released) {
      expect(entry).toMatchObject({ stage: 'sign', released: true, measurement: `sha3-512:${measurement}` });
      expect(entry.reason).toMatch(/^released to .*sealed to its encryption key/);
      expect(Buffer.from(entry.nativeEvidence, 'base64')).toHaveLength(1352);
    }

    // The persistent stage's process started after the release, with the tenant's key: the signature
    // verifies under the public half of the seed the tenant uploaded.
    const tenantPublic = createPublicKey(ed25519FromSeed(seed));
    const signed = await order(sampleOrder('o-released'));
    expect(signed.status, JSON.stringify(signed.body)).toBe(200);
    expect(signed.body.keySource).toBe('tenant');
    expect(signed.body.publicKey).toBe(
      tenantPublic.export({ format: 'der', type: 'spki' }).subarray(-32).toString('hex'),
    );
    const message = Buffer.from(canonicalJson(sampleOrder('o-released')));
    expect(verify(null, message, tenantPublic, Buffer.from(signed.body.signature as string, 'hex'))).toBe(
      true,
    );

    // The host holds the seed only sealed: it is nowhere under its home, in any encoding.
    for (const form of [seed.toString('base64url'), seed.toString('hex'), seed.toString('base64')])
      expect(scanFiles(gw.home, form).hits).toEqual([]);
  });

  it('refuses the secret to a wrong measurement with a clear reason, logs it with evidence, and the stage does not start', async () => {
    const stageKey = (await api(gw.url, token, 'GET', '/v1/functions/order-signer/stages/sign/key')).body;
    const measurement = stageKey.enclave.measurement.value as string;
    const elsewhere = 'ab'.repeat(64);
    expect(
      (await putSecret('signing-key', randomBytes(32), { stage: 'sign', measurements: [elsewhere] })).status,
    ).toBe(201);
    // Enclaves started before the upload keep the key they were given: stop every instance that got
    // one (the pool's warm instance may still have been starting with the previous secret). Instances
    // the pool keeps trying to create from now on fail, each with its refusal logged.
    for (let round = 0; round < 20; round++) {
      const started = (await api(gw.url, token, 'GET', '/v1/instances')).body.instances.filter(
        (i: { status: string }) => i.status !== 'creating',
      );
      if (!started.length) break;
      for (const i of started) await api(gw.url, token, 'DELETE', `/v1/instances/${i.id}?force=true`);
      await new Promise((r) => setTimeout(r, 250));
    }

    const reason = `measurement sha3-512:${measurement} is not one the policy of this secret allows`;
    const created = await api(gw.url, token, 'POST', '/v1/instances', { function: 'order-signer' });
    expect(created.status).toBe(503);
    expect(created.body.type).toBe('urn:ebcc:problem:stage-secret-release-refused');
    expect(created.body.detail).toBe(`secret "signing-key" was not released to stage "sign": ${reason}`);
    // And no enclave serves with a key of its own instead: invocations fail with the same reason.
    const invoked = await order(sampleOrder('o-refused'));
    expect(invoked.status).toBe(503);
    expect(JSON.stringify(invoked.body)).toContain(reason);

    const log = (await api(gw.url, token, 'GET', '/v1/functions/order-signer/secrets/signing-key/releases'))
      .body.releases;
    const refusals = log.filter((r: { released: boolean }) => !r.released);
    expect(refusals.length).toBeGreaterThanOrEqual(2);
    for (const refusal of refusals) {
      expect(refusal.reason).toBe(reason);
      expect(refusal.measurement).toBe(`sha3-512:${measurement}`);
      expect(Buffer.from(refusal.nativeEvidence, 'base64')).toHaveLength(1352);
    }
  });

  it('a oneshot stage process gets its declared secret in its environment; a missing one fails its start', async () => {
    const manifest = {
      schemaVersion: 1,
      name: 'secret-echo',
      version: '1.0.0',
      anchor: { entry: 'anchor.js' },
      stages: [
        {
          name: 'echo',
          mode: 'oneshot',
          image: { kind: 'script', interpreter: 'node', entry: 'stages/echo.mjs' },
          secrets: [{ name: 'api-token' }],
        },
      ],
    };
    const bundle = await bundleFromFiles({
      'composite.json': JSON.stringify(manifest),
      'anchor.js':
        "export default { async fetch(request, env) { try { return new Response(await (await env.stages.echo.invoke('x')).text()); } catch (e) { return new Response(`${e.code}: ${e.message}`, { status: 503 }); } } };",
      // The stage answers with a digest of the secret, never the secret.
      'stages/echo.mjs':
        "import { createHash } from 'node:crypto'; const s = process.env.EBCC_SECRET_API_TOKEN; process.stdout.write(s ? createHash('sha256').update(Buffer.from(s, 'base64url')).digest('hex') : 'none');",
    });
    const deployed = await upload(gw.url, token, bundle);
    expect(deployed.status, JSON.stringify(deployed.body)).toBe(201);
    const call = async () => {
      const response = await fetch(`${gw.url}/fn/secret-echo`, {
        headers: { authorization: `Bearer ${token}` },
      });
      return { status: response.status, text: await response.text() };
    };
    // Declared, not optional, not uploaded: the stage does not run without it.
    expect(await call()).toEqual({
      status: 503,
      text: 'secret-release-refused: secret "api-token" is declared by stage "echo" but has not been uploaded',
    });

    const measurement = deployed.body.stages[0].measurement.value as string;
    const secret = randomBytes(24);
    expect(
      (await putSecret('api-token', secret, { stage: 'echo', measurements: [measurement] }, 'secret-echo'))
        .status,
    ).toBe(201);
    // A secret the manifest does not declare is never asked for, even with a policy naming the stage.
    expect(
      (
        await putSecret(
          'undeclared',
          randomBytes(8),
          { stage: 'echo', measurements: [measurement] },
          'secret-echo',
        )
      ).status,
    ).toBe(201);
    expect(await call()).toEqual({ status: 200, text: createHash('sha256').update(secret).digest('hex') });
    expect(
      (await api(gw.url, token, 'GET', '/v1/functions/secret-echo/secrets/undeclared/releases')).body
        .releases,
    ).toEqual([]);
  });

  it('refuses an upload that is not a sealed envelope showing its policy', async () => {
    const plain = await fetch(`${gw.url}/v1/functions/order-signer/secrets/raw`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/octet-stream' },
      body: 'hunter2',
    });
    expect(plain.status).toBe(400);
    expect(((await plain.json()) as { type: string }).type).toBe('urn:ebcc:problem:invalid-sealed-secret');
    const noPolicy = await putSecret('x', randomBytes(8), { stage: 'sign', measurements: ['zz'] });
    expect(noPolicy.status).toBe(400);
    expect(
      (await api(gw.url, token, 'GET', '/v1/functions/order-signer/secrets/ghost/releases')).status,
    ).toBe(404);
  });
});
