import { execFileSync } from 'node:child_process';
import { request } from 'node:https';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXIT } from '../runtime/cli/errors.ts';
import { cleanupAll, sampleDir, tempDir } from './helpers/env.ts';
import { runEbcc, spawnServer, type ServerProcess } from './helpers/process.ts';

let home: string;
let server: ServerProcess;
let env: Record<string, string>;

beforeAll(async () => {
  home = await tempDir('ebcc-cli-');
  const created = await runEbcc(['token', 'create', '--tenant', 'acme', '--scopes', 'admin', '--json'], {
    EBCC_HOME: home,
  });
  expect(created.code).toBe(0);
  const token = JSON.parse(created.stdout).token as string;
  server = await spawnServer(home);
  env = { EBCC_HOME: home, EBCC_URL: server.url, EBCC_TOKEN: token };
});
afterAll(async () => {
  server?.child.kill('SIGTERM');
  await server?.exited;
  await cleanupAll();
});

describe('ebcc CLI', () => {
  it('has --help for every command', async () => {
    for (const args of [
      [],
      ['deploy'],
      ['functions'],
      ['token'],
      ['token', 'create'],
      ['serve'],
      ['migrate'],
    ]) {
      const res = await runEbcc([...args, '--help']);
      expect(res.code, args.join(' ')).toBe(0);
      expect(res.stdout).toContain('Usage: ebcc');
    }
  });

  it('deploys a directory, lists it as a table and as JSON, shows and rolls it back', async () => {
    const deployed = await runEbcc(['deploy', sampleDir], env);
    expect(deployed.stderr).toBe('');
    expect(deployed.code).toBe(0);
    expect(deployed.stdout).toMatch(/^deployed order-signer@1\.0\.0 \(sha256:[0-9a-f]{64}\)/);
    expect(deployed.stdout).toContain('stage sign [sim]');
    const again = await runEbcc(['deploy', sampleDir, '--json'], env);
    expect(JSON.parse(again.stdout).function).toBe('order-signer');
    const table = await runEbcc(['functions'], env);
    expect(table.stdout).toMatch(/NAME\s+ACTIVEVERSION/);
    expect(table.stdout).toContain('order-signer');
    const json = JSON.parse((await runEbcc(['functions', 'list', '--json'], env)).stdout);
    expect(json).toEqual([
      expect.objectContaining({ name: 'order-signer', activeVersion: '1.0.0', versions: 1 }),
    ]);
    const shown = JSON.parse((await runEbcc(['functions', 'show', 'order-signer'], env)).stdout);
    expect(shown.versions[0].stages[0].measurement.alg).toBe('sha3-512');
    const rollback = await runEbcc(['functions', 'rollback', 'order-signer'], env);
    expect(rollback.code).toBe(EXIT.conflict);
    expect(rollback.stderr).toContain('no version older');
  });

  it('exits with meaningful codes and a message on errors', async () => {
    const missing = await runEbcc(['deploy', '/no/such/dir'], env);
    expect(missing.code).toBe(EXIT.usage);
    expect(missing.stderr).toContain('does not exist');
    const unknownFn = await runEbcc(['functions', 'show', 'nope'], env);
    expect(unknownFn.code).toBe(EXIT.notFound);
    const noAuth = await runEbcc(['functions'], { ...env, EBCC_TOKEN: '' });
    expect(noAuth.code).toBe(EXIT.auth);
    const down = await runEbcc(['functions'], { ...env, EBCC_URL: 'http://127.0.0.1:1' });
    expect(down.code).toBe(EXIT.unreachable);
    expect(down.stderr).toContain('cannot reach the gateway');
    const badScopes = await runEbcc(['token', 'create', '--tenant', 'acme', '--scopes', 'root'], env);
    expect(badScopes.code).toBe(EXIT.usage);
    const unknownCmd = await runEbcc(['frobnicate'], env);
    expect(unknownCmd.code).toBe(EXIT.usage);
    expect(unknownCmd.stderr).toContain('unknown command');
  });

  it('lists and revokes tokens on the operator side', async () => {
    const made = JSON.parse(
      (await runEbcc(['token', 'create', '--tenant', 'acme', '--scopes', 'invoke', '--json'], env)).stdout,
    );
    const list = JSON.parse((await runEbcc(['token', 'list', '--json'], env)).stdout);
    expect(list.map((t: { id: string }) => t.id)).toContain(made.id);
    expect(JSON.stringify(list)).not.toContain(made.token);
    expect((await runEbcc(['token', 'revoke', made.id], env)).code).toBe(0);
    expect((await runEbcc(['token', 'revoke', 'tok_nope'], env)).code).toBe(EXIT.notFound);
    expect((await runEbcc(['functions'], { ...env, EBCC_TOKEN: made.token })).code).toBe(EXIT.auth);
  });

  it('migrates a database', async () => {
    const res = await runEbcc(['migrate'], { EBCC_HOME: await tempDir() });
    expect(res.code).toBe(0);
    expect(res.stdout).toContain('up to date');
  });
});

describe('TLS', () => {
  it('serves HTTPS when given a certificate and key', async () => {
    const dir = await tempDir('ebcc-tls-');
    const key = join(dir, 'key.pem');
    const cert = join(dir, 'cert.pem');
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-days',
        '1',
        '-subj',
        '/CN=localhost',
        '-addext',
        'subjectAltName=IP:127.0.0.1',
        '-keyout',
        key,
        '-out',
        cert,
      ],
      { stdio: 'ignore' },
    );
    const tls = await spawnServer(await tempDir(), { EBCC_TLS_CERT: cert, EBCC_TLS_KEY: key });
    try {
      expect(tls.url).toMatch(/^https:\/\//);
      const body = await new Promise<string>((resolve, reject) => {
        request(`${tls.url}/healthz`, { ca: readFileSync(cert) }, (res) => {
          let text = '';
          res.on('data', (d) => (text += d));
          res.on('end', () => resolve(text));
        })
          .on('error', reject)
          .end();
      });
      expect(JSON.parse(body)).toEqual({ status: 'ok' });
    } finally {
      tls.child.kill('SIGTERM');
      await tls.exited;
    }
  });

  it('refuses a certificate without a key', async () => {
    const res = await runEbcc(['serve', '--tls-cert', '/tmp/x.pem'], { EBCC_HOME: await tempDir() });
    expect(res.code).toBe(EXIT.usage);
    expect(res.stderr).toContain('EBCC_TLS_CERT and EBCC_TLS_KEY must be given together');
  });
});
