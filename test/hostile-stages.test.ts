// Hostile stages (docs/security.md, rules S1–S8): a stage program tries to break out of its sim enclave
// in every way issue 9 lists. Each attempt must fail and surface as a stage failure, and the host and
// other functions must carry on. The stage is real Python run in the real sandbox; nothing is mocked.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  callFn,
  deployComposite,
  expectHealthy,
  HEALTHY_ANCHOR,
  invocationRecord,
} from './helpers/composite-kit.ts';
import { cleanupAll, filesUnder, startTestGateway, type TestGateway } from './helpers/env.ts';
import { processesOfUids } from './helpers/process.ts';

// This file's sandboxes get their own uid range, so "nothing is left running" can be checked exactly
// even while other test files run sandboxes of their own.
const UID_BASE = 1_700_000_000 + (process.pid % 1000) * 1000;
process.env.EBCC_SANDBOX_UID_BASE = String(UID_BASE);
process.env.EBCC_SANDBOX_UID_COUNT = '1000';

const STAGE_SOURCE = readFileSync(join(import.meta.dirname, 'fixtures', 'hostile', 'stage.py'), 'utf8');

/** Calls the stage named in the query with the request body; a StageError comes back as JSON. */
const ANCHOR = `
export default {
  async fetch(request, env) {
    const stage = new URL(request.url).searchParams.get('stage');
    try {
      const reply = await env.stages[stage].invoke(new Uint8Array(await request.arrayBuffer()));
      return Response.json({ ok: true, eid: reply.eid, body: await reply.text() });
    } catch (e) {
      if (e?.name !== 'StageError') return Response.json({ thrown: e.name, message: e.message }, { status: 500 });
      return Response.json({ code: e.code, status: e.status, eid: e.eid, message: e.message });
    }
  },
};
`;

const LIMITS = { memoryMb: 64, cpuMs: 600, timeoutMs: 4000, maxResponseBytes: 64 * 1024 };

let gw: TestGateway;
let token: string;

async function noSandboxProcessesLeft(): Promise<void> {
  for (let i = 0; i < 100 && processesOfUids(UID_BASE, 1000).length; i++)
    await new Promise((r) => setTimeout(r, 100));
  expect(processesOfUids(UID_BASE, 1000)).toEqual([]);
}

beforeAll(async () => {
  gw = await startTestGateway();
  token = await gw.token('acme', ['admin']);
  await deployComposite(gw, token, { name: 'bystander', anchor: HEALTHY_ANCHOR });
  await deployComposite(gw, token, {
    name: 'hostile',
    anchor: ANCHOR,
    pool: { maxInstances: 1 },
    stages: [
      {
        name: 'once',
        mode: 'oneshot',
        image: { kind: 'script', interpreter: 'python3', entry: 'stages/hostile.py' },
        limits: LIMITS,
      },
      {
        name: 'kept',
        mode: 'persistent',
        image: { kind: 'script', interpreter: 'python3', entry: 'stages/hostile.py' },
        limits: LIMITS,
      },
    ],
    files: { 'stages/hostile.py': STAGE_SOURCE },
  });
  // Make the bystander's files exist on the host, so that reading them is a real attempt.
  await expectHealthy(gw, token, 'bystander');
}, 60_000);
afterAll(cleanupAll);

interface Attack {
  rule: string;
  name: string;
  request: () => Record<string, unknown>;
  /** The StageError the anchor must get, and the recorded exit reason. */
  code: 'stage-failed' | 'response-too-large';
  reason: string | string[];
  /** What the stage's log must show (the sandbox's refusal), when the attack can see it. */
  log?: RegExp;
}

const ATTACKS: Attack[] = [
  {
    rule: 'S1 no network',
    name: 'open a socket (inet, inet6, udp, netlink, packet) or reach the gateway port',
    request: () => ({ attack: 'socket', port: Number(new URL(gw.url).port) }),
    code: 'stage-failed',
    reason: 'exit',
    log: /blocked: AF_INET stream: Operation not permitted.*AF_PACKET: Operation not permitted/,
  },
  {
    rule: 'S2 no host files',
    name: 'read /etc/shadow, the database, the sim device key, and another function’s files',
    request: () => {
      const dbFile = gw.config.dbUrl.replace(/^file:/, '');
      const keys = filesUnder(gw.home).filter((f) => /device-root|\.pem$|\.key$/.test(f));
      const bystander = filesUnder(join(gw.home, 'cache')).filter((f) => f.endsWith('anchor.mjs'));
      expect(keys.length, 'the sim device key exists on the host').toBeGreaterThan(0);
      expect(bystander.length, "another function's files exist on the host").toBeGreaterThan(0);
      return {
        attack: 'read',
        paths: ['/etc/shadow', '/etc/passwd', dbFile, `${dbFile}-wal`, ...keys, ...bystander, gw.home],
      };
    },
    code: 'stage-failed',
    reason: 'exit',
    log: /blocked: \/etc\/shadow: No such file or directory/,
  },
  {
    rule: 'S3 no host processes',
    name: 'find the host’s processes through /proc',
    request: () => ({
      attack: 'proc',
      hostPids: [process.pid, process.ppid, 1],
      hostMarkers: ['vitest', 'redis-server', 'node_modules', gw.home],
    }),
    code: 'stage-failed',
    reason: 'exit',
    log: /blocked: only the sandbox's own \d processes are visible/,
  },
  {
    rule: 'S4 no tracing',
    name: 'ptrace a sibling or the shim; read the shim’s memory; write to its channel',
    request: () => ({ attack: 'ptrace' }),
    code: 'stage-failed',
    reason: 'exit',
    log: /blocked: PTRACE_ATTACH sibling: Operation not permitted.*\/proc\/\d+\/mem: Permission denied.*fd 1 of the enclave's shim: Permission denied/,
  },
  {
    rule: 'S5 no namespaces or mounts',
    name: 'mount, unshare or setns',
    request: () => ({ attack: 'namespaces' }),
    code: 'stage-failed',
    reason: 'exit',
    log: /blocked: mount: Operation not permitted; unshare user: Operation not permitted.*setns user: Operation not permitted/,
  },
  {
    rule: 'S6 bounded resources',
    name: 'a fork bomb',
    request: () => ({ attack: 'forkbomb' }),
    code: 'stage-failed',
    reason: ['cpu', 'timeout', 'memory'],
  },
  {
    rule: 'S6 bounded resources',
    name: 'allocate past the memory limit',
    request: () => ({ attack: 'memory' }),
    code: 'stage-failed',
    reason: 'memory',
  },
  {
    rule: 'S6 bounded resources',
    name: 'spin past the CPU limit',
    request: () => ({ attack: 'cpu' }),
    code: 'stage-failed',
    // A persistent stage's CPU is bounded per request by its wall-clock timeout (docs/security.md).
    reason: ['cpu', 'timeout'],
  },
  {
    rule: 'S7 bounded time and output',
    name: 'sleep past the timeout',
    request: () => ({ attack: 'sleep' }),
    code: 'stage-failed',
    reason: 'timeout',
  },
  {
    rule: 'S7 bounded time and output',
    name: 'write gigabytes to stdout',
    request: () => ({ attack: 'flood' }),
    code: 'response-too-large',
    reason: 'output',
  },
];

describe.each(['once', 'kept'] as const)('a hostile %s stage', (stage) => {
  it.each(ATTACKS)('[$rule] $name: fails as a stage failure, the host carries on', async (attack) => {
    const result = await callFn(gw, token, 'hostile', {
      path: `/?stage=${stage}`,
      body: JSON.stringify(attack.request()),
    });
    expect(result.status, result.text).toBe(200);
    expect(result.body.ok, `the attack worked: ${result.body.body}`).toBeUndefined();
    expect(result.body).toMatchObject({ code: attack.code });
    const record = await invocationRecord(gw, token, result.headers.get('x-ebcc-invocation')!);
    const [execution] = record.executions;
    const reasons = [attack.reason].flat();
    expect(reasons, JSON.stringify(execution.exit)).toContain(execution.exit.reason);
    if (attack.log) expect(execution.log.text).toMatch(attack.log);
    expect(execution.log.text).not.toContain('ESCAPED');
    await expectHealthy(gw, token, 'bystander');
  });
});

describe('[S8 no orphans] a stage that leaves a process behind', () => {
  it.each(['once', 'kept'] as const)(
    '%s: the orphan does not outlive the enclave',
    async (stage) => {
      // Holding the stage's stdout open keeps a oneshot stage from finishing: it times out.
      const held = await callFn(gw, token, 'hostile', {
        path: `/?stage=${stage}`,
        body: JSON.stringify({ attack: 'orphan', detach: false }),
      });
      expect(held.body.ok).toBeUndefined();
      expect(held.body.code).toBe('stage-failed');
      // A detached orphan lets the stage answer, but it dies with the enclave.
      const detached = await callFn(gw, token, 'hostile', {
        path: `/?stage=${stage}`,
        body: JSON.stringify({ attack: 'orphan', detach: true }),
      });
      expect(detached.body).toMatchObject({ ok: true, body: 'orphan left' });
      await expectHealthy(gw, token, 'bystander');
    },
    30_000,
  );

  it('after every instance is deleted, no process of any of these sandboxes is left', async () => {
    const listed = await fetch(`${gw.url}/v1/instances`, { headers: { authorization: `Bearer ${token}` } });
    const { instances } = (await listed.json()) as { instances: { id: string }[] };
    for (const { id } of instances) {
      const { status } = await fetch(`${gw.url}/v1/instances/${id}?force=true`, {
        method: 'DELETE',
        headers: { authorization: `Bearer ${token}` },
      });
      expect(status).toBe(204);
    }
    await noSandboxProcessesLeft();
    // And the host never saw a process escape the range either: nothing of ours is parented to init.
    const orphans = execFileSync('ps', ['-eo', 'uid=,ppid=,comm='], { encoding: 'utf8' })
      .split('\n')
      .map((l) => l.trim().split(/\s+/))
      .filter(([uid]) => Number(uid) >= UID_BASE && Number(uid) < UID_BASE + 1000);
    expect(orphans).toEqual([]);
  }, 30_000);
});
