import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configureAdapters, trustAnchors } from '../adapters/index.ts';
import {
  checkSealedExecution,
  SealedClient,
  SealedClientError,
  verifyEnclaveKey,
} from '../runtime/client/index.ts';
import { failedChecks, parseTrustAnchor, verifyBundle } from '../runtime/evidence/index.ts';
import { generateKeyPairSync } from 'node:crypto';
import { softwareTrustAnchor, createSoftwareRoot } from '../runtime/evidence/software-root.ts';
import { sealRequest, SEALED_CONTENT_TYPE } from '../runtime/seal/envelope.ts';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { EXIT } from '../runtime/cli/errors.ts';
import {
  api,
  cleanupAll,
  sampleOrder,
  startSampleGateway,
  tempDir,
  type TestGateway,
} from './helpers/env.ts';
import { runEbcc } from './helpers/process.ts';

let gw: TestGateway;
let token: string;
let client: SealedClient;

const anchors = () => [parseTrustAnchor(trustAnchors()[0]!.anchor)];

beforeAll(async () => {
  ({ gw, token } = await startSampleGateway());
  configureAdapters({ dataDir: gw.home });
  client = new SealedClient({ url: gw.url, token, trustAnchors: anchors(), allowSim: true });
});
afterAll(cleanupAll);

describe('attested enclave keys', () => {
  it('serves the stage enclave key with native evidence that binds it, which a client verifies', async () => {
    const { status, body } = await api(gw.url, token, 'GET', '/v1/functions/order-signer/stages/sign/key');
    expect(status).toBe(200);
    expect(body.format).toBe('ebcc-enclave-key/1');
    expect(body.enclave.encryptionKey).toMatch(/^[0-9a-f]{64}$/);
    expect(body.sealing).toEqual({ required: false, publicFields: ['currency', 'amountCents'] });
    const verdict = verifyEnclaveKey(body, { trustAnchors: anchors(), allowSim: true });
    expect(verdict.appraisal.reasons.filter((r) => !r.ok)).toEqual([]);
    expect(verdict.trusted).toBe(true);

    // Without allowSim a software root is refused; with another root, nothing is trusted.
    expect(verifyEnclaveKey(body, { trustAnchors: anchors(), allowSim: false }).trusted).toBe(false);
    const stranger = softwareTrustAnchor(createSoftwareRoot());
    expect(verifyEnclaveKey(body, { trustAnchors: [stranger], allowSim: true }).trusted).toBe(false);

    // A host that swaps in its own encryption key breaks the binding.
    const mine = generateKeyPairSync('x25519')
      .publicKey.export({ format: 'der', type: 'spki' })
      .subarray(-32);
    const swapped = { ...body, enclave: { ...body.enclave, encryptionKey: mine.toString('hex') } };
    const refused = verifyEnclaveKey(swapped, { trustAnchors: anchors(), allowSim: true });
    expect(refused.trusted).toBe(false);
    expect(refused.appraisal.reasons.find((r) => r.check === 'native.binding')?.ok).toBe(false);
  });

  it('refuses a key request without a token, and for an unknown stage', async () => {
    expect((await api(gw.url, undefined, 'GET', '/v1/functions/order-signer/stages/sign/key')).status).toBe(
      401,
    );
    const missing = await api(gw.url, token, 'GET', '/v1/functions/order-signer/stages/nope/key');
    expect(missing.status).toBe(404);
    expect(missing.body.type).toMatch(/^urn:ebcc:problem:/);
  });
});

describe('sealed requests and responses', () => {
  it('round-trips a sealed order: the stage signs the plaintext, the reply opens only for the client', async () => {
    const order = sampleOrder(`ord-${randomBytes(6).toString('hex')}`);
    const result = await client.invoke('order-signer', 'sign', order, { path: '/' });
    expect(result.status).toBe(200);
    expect(result.sealed).toBe(true);
    const signed = JSON.parse(result.body.toString('utf8'));
    expect(signed.alg).toBe('Ed25519');
    expect(signed.signature).toMatch(/^[0-9a-f]{128}$/);

    // The evidence verifies as usual (over the envelopes), and binds the plaintexts the client knows.
    const bundle = await client.evidence(result.invocationId!);
    const ear = verifyBundle(bundle, { trustAnchors: anchors(), allowSim: true });
    expect(failedChecks(ear)).toEqual([]);
    const check = checkSealedExecution(bundle, result.exchange, result.body);
    expect(check.reasons).toEqual([]);
    expect(check.ok).toBe(true);
    expect(check.log?.toString('utf8')).toContain(`signed order ${order.orderId}`);
    // Tampering with what the client believes it got is caught by the keyed digests.
    expect(checkSealedExecution(bundle, result.exchange, Buffer.from('{"forged":1}')).ok).toBe(false);
  });

  it('the anchor sees only the public fields; a public field that differs from the sealed one is refused', async () => {
    const key = await client.key('order-signer', 'sign');
    const order = sampleOrder('ord-lie');
    const exchange = sealRequest(
      Buffer.from(key.enclave.encryptionKey, 'hex'),
      Buffer.from(JSON.stringify(order)),
      {
        public: { currency: 'EUR', amountCents: 1 },
      },
    );
    const response = await fetch(`${gw.url}/fn/order-signer`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': SEALED_CONTENT_TYPE },
      body: new Uint8Array(exchange.envelope),
    });
    expect(response.status).toBe(400);
    expect(((await response.json()) as { error: string }).error).toMatch(
      /public field "amountCents" differs/,
    );
  });

  it('refuses fields shown in clear that the manifest does not allow, and business rules still apply', async () => {
    const key = await client.key('order-signer', 'sign');
    const order = sampleOrder('ord-shown');
    const shown = sealRequest(
      Buffer.from(key.enclave.encryptionKey, 'hex'),
      Buffer.from(JSON.stringify(order)),
      {
        public: { currency: 'EUR', amountCents: 990, orderId: 'ord-shown' },
      },
    );
    const post = (body: Buffer) =>
      fetch(`${gw.url}/fn/order-signer`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': SEALED_CONTENT_TYPE },
        body: new Uint8Array(body),
      });
    const r1 = await post(shown.envelope);
    expect(r1.status).toBe(422);
    expect(((await r1.json()) as { error: string }).error).toMatch(/orderId in clear/);
    const expensive = await client.invoke('order-signer', 'sign', { ...order, currency: 'JPY' });
    expect(expensive.status).toBe(422);
    expect(expensive.sealed).toBe(false);
  });

  it('a request sealed to another key is refused as misdirected (421), and the client refetches the key once', async () => {
    const other = generateKeyPairSync('x25519')
      .publicKey.export({ format: 'der', type: 'spki' })
      .subarray(-32);
    const exchange = sealRequest(other, Buffer.from(JSON.stringify(sampleOrder('ord-x'))), {
      public: { currency: 'EUR', amountCents: 990 },
    });
    const response = await fetch(`${gw.url}/fn/order-signer`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': SEALED_CONTENT_TYPE },
      body: new Uint8Array(exchange.envelope),
    });
    expect(response.status).toBe(421);
    // The enclave that refused is still serving.
    const ok = await client.invoke('order-signer', 'sign', sampleOrder('ord-after'));
    expect(ok.status, ok.body.toString()).toBe(200);
  });

  it('a client with the wrong trust anchor never sends anything', async () => {
    const wary = new SealedClient({
      url: gw.url,
      token,
      trustAnchors: [softwareTrustAnchor(createSoftwareRoot())],
      allowSim: true,
    });
    await expect(wary.invoke('order-signer', 'sign', sampleOrder('ord-no'))).rejects.toThrow(
      SealedClientError,
    );
    await expect(wary.key('order-signer', 'sign')).rejects.toThrow(/not trusted: native.trust-anchor/);
  });
});

describe('the CLI: ebcc key, ebcc verify <key file>, ebcc invoke --seal', () => {
  it('verifies the key, refuses it without --allow-sim, and invokes sealed end to end', async () => {
    const dir = await tempDir();
    const anchorFile = join(dir, 'anchor.json');
    await writeFile(anchorFile, JSON.stringify(trustAnchors()[0]!.anchor));
    const env = { EBCC_URL: gw.url, EBCC_TOKEN: token };
    const keyFile = join(dir, 'key.json');
    const key = await runEbcc(
      ['key', 'order-signer', 'sign', '--trust-anchor', anchorFile, '--allow-sim', '-o', keyFile],
      env,
    );
    expect(key.stdout.trim(), key.stderr).toBe('trusted (affirming)');
    expect(key.code).toBe(0);
    const offline = { EBCC_URL: 'http://127.0.0.1:1' };
    const strict = await runEbcc(['verify', keyFile, '--trust-anchor', anchorFile], offline);
    expect(strict.code).toBe(EXIT.failed);
    expect(strict.stdout).toMatch(/not trusted[\s\S]*hardware: not hardware-protected/);
    expect(
      (await runEbcc(['verify', keyFile, '--trust-anchor', anchorFile, '--allow-sim'], offline)).code,
    ).toBe(0);

    const order = JSON.stringify(sampleOrder('ord-cli'));
    const sealed = await runEbcc(
      [
        'invoke',
        'order-signer',
        '--seal',
        'sign',
        '-d',
        order,
        '--trust-anchor',
        anchorFile,
        '--allow-sim',
        '--json',
      ],
      env,
    );
    expect(sealed.code, sealed.stderr).toBe(0);
    const out = JSON.parse(sealed.stdout);
    expect(out.sealed).toBe(true);
    expect(JSON.parse(out.body).alg).toBe('Ed25519');
    const noAnchor = await runEbcc(['invoke', 'order-signer', '--seal', 'sign', '-d', order], env);
    expect(noAnchor.code).toBe(EXIT.usage);
    expect(noAnchor.stderr).toMatch(/trust anchor/);
  });
});
