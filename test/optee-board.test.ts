// The OP-TEE backend on a real OP-TEE 4.5 secure world, emulated: QEMU boots TF-A, OP-TEE and Linux with the
// EBCC board agent (scripts/optee/boot.sh), once for this file. Functions whose stages are Trusted
// Applications are deployed, invoked over HTTP through the gateway, their artifacts checked and their
// evidence (signed by the attestation TA in the secure world) verified offline. Nothing here is mocked.
import { createHash, createPublicKey, verify } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configureAdapters, trustAnchors } from '../adapters/index.ts';
import { callFn, deployComposite, invocationRecord } from './helpers/composite-kit.ts';
import { api, cleanupAll, startTestGateway, tempDir, type TestGateway } from './helpers/env.ts';
import { bootBoard, type Board } from './helpers/optee-board.ts';
import { runEbcc } from './helpers/process.ts';

const ORDER_SIGNER_TA = '8d0c5a4e-3f61-4b2a-a7c9-1e5f2b6d9c30';
const FAULT_TA = '2c7e9b14-6a3d-4f85-b0e2-9d4c1a8f5e60';
const STEP = 240_000;

let board: Board;
let gw: TestGateway;
let token: string;
const previousAgent = process.env.EBCC_OPTEE_AGENT;

/** Reports a StageError as JSON, so that the failure paths can be asserted. */
const PROBE_ANCHOR = `
export default {
  async fetch(request, env) {
    try {
      const reply = await env.stages.fault.invoke(new Uint8Array(await request.arrayBuffer()));
      return Response.json({ ok: true, eid: reply.eid, body: await reply.text() });
    } catch (e) {
      if (e?.name !== 'StageError') return Response.json({ thrown: e.name, message: e.message }, { status: 500 });
      return Response.json({ code: e.code, status: e.status, message: e.message });
    }
  },
};
`;

/** The sample's anchor without its business rules: it asks the TA stage to sign the order. */
const SIGN_ANCHOR = `
export default {
  async fetch(request, env) {
    const order = await request.json();
    const signed = await env.stages.sign.invoke(order, { nonce: request.headers.get('x-ebcc-nonce') ?? undefined });
    return Response.json({ order: order.orderId, ...(await signed.json()) });
  },
};
`;

const taFile = (uuid: string) => readFileSync(join(board.buildDir, `${uuid}.ta`));

beforeAll(async () => {
  // A fresh machine downloads the packages and builds TF-A, the agent and the TAs first (cached after).
  board = await bootBoard(20 * 60_000);
  process.env.EBCC_OPTEE_AGENT = board.agentSocket;
  process.env.EBCC_OPTEE_BOARD = 'qemu-optee-test';
  gw = await startTestGateway();
  configureAdapters({ dataDir: gw.home });
  token = await gw.token('acme', ['admin']);
  await deployComposite(gw, token, {
    name: 'ta-signer',
    anchor: SIGN_ANCHOR,
    // The emulated board is slow, more so on a loaded machine: the anchor waits for it.
    anchorLimits: { timeoutMs: 180_000 },
    stages: [
      {
        name: 'sign',
        backend: 'optee',
        mode: 'persistent',
        image: { kind: 'executable', entry: `ta/${ORDER_SIGNER_TA}.ta` },
        limits: { timeoutMs: 60_000, maxResponseBytes: 8192 },
      },
    ],
    files: { [`ta/${ORDER_SIGNER_TA}.ta`]: { data: taFile(ORDER_SIGNER_TA), mode: 0o755 } },
  });
  await deployComposite(gw, token, {
    name: 'ta-fault',
    anchor: PROBE_ANCHOR,
    anchorLimits: { timeoutMs: 180_000 },
    stages: [
      {
        name: 'fault',
        backend: 'optee',
        mode: 'oneshot',
        image: { kind: 'executable', entry: `ta/${FAULT_TA}.ta` },
        limits: { timeoutMs: 60_000, maxResponseBytes: 1024 },
      },
    ],
    files: { [`ta/${FAULT_TA}.ta`]: { data: taFile(FAULT_TA), mode: 0o755 } },
  });
}, 25 * 60_000);

afterAll(async () => {
  try {
    await board?.shutdown();
  } finally {
    await cleanupAll();
  }
  if (previousAgent === undefined) delete process.env.EBCC_OPTEE_AGENT;
  else process.env.EBCC_OPTEE_AGENT = previousAgent;
  delete process.env.EBCC_OPTEE_BOARD;
}, 60_000);

const order = { orderId: 'ta-1', amountCents: 990, currency: 'EUR', items: [{ sku: 'pen', qty: 3 }] };

describe('OP-TEE backend on an emulated board', () => {
  let invocation: string;

  it(
    'signs an order in the stage TA, invoked over HTTP through the gateway',
    async () => {
      const nonce = '0123456789abcdef0123456789abcdef';
      const result = await callFn(gw, token, 'ta-signer', {
        body: JSON.stringify(order),
        headers: { 'content-type': 'application/json', 'x-ebcc-nonce': nonce },
      });
      expect(result.status, result.text).toBe(200);
      invocation = result.headers.get('x-ebcc-invocation')!;
      const signed = result.body;
      expect(signed).toMatchObject({ order: 'ta-1', alg: 'ES256' });
      // The TA's signature verifies under the public key it reports, over the bytes the stage received.
      const record = await invocationRecord(gw, token, invocation);
      const [execution] = record.executions ?? record.stageExecutions ?? [];
      expect(execution).toBeTruthy();
      const bundle = (await api(gw.url, token, 'GET', `/v1/invocations/${invocation}/evidence`)).body;
      const request = Buffer.from(bundle.executions[0].artifacts.request, 'base64');
      expect(JSON.parse(request.toString())).toEqual(order);
      expect(signed.digest).toBe(createHash('sha256').update(request).digest('hex'));
      const raw = Buffer.from(signed.publicKey, 'hex');
      const key = createPublicKey({
        key: {
          kty: 'EC',
          crv: 'P-256',
          x: raw.subarray(1, 33).toString('base64url'),
          y: raw.subarray(33).toString('base64url'),
        },
        format: 'jwk',
      });
      expect(
        verify('sha256', request, { key, dsaEncoding: 'ieee-p1363' }, Buffer.from(signed.signature, 'hex')),
      ).toBe(true);
      // The artifacts: the response as stored is what the TA answered; the measurement is the .ta digest.
      const response = JSON.parse(Buffer.from(bundle.executions[0].artifacts.response, 'base64').toString());
      expect(response).toEqual({
        alg: 'ES256',
        digest: signed.digest,
        signature: signed.signature,
        publicKey: signed.publicKey,
      });
      expect(bundle.enclaves[0]).toMatchObject({
        backend: 'optee',
        stage: 'sign',
        nativeFormat: 'ebcc-optee/1',
        measurement: {
          alg: 'sha256',
          value: createHash('sha256').update(taFile(ORDER_SIGNER_TA)).digest('hex'),
        },
      });
      const metadata = JSON.parse(Buffer.from(bundle.executions[0].artifacts.metadata, 'base64').toString());
      expect(metadata).toMatchObject({
        taUuid: ORDER_SIGNER_TA,
        stage: 'sign',
        function: 'ta-signer',
        nonce,
        seq: 1,
      });
    },
    STEP,
  );

  it(
    'keeps the persistent session: the next request is seq 2 of the same enclave',
    async () => {
      const result = await callFn(gw, token, 'ta-signer', {
        body: JSON.stringify({ ...order, orderId: 'ta-2' }),
        headers: { 'content-type': 'application/json' },
      });
      expect(result.status, result.text).toBe(200);
      const id = result.headers.get('x-ebcc-invocation')!;
      const bundle = (await api(gw.url, token, 'GET', `/v1/invocations/${id}/evidence`)).body;
      expect(bundle.executions[0].seq).toBe(2);
      const first = (await api(gw.url, token, 'GET', `/v1/invocations/${invocation}/evidence`)).body;
      expect(bundle.executions[0].eid).toBe(first.executions[0].eid);
    },
    STEP,
  );

  it(
    'verifies the secure-world evidence offline with `ebcc export` and `ebcc verify`',
    async () => {
      const env = { EBCC_URL: gw.url, EBCC_TOKEN: token };
      const dir = await tempDir();
      const file = join(dir, 'bundle.json');
      expect((await runEbcc(['export', invocation, '-o', file], env)).code).toBe(0);
      const anchor = trustAnchors().find((a) => a.backend === 'optee')!.anchor;
      expect(anchor).toMatchObject({ kind: 'ebcc-optee-attestation-key' });
      const anchorFile = join(dir, 'optee-anchor.json');
      await writeFile(anchorFile, JSON.stringify(anchor));
      const offline = { EBCC_URL: 'http://127.0.0.1:1' };
      const nonce = '0123456789abcdef0123456789abcdef';
      const ok = await runEbcc(
        ['verify', file, '--trust-anchor', anchorFile, '--allow-sim', '--nonce', nonce],
        offline,
      );
      expect(ok.stdout.trim(), ok.stdout + ok.stderr).toBe('affirming');
      expect(ok.code).toBe(0);
      // The emulated board with a public TA signing key is not hardware protection.
      const strict = await runEbcc(['verify', file, '--trust-anchor', anchorFile], offline);
      expect(strict.code).not.toBe(0);
      expect(strict.stdout).toContain('hardware');
      // A response changed after the fact no longer matches what the secure world signed.
      const bundle = JSON.parse(readFileSync(file, 'utf8'));
      bundle.executions[0].artifacts.response = Buffer.from('{"forged":true}').toString('base64');
      const forgedFile = join(dir, 'forged.json');
      await writeFile(forgedFile, JSON.stringify(bundle));
      const forged = await runEbcc(
        ['verify', forgedFile, '--trust-anchor', anchorFile, '--allow-sim'],
        offline,
      );
      expect(forged.code).not.toBe(0);
      expect(forged.stdout).toContain('evidence.signature');
      // Another key (e.g. a normal-world forgery) is not the provisioned attestation key.
      const other = {
        kind: 'ebcc-optee-attestation-key',
        keys: [{ publicKey: `04${'11'.repeat(64)}`, board: 'x', provisionedAt: 'now' }],
      };
      const otherFile = join(dir, 'other.json');
      await writeFile(otherFile, JSON.stringify(other));
      const wrong = await runEbcc(['verify', file, '--trust-anchor', otherFile, '--allow-sim'], offline);
      expect(wrong.code).not.toBe(0);
      expect(wrong.stdout).toContain('trust-anchor');
    },
    STEP,
  );
});

describe('OP-TEE bad input', () => {
  const fault = (body: string) => callFn(gw, token, 'ta-fault', { body });

  it(
    'echoes through a oneshot session (one session per request, each attested)',
    async () => {
      const result = await fault('hello');
      expect(result.status, result.text).toBe(200);
      expect(result.body).toMatchObject({ ok: true, body: 'hello' });
    },
    STEP,
  );

  it(
    'reports a TA that returns an error, and one that panics, as a failed stage',
    async () => {
      const error = await fault('error');
      expect(error.body).toMatchObject({ code: 'stage-failed', status: 502 });
      expect(error.body.message).toContain('TEE_ERROR_BAD_STATE');
      const panic = await fault('panic');
      expect(panic.body).toMatchObject({ code: 'stage-failed', status: 502 });
      expect(panic.body.message).toContain('TARGET_DEAD');
      // The failed executions are recorded with their exits.
      const record = await invocationRecord(gw, token, panic.headers.get('x-ebcc-invocation')!);
      expect(JSON.stringify(record)).toContain('crashed');
    },
    STEP,
  );

  it(
    'refuses a response over the stage limit',
    async () => {
      const big = await fault('big:5000');
      expect(big.body).toMatchObject({ code: 'response-too-large', status: 502 });
    },
    STEP,
  );

  it(
    'reports an unknown TA UUID',
    async () => {
      await deployComposite(gw, token, {
        name: 'ta-unknown',
        anchor: PROBE_ANCHOR,
        anchorLimits: { timeoutMs: 180_000 },
        stages: [
          {
            name: 'fault',
            backend: 'optee',
            mode: 'oneshot',
            image: { kind: 'executable', entry: 'ta/00000000-0000-4000-8000-00000000ebcc.ta' },
            limits: { timeoutMs: 60_000 },
          },
        ],
        // Not a TA at all: OP-TEE finds no valid TA for this UUID.
        files: { 'ta/00000000-0000-4000-8000-00000000ebcc.ta': { data: 'not a signed TA', mode: 0o755 } },
      });
      const result = await callFn(gw, token, 'ta-unknown', { body: 'x' });
      // The anchor sees the StageError: OP-TEE has no valid TA under that UUID, and says so.
      expect(result.body, result.text).toMatchObject({ code: 'enclave-start-failed', status: 503 });
      expect(result.body.message).toMatch(/TA 00000000-0000-4000-8000-00000000ebcc/);
      expect(result.body.message).toContain('TEE_ERROR_SECURITY');
    },
    STEP,
  );

  it(
    'says "backend unavailable" when tee-supplicant is not running, and works again once it is',
    async () => {
      await board.console('kill $(pidof tee-supplicant)');
      const down = await fault('hello');
      expect(down.body).toMatchObject({ code: 'backend-unavailable', status: 503 });
      expect(down.body.message).toContain('tee-supplicant');
      await board.console('tee-supplicant -d');
      // The restarted supplicant takes a moment to attach on the emulated board.
      let up = await fault('hello');
      for (let i = 0; i < 20 && !up.body?.ok; i++) {
        await new Promise((r) => setTimeout(r, 2000));
        up = await fault('hello');
      }
      expect(up.body, up.text).toMatchObject({ ok: true, body: 'hello' });
    },
    STEP,
  );

  it(
    'says "backend unavailable" when the board is down, and never falls back to sim',
    async () => {
      await board.shutdown();
      const down = await fault('hello');
      expect(down.body).toMatchObject({ code: 'backend-unavailable', status: 503 });
      expect(down.body.message).toContain('optee');
      const record = await invocationRecord(gw, token, down.headers.get('x-ebcc-invocation')!);
      expect(JSON.stringify(record)).not.toContain('"sim"');
    },
    STEP,
  );
});
