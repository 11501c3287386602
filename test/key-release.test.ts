import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configureAdapters, trustAnchors } from '../adapters/index.ts';
import { appraiseEnclaveKey, parseTrustAnchor } from '../runtime/evidence/index.ts';
import { SECRET_FORMAT } from '../runtime/keyrelease/release.ts';
import { SEALED_CONTENT_TYPE, sealRequest } from '../runtime/seal/envelope.ts';
import { createHash } from 'node:crypto';
import {
  api,
  bundleFromFiles,
  cleanupAll,
  startSampleGateway,
  upload,
  type TestGateway,
} from './helpers/env.ts';
import { scanFiles } from './helpers/host-scan.ts';

let gw: TestGateway;
let token: string;
const anchors = () => [parseTrustAnchor(trustAnchors()[0]!.anchor)];

beforeAll(async () => {
  ({ gw, token } = await startSampleGateway());
  configureAdapters({ dataDir: gw.home });
});
afterAll(cleanupAll);

async function putSecret(
  name: string,
  secret: Buffer,
  policy: { stage: string; measurements: string[] },
  fn = 'order-signer',
) {
  const broker = (await api(gw.url, token, 'GET', '/v1/key-release/key')).body;
  const plaintext = { format: SECRET_FORMAT, name, secret: secret.toString('base64url'), policy };
  const { envelope } = sealRequest(
    Buffer.from(broker.enclave.encryptionKey, 'hex'),
    Buffer.from(JSON.stringify(plaintext)),
    { public: { policy } },
  );
  const response = await fetch(`${gw.url}/v1/functions/${fn}/secrets/${name}`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${token}`, 'content-type': SEALED_CONTENT_TYPE },
    body: new Uint8Array(envelope),
  });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
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

  it('releases a secret to the measured stage, refuses a wrong measurement with a reason, and logs both with evidence', async () => {
    const stageKey = (await api(gw.url, token, 'GET', '/v1/functions/order-signer/stages/sign/key')).body;
    const measurement = stageKey.enclave.measurement.value as string;
    const good = randomBytes(32);
    const bad = randomBytes(32);
    expect(
      (await putSecret('signing-key', good, { stage: 'sign', measurements: [measurement] })).status,
    ).toBe(201);
    expect(
      (await putSecret('other-key', bad, { stage: 'sign', measurements: ['00'.repeat(64)] })).status,
    ).toBe(201);
    await freshInstance();

    const released = (
      await api(gw.url, token, 'GET', '/v1/functions/order-signer/secrets/signing-key/releases')
    ).body.releases;
    expect(released).toHaveLength(1);
    expect(released[0]).toMatchObject({
      stage: 'sign',
      released: true,
      measurement: `sha3-512:${measurement}`,
    });
    expect(released[0].reason).toMatch(/^released to .*sealed to its encryption key/);
    expect(Buffer.from(released[0].nativeEvidence, 'base64')).toHaveLength(1352);

    const refused = (await api(gw.url, token, 'GET', '/v1/functions/order-signer/secrets/other-key/releases'))
      .body.releases;
    expect(refused).toHaveLength(1);
    expect(refused[0].released).toBe(false);
    expect(refused[0].reason).toBe(
      `measurement sha3-512:${measurement} is not one the policy of this secret allows`,
    );
    expect(Buffer.from(refused[0].nativeEvidence, 'base64')).toHaveLength(1352);

    // The host holds the secrets only sealed: neither is anywhere under its home, in any encoding.
    for (const secret of [good, bad])
      for (const form of [secret.toString('base64url'), secret.toString('hex'), secret.toString('base64')])
        expect(scanFiles(gw.home, form).hits).toEqual([]);

    // A secret whose policy names another stage is not even asked for.
    expect(
      (await putSecret('elsewhere', randomBytes(32), { stage: 'nope', measurements: [measurement] })).status,
    ).toBe(201);
    await freshInstance();
    expect(
      (await api(gw.url, token, 'GET', '/v1/functions/order-signer/secrets/elsewhere/releases')).body
        .releases,
    ).toEqual([]);
  });

  it('a oneshot stage process gets the released secret in its environment', async () => {
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
        },
      ],
    };
    const bundle = await bundleFromFiles({
      'composite.json': JSON.stringify(manifest),
      'anchor.js':
        "export default { async fetch(request, env) { return new Response(await (await env.stages.echo.invoke('x')).text()); } };",
      // The stage answers with a digest of the secret, never the secret.
      'stages/echo.mjs':
        "import { createHash } from 'node:crypto'; const s = process.env.EBCC_SECRET_API_TOKEN; process.stdout.write(s ? createHash('sha256').update(Buffer.from(s, 'base64url')).digest('hex') : 'none');",
    });
    const deployed = await upload(gw.url, token, bundle);
    expect(deployed.status, JSON.stringify(deployed.body)).toBe(201);
    const measurement = deployed.body.stages[0].measurement.value as string;
    const secret = randomBytes(24);
    expect(
      (await putSecret('api-token', secret, { stage: 'echo', measurements: [measurement] }, 'secret-echo'))
        .status,
    ).toBe(201);
    const response = await fetch(`${gw.url}/fn/secret-echo`, {
      headers: { authorization: `Bearer ${token}` },
    });
    expect(await response.text()).toBe(createHash('sha256').update(secret).digest('hex'));
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
