import { randomBytes } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configureAdapters, trustAnchors } from '../adapters/index.ts';
import { dataKeys, stageExecutions } from '../db/schema.ts';
import { artifactAad, openBytes, sealBytes } from '../runtime/artifacts/sealing.ts';
import { EXIT } from '../runtime/cli/errors.ts';
import { failedChecks, parseTrustAnchor, verifyBundle } from '../runtime/evidence/index.ts';
import { ensureTenant } from '../runtime/auth/tokens.ts';
import { DataKeyring } from '../runtime/keys/data-keys.ts';
import { FileKekProvider, KekError } from '../runtime/keys/kek.ts';
import {
  api,
  cleanupAll,
  postJson,
  sampleBundle,
  sampleOrder,
  startSampleGateway,
  tempDir,
  upload,
  type TestGateway,
} from './helpers/env.ts';
import { runEbcc } from './helpers/process.ts';

let gw: TestGateway;
let token: string;

beforeAll(async () => {
  ({ gw, token } = await startSampleGateway());
  configureAdapters({ dataDir: gw.home });
});
afterAll(cleanupAll);

const marker = () => `m${randomBytes(12).toString('hex')}`;

async function invoke(orderId: string, path = '/fn/order-signer', as = token) {
  const response = await postJson(gw.url, path, as, sampleOrder(orderId));
  expect(response.status).toBe(200);
  return response.headers.get('x-ebcc-invocation')!;
}

const rowsOf = (invocationId: string) =>
  gw.database.db.select().from(stageExecutions).where(eq(stageExecutions.invocationId, invocationId));

/** Every byte of the gateway's database files (main file and WAL). */
async function databaseBytes(): Promise<Buffer> {
  const path = gw.config.dbUrl.slice('file:'.length);
  const files = [path, `${path}-wal`].filter((f) => existsSync(f));
  return Buffer.concat(await Promise.all(files.map((f) => readFile(f))));
}

const anchors = () => [parseTrustAnchor(trustAnchors()[0]!.anchor)];

describe('artifacts sealed at rest', () => {
  it('makes the KEK file on first start, owner-only, and refuses a loose or short one', async () => {
    expect(gw.config.kek).toEqual({ file: join(gw.home, 'keys', 'kek'), create: true });
    expect(statSync(gw.config.kek.file).mode & 0o777).toBe(0o600);
    expect(statSync(gw.config.kek.file).size).toBe(32);
    const dir = await tempDir();
    await writeFile(join(dir, 'loose'), randomBytes(32), { mode: 0o644 });
    expect(() => FileKekProvider.open(join(dir, 'loose'), { create: false })).toThrow(/chmod 600/);
    await writeFile(join(dir, 'short'), randomBytes(16), { mode: 0o600 });
    expect(() => FileKekProvider.open(join(dir, 'short'), { create: false })).toThrow(/exactly 32 bytes/);
    expect(() => FileKekProvider.open(join(dir, 'absent'), { create: false })).toThrow(/does not exist/);
    // A wrapped key opens only with its own KEK and context.
    const kek = FileKekProvider.open(gw.config.kek.file, { create: false });
    const dek = randomBytes(32);
    const wrapped = await kek.wrap(dek, 'ctx-a');
    expect(await kek.unwrap(wrapped, 'ctx-a')).toEqual(dek);
    await expect(kek.unwrap(wrapped, 'ctx-b')).rejects.toBeInstanceOf(KekError);
    const other = FileKekProvider.open(join(dir, 'other'), { create: true });
    await expect(other.unwrap(wrapped, 'ctx-a')).rejects.toBeInstanceOf(KekError);
  });

  it("refuses, clearly, a data key wrapped by another node's KEK", async () => {
    const dir = await tempDir();
    const tenant = await ensureTenant(gw.database.db, 'kek-a');
    const mine = new DataKeyring(gw.database, FileKekProvider.open(join(dir, 'a'), { create: true }));
    const key = await mine.activeKey(tenant.id);
    const theirs = new DataKeyring(gw.database, FileKekProvider.open(join(dir, 'b'), { create: true }));
    await expect(theirs.open(key.id, tenant.id)).rejects.toThrow(
      /every node sharing a database must share the KEK/,
    );
    await expect(theirs.activeKey(tenant.id)).rejects.toBeInstanceOf(KekError);
    expect(await mine.open(key.id, tenant.id)).toEqual(key.key);
  });

  it('binds a sealed artifact to its row, artifact and digest', () => {
    const key = randomBytes(32);
    const plain = Buffer.from('secret order');
    const sealed = sealBytes(key, artifactAad('sx_1', 'request', 'sha256:aa'), plain);
    expect(openBytes(key, artifactAad('sx_1', 'request', 'sha256:aa'), sealed)).toEqual(plain);
    expect(() => openBytes(key, artifactAad('sx_2', 'request', 'sha256:aa'), sealed)).toThrow(
      /does not open/,
    );
    expect(() => openBytes(key, artifactAad('sx_1', 'response', 'sha256:aa'), sealed)).toThrow(
      /does not open/,
    );
    expect(() => openBytes(randomBytes(32), artifactAad('sx_1', 'request', 'sha256:aa'), sealed)).toThrow(
      /does not open/,
    );
  });

  it('stores request, response and log encrypted; the tenant reads them in clear, and evidence verifies', async () => {
    const secret = marker();
    const id = await invoke(secret);
    const [row] = await rowsOf(id);
    expect(row!.sealedWith).toMatch(/^dk_/);
    expect(row!.sealed).toEqual(['request', 'response', 'log']);
    expect(row!.requestInline!.includes(secret)).toBe(false);
    expect(row!.requestDigest).toMatch(/^sha256:/);
    // Nowhere in the database files: not in the stage execution, not in any blob.
    const stageRows = Buffer.concat(
      (await gw.database.db.select().from(stageExecutions)).flatMap((r) =>
        [r.requestInline, r.responseInline, r.log].filter((b): b is Buffer => Boolean(b)),
      ),
    );
    expect(stageRows.includes(secret)).toBe(false);

    const { status, body } = await api(gw.url, token, 'GET', `/v1/invocations/${id}`);
    expect(status).toBe(200);
    const [x] = body.executions;
    expect(x.request.sealed).toBe(true);
    expect(x.response.sealed).toBe(true);
    expect(x.log.sealed).toBe(true);
    expect(JSON.parse(Buffer.from(x.request.base64, 'base64').toString()).orderId).toBe(secret);
    expect(x.request.size).toBe(Buffer.from(x.request.base64, 'base64').length);

    const bundle = (await api(gw.url, token, 'GET', `/v1/invocations/${id}/evidence`)).body;
    expect(bundle.contents.artifacts).toBe('plaintext');
    const result = verifyBundle(bundle, { trustAnchors: anchors(), allowSim: true });
    expect(failedChecks(result)).toEqual([]);
    expect(result['ear.status']).toBe('affirming');
  });

  it('stores the artifacts a manifest declares public in clear', async () => {
    const owner = await gw.token('open-co', ['admin']);
    const deployed = await upload(
      gw.url,
      owner,
      await sampleBundle((m) => {
        m.name = 'public-signer';
        m.triggers = {};
        m.stages[0].confidentiality = { public: ['request', 'log'] };
      }),
    );
    expect(deployed.status).toBe(201);
    const secret = marker();
    const id = await invoke(secret, '/fn/public-signer', owner);
    const [row] = await rowsOf(id);
    expect(row!.sealed).toEqual(['response']);
    expect(row!.requestInline!.includes(secret)).toBe(true);
    expect(row!.responseInline!.includes(secret)).toBe(false);
    const { body } = await api(gw.url, owner, 'GET', `/v1/invocations/${id}`);
    expect(body.executions[0].request.sealed).toBe(false);
    expect(body.executions[0].response.sealed).toBe(true);
    expect(JSON.parse(Buffer.from(body.executions[0].response.base64, 'base64').toString())).toHaveProperty(
      'signature',
    );
  });

  it('crypto-shreds a tenant: ciphertext stays, no key opens it, reads get 410, evidence still verifies', async () => {
    const secret = marker();
    const id = await invoke(secret);
    const [before] = await rowsOf(id);
    const [key] = await gw.database.db.select().from(dataKeys).where(eq(dataKeys.id, before!.sealedWith!));
    const wrapped = key!.wrapped!;

    // Only the tenant's own admin may shred, and the CLI wants a confirmation.
    const stranger = await gw.token('stranger', ['admin']);
    const foreign = await api(gw.url, stranger, 'DELETE', '/v1/tenants/acme/data-key');
    expect(foreign.status).toBe(404);
    const malformed = await api(gw.url, token, 'DELETE', '/v1/tenants/ACME!/data-key');
    expect(malformed.status).toBe(400);
    expect(malformed.body.type).toBe('urn:ebcc:problem:invalid-tenant');
    const invoker = await gw.token('acme', ['invoke']);
    expect((await api(gw.url, invoker, 'DELETE', '/v1/tenants/acme/data-key')).status).toBe(403);
    const env = { EBCC_URL: gw.url, EBCC_TOKEN: token };
    const unconfirmed = await runEbcc(['tenant', 'shred', 'acme'], env);
    expect(unconfirmed.code).toBe(EXIT.usage);
    expect(unconfirmed.stderr).toContain('--yes');
    const listed = await runEbcc(['tenant', 'keys', 'acme', '--json'], env);
    expect(listed.code).toBe(0);
    expect(JSON.parse(listed.stdout).map((k: { id: string }) => k.id)).toContain(key!.id);

    const shred = await runEbcc(['tenant', 'shred', 'acme', '--yes'], env);
    expect(shred.code).toBe(0);
    expect(shred.stdout).toContain(key!.id);

    // The ciphertext is still in the database; the wrapped key is not, in any database file.
    const [after] = await rowsOf(id);
    expect(after!.requestInline).toEqual(before!.requestInline);
    const [gone] = await gw.database.db.select().from(dataKeys).where(eq(dataKeys.id, key!.id));
    expect(gone!.wrapped).toBeNull();
    expect(gone!.shreddedAt).toBeTypeOf('number');
    expect((await databaseBytes()).includes(wrapped)).toBe(false);

    const read = await api(gw.url, token, 'GET', `/v1/invocations/${id}`);
    expect(read.status).toBe(410);
    expect(read.body.type).toBe('urn:ebcc:problem:data-key-shredded');
    expect(read.body.dataKey).toBe(key!.id);
    const cli = await runEbcc(['invocation', id], env);
    expect(cli.code).toBe(EXIT.failed);
    expect(cli.stderr).toContain('shredded');

    // The evidence still verifies over digests; the sealed artifacts are withheld and said to be.
    const bundle = (await api(gw.url, token, 'GET', `/v1/invocations/${id}/evidence`)).body;
    expect(bundle.contents.artifacts).toBe('withheld');
    expect(bundle.executions[0].withheld).toEqual(['request', 'response', 'log']);
    expect(JSON.stringify(bundle)).not.toContain(secret);
    const result = verifyBundle(bundle, { trustAnchors: anchors(), allowSim: true });
    const failed = failedChecks(result);
    expect(failed.every((line) => /artifact\.(request|response|log): withheld/.test(line))).toBe(true);
    expect(failed).toHaveLength(3);
    expect(result['ear.status']).toBe('warning');
    // The same through the CLI: export, then verify offline.
    const file = join(await tempDir(), 'shredded.json');
    expect((await runEbcc(['export', id, '-o', file], env)).code).toBe(0);
    const anchorFile = join(await tempDir(), 'anchor.json');
    await writeFile(anchorFile, JSON.stringify(trustAnchors()[0]!.anchor));
    const offline = await runEbcc(['verify', file, '--trust-anchor', anchorFile, '--allow-sim'], {
      EBCC_URL: 'http://127.0.0.1:1',
    });
    expect(offline.stdout).toMatch(/^warning\n/);
    expect(offline.stdout).toContain('artifact.request: withheld');
    expect(offline.code).toBe(EXIT.failed);

    // Shredding again has nothing to do; the tenant's next invocation gets a fresh key.
    const again = await api(gw.url, token, 'DELETE', '/v1/tenants/acme/data-key');
    expect(again.status).toBe(404);
    expect(again.body.type).toBe('urn:ebcc:problem:no-data-key');
    const next = await invoke(marker());
    const [fresh] = await rowsOf(next);
    expect(fresh!.sealedWith).not.toBe(key!.id);
    expect((await api(gw.url, token, 'GET', `/v1/invocations/${next}`)).status).toBe(200);
  });
});
