// What tenant code can reach from inside its sandbox: only its own bundle, no processes, no network but
// the manifest's allowlist (through the host), and never as root.
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { callFn, deployComposite } from './helpers/composite-kit.ts';
import { cleanupAll, startTestGateway, type TestGateway } from './helpers/env.ts';

let gw: TestGateway;
let token: string;
let dbPath: string;

/** Tries everything it should not be able to do and reports each outcome. */
const PROBE_ANCHOR = `
import * as childProcess from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { Worker } from 'node:worker_threads';

async function attempt(fn) {
  try {
    return { ok: true, value: await fn() };
  } catch (e) {
    return { ok: false, code: e?.code ?? null, message: String(e?.message ?? e) };
  }
}

function connect(port) {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ host: '127.0.0.1', port }, () => {
      socket.destroy();
      resolve('connected');
    });
    socket.on('error', reject);
    setTimeout(() => {
      socket.destroy();
      reject(Object.assign(new Error('connect timed out'), { code: 'TIMEOUT' }));
    }, 2000);
  });
}

export default {
  async fetch(request) {
    const q = new URL(request.url).searchParams;
    const port = Number(q.get('port'));
    return Response.json({
      uid: process.getuid(),
      gid: process.getgid(),
      env: Object.keys(process.env).sort(),
      ownBundle: await attempt(() => JSON.parse(readFileSync('/fn/composite.json', 'utf8')).name),
      passwd: await attempt(() => readFileSync('/etc/passwd', 'utf8')),
      db: await attempt(() => readFileSync(q.get('db')).length),
      writeBundle: await attempt(() => writeFileSync('/fn/planted.txt', 'x')),
      execFile: await attempt(() => childProcess.execFileSync('/bin/sh', ['-c', 'id -u']).toString()),
      spawn: await attempt(
        () =>
          new Promise((resolve, reject) => {
            const child = childProcess.spawn('/bin/true');
            child.on('error', reject);
            child.on('exit', resolve);
          }),
      ),
      worker: await attempt(() => new Worker('process.exit(0)', { eval: true }).threadId),
      fetchAllowed: await attempt(async () => (await fetch('http://127.0.0.1:' + port + '/healthz')).status),
      fetchOtherPort: await attempt(async () => (await fetch('http://127.0.0.1:' + (port + 1) + '/')).status),
      fetchOtherHost: await attempt(async () => (await fetch('http://blocked.invalid/')).status),
      fetchFile: await attempt(async () => (await fetch('file:///etc/passwd')).status),
      connect: await attempt(() => connect(port)),
    });
  },
};
`;

/** The same questions from a stage's sandbox, which has no Node permission model: bwrap alone. */
const PROBE_STAGE = `cat >/dev/null
echo "uid=$(id -u)"
if cat /etc/passwd >/dev/null 2>&1; then echo passwd=readable; else echo passwd=hidden; fi
if [ -e "$1" ]; then echo db=visible; else echo db=hidden; fi
if ls /stage/anchor.mjs >/dev/null 2>&1; then echo anchor=visible; else echo anchor=hidden; fi
if (echo x > /stage/planted) 2>/dev/null; then echo stage=writable; else echo stage=readonly; fi
echo "root=$(ls / | tr '\\n' ' ')"
`;

beforeAll(async () => {
  gw = await startTestGateway();
  token = await gw.token('acme', ['admin']);
  dbPath = gw.config.dbUrl.replace(/^file:/, '');
  await deployComposite(gw, token, {
    name: 'probe',
    anchor: PROBE_ANCHOR,
    network: [`127.0.0.1:${gw.port}`],
  });
  await deployComposite(gw, token, {
    name: 'stage-probe',
    anchor: `export default {
      async fetch(_request, env) {
        return new Response(await (await env.stages.probe.invoke('x')).text());
      },
    };`,
    stages: [
      {
        name: 'probe',
        image: { kind: 'script', interpreter: 'sh', entry: 'stages/probe.sh', args: [dbPath] },
      },
    ],
    files: { 'stages/probe.sh': PROBE_STAGE },
  });
});
afterAll(cleanupAll);

describe('the anchor sandbox', () => {
  let report: any;
  beforeAll(async () => {
    const result = await callFn(gw, token, 'probe', {
      path: `/?port=${gw.port}&db=${encodeURIComponent(dbPath)}`,
    });
    expect(result.status, result.text).toBe(200);
    report = result.body;
  });

  it('runs as an unprivileged uid with only its own environment', () => {
    expect(report.uid).toBeGreaterThan(0);
    expect(report.gid).toBeGreaterThan(0);
    expect(report.uid).not.toBe(process.getuid!());
    for (const key of report.env)
      expect(key).toMatch(/^(EBCC_(ENTRY|VARS|STAGES|MAX_FRAME_BYTES)|NODE_OPTIONS|PWD)$/);
  });

  it('[A1 own files only] reads its own bundle, and nothing else: not /etc/passwd, not the database', () => {
    expect(report.ownBundle).toEqual({ ok: true, value: 'probe' });
    expect(report.passwd).toMatchObject({ ok: false, code: 'ERR_ACCESS_DENIED' });
    expect(report.db).toMatchObject({ ok: false, code: 'ERR_ACCESS_DENIED' });
    expect(report.writeBundle).toMatchObject({ ok: false, code: 'ERR_ACCESS_DENIED' });
  });

  it('[A5 no processes] cannot start processes or threads', () => {
    expect(report.execFile).toMatchObject({ ok: false, code: 'ERR_ACCESS_DENIED' });
    expect(report.spawn).toMatchObject({ ok: false, code: 'ERR_ACCESS_DENIED' });
    expect(report.worker).toMatchObject({ ok: false, code: 'ERR_ACCESS_DENIED' });
  });

  it('[A6 network allowlist] reaches the network only through the host, and only the allowlist', () => {
    expect(report.fetchAllowed).toEqual({ ok: true, value: 200 });
    for (const refused of [report.fetchOtherPort, report.fetchOtherHost]) {
      expect(refused.ok).toBe(false);
      expect(refused.message).toMatch(/refused: .* is not in this function's network allowlist/);
    }
    expect(report.fetchFile).toMatchObject({ ok: false });
    expect(report.fetchFile.message).toMatch(/refused/);
    // A direct connection to the gateway's port: seccomp allows only AF_UNIX sockets (and the sandbox's
    // network namespace has no route to the host's loopback anyway).
    expect(report.connect).toMatchObject({ ok: false, code: 'EPERM' });
  });

  it('leaves no trace in the bundle on the host', () => {
    const versions = join(gw.home, 'cache', 'versions');
    const dirs = readdirSync(versions);
    expect(dirs.length).toBeGreaterThan(0);
    for (const dir of dirs) expect(existsSync(join(versions, dir, 'planted.txt'))).toBe(false);
  });
});

describe('a stage sandbox (bwrap alone, no Node permission model)', () => {
  it('sees only its own image files, read-only, as a non-root uid', async () => {
    const probed = await callFn(gw, token, 'stage-probe');
    expect(probed.status, probed.text).toBe(200);
    const lines = Object.fromEntries(
      probed.text
        .trim()
        .split('\n')
        .map((l) => l.split('=', 2)),
    );
    expect(Number(lines.uid)).toBeGreaterThan(0);
    expect(lines).toMatchObject({ passwd: 'hidden', db: 'hidden', anchor: 'hidden', stage: 'readonly' });
    expect(lines.root.split(' ')).not.toContain('etc');
    expect(lines.root.split(' ')).not.toContain('root');
    expect(lines.root.split(' ')).not.toContain('home');
  });
});
