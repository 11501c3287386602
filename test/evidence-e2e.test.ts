import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configureAdapters, trustAnchors } from '../adapters/index.ts';
import { decodeEvidence, failedChecks, parseTrustAnchor, verifyBundle } from '../runtime/evidence/index.ts';
import { stageExecutions } from '../db/schema.ts';
import { EXIT } from '../runtime/cli/errors.ts';
import {
  api,
  cleanupAll,
  postJson,
  sampleOrder,
  startSampleGateway,
  tempDir,
  type TestGateway,
} from './helpers/env.ts';
import { runEbcc } from './helpers/process.ts';

let gw: TestGateway;
let token: string;
let anchorFile: string;

beforeAll(async () => {
  ({ gw, token } = await startSampleGateway());
  configureAdapters({ dataDir: gw.home });
  anchorFile = join(await tempDir(), 'trust-anchor.json');
  await writeFile(anchorFile, JSON.stringify(trustAnchors()[0]!.anchor));
});
afterAll(cleanupAll);

async function invoke(id: string, nonce?: string) {
  const response = await postJson(gw.url, '/fn/order-signer', token, sampleOrder(id), {
    ...(nonce ? { 'x-ebcc-nonce': nonce } : {}),
  });
  expect(response.status).toBe(200);
  return response.headers.get('x-ebcc-invocation')!;
}

const anchors = () => [parseTrustAnchor(trustAnchors()[0]!.anchor)];
const evidenceOf = async (id: string) =>
  (await api(gw.url, token, 'GET', `/v1/invocations/${id}/evidence`)).body;

describe('evidence, end to end on sim', () => {
  it('binds each execution, signed inside the enclave, and verifies offline', async () => {
    const nonce = 'a1b2c3d4e5f60718293a4b5c6d7e8f90';
    const id = await invoke('e-1', nonce);
    const bundle = await evidenceOf(id);
    expect(bundle.format).toBe('ebcc-evidence-bundle/1');
    const [execution] = bundle.executions;
    const { claims } = decodeEvidence(Buffer.from(execution.evidence, 'base64'));
    expect(claims).toMatchObject({
      kind: 'execution',
      function: 'order-signer',
      stage: 'sign',
      eid: execution.eid,
      backend: 'sim',
      hardwareProtected: false,
    });
    expect(claims.nonce?.toString('hex')).toBe(nonce);
    const result = verifyBundle(bundle, {
      trustAnchors: anchors(),
      nonce: Buffer.from(nonce, 'hex'),
      allowSim: true,
    });
    expect(failedChecks(result)).toEqual([]);
    expect(result['ear.status']).toBe('affirming');

    const withoutSim = verifyBundle(bundle, { trustAnchors: anchors(), allowSim: false });
    expect(withoutSim['ear.status']).toBe('contraindicated');
    expect(failedChecks(withoutSim).join('\n')).toContain('hardware');
  });

  it("chains a persistent enclave's executions, and shows a deleted entry", async () => {
    await invoke('c-1');
    await invoke('c-2');
    const id = await invoke('c-3');
    const bundle = await evidenceOf(id);
    expect(bundle.chain.length).toBeGreaterThanOrEqual(2);
    expect(verifyBundle(bundle, { trustAnchors: anchors(), allowSim: true })['ear.status']).toBe('affirming');
    const dropped = { ...bundle, chain: bundle.chain.slice(1) };
    const result = verifyBundle(dropped, { trustAnchors: anchors(), allowSim: true });
    expect(result['ear.status']).toBe('contraindicated');
    expect(failedChecks(result).join('\n')).toMatch(/chain/);
  });

  it('detects a response changed in the database after the fact', async () => {
    const id = await invoke('t-1');
    // The response is sealed at rest: flip one byte of its ciphertext.
    const { db } = gw.database;
    const [row] = await db.select().from(stageExecutions).where(eq(stageExecutions.invocationId, id));
    const altered = Buffer.from(row!.responseInline!);
    altered[20] = altered[20]! ^ 0xff;
    await db.update(stageExecutions).set({ responseInline: altered }).where(eq(stageExecutions.id, row!.id));
    const read = await api(gw.url, token, 'GET', `/v1/invocations/${id}`);
    expect(read.status).toBe(409);
    expect(read.body.type).toBe('urn:ebcc:problem:artifact-integrity');
    const result = verifyBundle(await evidenceOf(id), { trustAnchors: anchors(), allowSim: true });
    expect(result['ear.status']).toBe('contraindicated');
    expect(failedChecks(result).join('\n')).toContain('artifact.response');
  });

  it('is checked by `ebcc export` and `ebcc verify` with nothing but the bundle and the trust anchor', async () => {
    const nonce = '00112233445566778899aabbccddeeff';
    const id = await invoke('cli-1', nonce);
    const env = { EBCC_URL: gw.url, EBCC_TOKEN: token };
    const file = join(await tempDir(), 'bundle.json');
    expect((await runEbcc(['export', id, '-o', file], env)).code).toBe(0);
    const offline = { EBCC_URL: 'http://127.0.0.1:1' };
    const ok = await runEbcc(
      ['verify', file, '--trust-anchor', anchorFile, '--allow-sim', '--nonce', nonce],
      offline,
    );
    expect(ok.stdout.trim()).toBe('affirming');
    expect(ok.code).toBe(0);
    const replay = await runEbcc(
      ['verify', file, '--trust-anchor', anchorFile, '--allow-sim', '--nonce', 'ff'.repeat(16)],
      offline,
    );
    expect(replay.code).toBe(EXIT.failed);
    expect(replay.stdout).toContain('contraindicated');
    expect(replay.stdout).toContain('nonce');
    const noSim = await runEbcc(['verify', file, '--trust-anchor', anchorFile, '--json'], offline);
    expect(noSim.code).toBe(EXIT.failed);
    expect(JSON.parse(noSim.stdout)['ear.status']).toBe('contraindicated');
    const noAnchor = await runEbcc(['verify', file, '--allow-sim'], offline);
    expect(noAnchor.code).toBe(EXIT.usage);
  }, 60_000);

  it('refuses a nonce that is not 8 to 64 bytes of hex (the sample anchor lets the StageError through)', async () => {
    const response = await postJson(gw.url, '/fn/order-signer', token, sampleOrder('n-1'), {
      'x-ebcc-nonce': 'not-hex',
    });
    expect(response.status).toBe(502);
    const problem = await response.json();
    expect(problem.type).toBe('urn:ebcc:problem:anchor-error');
    expect(problem.detail).toContain('StageError: the nonce must be 8 to 64 bytes');
  });

  it('keeps verifying old evidence against the old anchor after the root is rotated, and not the new one', async () => {
    const id = await invoke('r-1');
    const bundle = await evidenceOf(id);
    const env = { EBCC_HOME: gw.home };
    const before = JSON.parse((await runEbcc(['trust', 'export'], env)).stdout);
    const rotated = await runEbcc(['trust', 'rotate'], env);
    expect(rotated.code).toBe(0);
    const after = JSON.parse(rotated.stdout);
    expect(after.devicePublicKey).not.toBe(before.devicePublicKey);
    expect(
      verifyBundle(bundle, { trustAnchors: [parseTrustAnchor(before)], allowSim: true })['ear.status'],
    ).toBe('affirming');
    const withNew = verifyBundle(bundle, { trustAnchors: [parseTrustAnchor(after)], allowSim: true });
    expect(withNew['ear.status']).toBe('contraindicated');
    expect(failedChecks(withNew).join('\n')).toContain('trust-anchor');
  }, 30_000);

  it('points to the evidence from every response, and embeds it when asked', async () => {
    const plain = await postJson(gw.url, '/fn/order-signer', token, sampleOrder('h-1'));
    const id = plain.headers.get('x-ebcc-invocation');
    expect(plain.headers.get('x-ebcc-evidence')).toBe(`/v1/invocations/${id}/evidence`);
    expect(plain.headers.get('x-ebcc-evidence-bundle')).toBeNull();
    const embedded = await postJson(gw.url, '/fn/order-signer', token, sampleOrder('h-2'), {
      'x-ebcc-evidence': 'embed',
    });
    expect(embedded.status).toBe(200);
    expect(embedded.headers.get('x-ebcc-evidence-embedded')).toBe('gzip+base64url');
    const bundle = JSON.parse(
      gunzipSync(Buffer.from(embedded.headers.get('x-ebcc-evidence-bundle')!, 'base64url')).toString(),
    );
    expect(bundle.invocation.id).toBe(embedded.headers.get('x-ebcc-invocation'));
    expect(verifyBundle(bundle, { trustAnchors: anchors(), allowSim: true })['ear.status']).toBe('affirming');
    // The response the caller holds is the one the enclave signed.
    const body = Buffer.from(await embedded.arrayBuffer());
    const signed = JSON.parse(Buffer.from(bundle.executions[0].artifacts.response, 'base64').toString());
    expect(JSON.parse(body.toString()).signature).toBe(signed.signature);
  });
});
