import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { inject } from 'vitest';
import { migrateDatabase, openDatabase, type Database } from '../../db/client.ts';
import { ensureTenant, issueToken, type Scope } from '../../runtime/auth/tokens.ts';
import { packDirectory, packFiles } from '../../runtime/bundle/archive.ts';
import { loadConfig, type Config } from '../../runtime/config.ts';
import { startGateway, type RunningGateway } from '../../runtime/gateway/server.ts';

export const repoRoot = resolve(import.meta.dirname, '..', '..');
export const sampleDir = join(repoRoot, 'functions', 'order-signer');

const cleanups: (() => Promise<void>)[] = [];

export async function tempDir(prefix = 'ebcc-test-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  cleanups.push(() => rm(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 }));
  return dir;
}

export async function cleanupAll(): Promise<void> {
  while (cleanups.length) await cleanups.pop()!();
}

export function testConfig(home: string, overrides: Partial<Config> = {}): Config {
  // Queues get a prefix of their own, so that gateways of parallel test files never share a job.
  return loadConfig(
    { REDIS_URL: inject('redisUrl') },
    {
      home,
      port: 0,
      logLevel: 'silent',
      queuePrefix: `t${randomBytes(6).toString('hex')}`,
      batchWorkers: false,
      ...overrides,
    },
  );
}

export interface TestGateway extends RunningGateway {
  home: string;
  config: Config;
  database: Database;
  token(tenant: string, scopes?: Scope[], expiresAt?: number | null): Promise<string>;
}

/** A real gateway on a loopback port, with its own home directory and libSQL file. */
export async function startTestGateway(overrides: Partial<Config> = {}): Promise<TestGateway> {
  const home = await tempDir('ebcc-home-');
  const config = testConfig(home, overrides);
  const gateway = await startGateway(config);
  const database = await openDatabase(config.dbUrl);
  await migrateDatabase(database);
  cleanups.push(async () => {
    database.close();
    await gateway.close();
  });
  return {
    ...gateway,
    home,
    config,
    database,
    token: async (tenant, scopes = ['admin'], expiresAt = null) => {
      const t = await ensureTenant(database.db, tenant);
      return (await issueToken(database.db, { tenantId: t.id, name: 'test', scopes, expiresAt })).token;
    },
  };
}

export type ManifestEdit = (manifest: Record<string, any>) => void;

/** Packs a copy of the sample function, optionally edited, into a bundle file. */
export async function sampleBundle(
  edit?: ManifestEdit,
  extraFiles: Record<string, string | Buffer> = {},
): Promise<string> {
  const dir = await tempDir('ebcc-fn-');
  await cp(sampleDir, dir, { recursive: true });
  const manifestPath = join(dir, 'composite.json');
  const manifest = JSON.parse(await readFile(manifestPath, 'utf8'));
  edit?.(manifest);
  await writeFile(manifestPath, JSON.stringify(manifest, null, 2));
  for (const [path, data] of Object.entries(extraFiles)) await writeFile(join(dir, path), data);
  const out = join(await tempDir('ebcc-bundle-'), 'bundle.tgz');
  await packDirectory(dir, out);
  return out;
}

export async function bundleFromFiles(files: Record<string, string | Buffer>): Promise<string> {
  const out = join(await tempDir('ebcc-bundle-'), 'bundle.tgz');
  await packFiles(files, out);
  return out;
}

export async function upload(
  url: string,
  token: string | undefined,
  bundlePath: string,
  contentType = 'application/gzip',
): Promise<{ status: number; body: any }> {
  const data = await readFile(bundlePath);
  const response = await fetch(`${url}/v1/functions`, {
    method: 'POST',
    headers: { 'content-type': contentType, ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: data,
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

export async function api(
  url: string,
  token: string | undefined,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; body: any; headers: Headers }> {
  const response = await fetch(`${url}${path}`, {
    method,
    headers: {
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
    },
    body: body !== undefined ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null, headers: response.headers };
}

/** An order the sample function (functions/order-signer) accepts. */
export const sampleOrder = (orderId: string) => ({
  orderId,
  amountCents: 990,
  currency: 'EUR',
  items: [{ sku: 'pen', qty: 3 }],
});

/** POSTs a JSON body to a gateway path with a bearer token, as an HTTP client invokes a function. */
export function postJson(
  url: string,
  path: string,
  token: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<Response> {
  return fetch(`${url}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
}

/** A gateway with the sample function deployed by an admin of tenant "acme". */
export async function startSampleGateway(
  overrides: Partial<Config> = {},
): Promise<{ gw: TestGateway; token: string }> {
  const gw = await startTestGateway(overrides);
  const token = await gw.token('acme', ['admin']);
  const deployed = await upload(gw.url, token, await sampleBundle());
  if (deployed.status !== 201)
    throw new Error(`deploying the sample failed: ${JSON.stringify(deployed.body)}`);
  return { gw, token };
}

/** Every regular file under `dir`, as absolute paths. */
export function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name));
}
