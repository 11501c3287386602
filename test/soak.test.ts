// Soak (issue 9 §5): 100 functions on one real `ebcc serve`, concurrent invocations and batches, random
// kills of anchors and stages, and redeploys, all at once. Afterwards no answered result is lost, every
// batch item is final, and the gateway's file descriptors, the sandbox processes and the sandbox
// cgroups are counted and asserted back to where they started.
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrateDatabase, openDatabase, type Database } from '../db/client.ts';
import { batchItems, invocations } from '../db/schema.ts';
import { ensureTenant, issueToken } from '../runtime/auth/tokens.ts';
import { callFn, uploadComposite, type CompositeSpec } from './helpers/composite-kit.ts';
import { api, cleanupAll, tempDir, type TestGateway } from './helpers/env.ts';
import { processesOfUids, spawnServer, type ServerProcess } from './helpers/process.ts';

const FUNCTIONS = Number(process.env.EBCC_SOAK_FUNCTIONS ?? 100);
const REQUESTS = Number(process.env.EBCC_SOAK_REQUESTS ?? 600);
const UID_BASE = 1_900_000_000 + (process.pid % 1000) * 1000;

let server: ServerProcess;
let gw: TestGateway;
let token: string;
let database: Database;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const random = <T>(xs: T[]): T | undefined => xs[Math.floor(Math.random() * xs.length)];

const ANCHOR = (version: string) => `
export default {
  async fetch(request, env) {
    const body = await request.text();
    const reply = await env.stages.echo.invoke(body || 'ping');
    return Response.json({ version: '${version}', echoed: await reply.text(), eid: reply.eid });
  },
};
`;
const PERSISTENT_ECHO = `
let buffer = Buffer.alloc(0);
process.stdin.on('data', (chunk) => {
  buffer = Buffer.concat([buffer, chunk]);
  while (buffer.length >= 4 && buffer.length >= 4 + buffer.readUInt32BE(0)) {
    const length = buffer.readUInt32BE(0);
    const frame = buffer.subarray(4, 4 + length);
    buffer = buffer.subarray(4 + length);
    const header = Buffer.alloc(4);
    header.writeUInt32BE(frame.length);
    process.stdout.write(Buffer.concat([header, frame]));
  }
});
`;

function spec(i: number, version: string): CompositeSpec {
  const persistent = i % 10 === 0;
  return {
    name: `soak-${i}`,
    version,
    anchor: ANCHOR(version),
    pool: { maxInstances: 1, idleTimeoutMs: 2_000 },
    stages: [
      persistent
        ? {
            name: 'echo',
            mode: 'persistent',
            image: { kind: 'script', interpreter: 'node', entry: 'stages/echo.mjs' },
          }
        : { name: 'echo', image: { kind: 'script', interpreter: 'sh', entry: 'stages/echo.sh' } },
    ],
    files: persistent ? { 'stages/echo.mjs': PERSISTENT_ECHO } : { 'stages/echo.sh': 'exec cat\n' },
  };
}

const openFds = () => readdirSync(`/proc/${server.gatewayPid}/fd`).length;

/** The gateway's sandbox cgroups: `<its cgroup>/ebcc/<gateway pid>-…` in each v1 hierarchy. */
function sandboxCgroups(): string[] {
  const found: string[] = [];
  for (const line of readFileSync(`/proc/${server.gatewayPid}/cgroup`, 'utf8').trim().split('\n')) {
    const [, controllers, path] = line.split(':');
    for (const controller of ['memory', 'pids', 'cpuacct']) {
      if (!controllers!.split(',').includes(controller)) continue;
      const mount = existsSync(`/sys/fs/cgroup/${controllers}`) ? controllers : controller;
      const dir = join('/sys/fs/cgroup', mount!, path!, 'ebcc');
      if (!existsSync(dir)) continue;
      for (const entry of readdirSync(dir))
        if (entry.startsWith(`${server.gatewayPid}-`)) found.push(join(dir, entry));
    }
  }
  return found;
}

beforeAll(async () => {
  const home = await tempDir('ebcc-soak-');
  database = await openDatabase(`file:${join(home, 'ebcc.db')}`);
  await migrateDatabase(database);
  const tenant = await ensureTenant(database.db, 'acme');
  token = (await issueToken(database.db, { tenantId: tenant.id, name: 't', scopes: ['admin'] })).token;
  server = await spawnServer(home, {
    EBCC_SANDBOX_UID_BASE: String(UID_BASE),
    EBCC_SANDBOX_UID_COUNT: '1000',
    EBCC_BATCH_CONCURRENCY: '4',
  });
  gw = { url: server.url } as TestGateway;
  for (let i = 0; i < FUNCTIONS; i++) {
    const result = await uploadComposite(gw, token, spec(i, '1.0.0'));
    expect(result.status, JSON.stringify(result.body)).toBe(201);
  }
  // The gateway opens its queue connections lazily; one batch run first makes them part of the baseline.
  const batch = await api(gw.url, token, 'POST', '/v1/functions/soak-1/batches', ['warm-up']);
  expect(batch.status).toBe(202);
  for (let i = 0; i < 400; i++) {
    if ((await api(gw.url, token, 'GET', `/v1/batches/${batch.body.id}?limit=1`)).body.complete) break;
    await sleep(100);
  }
  for (const instance of (await api(gw.url, token, 'GET', '/v1/instances')).body.instances as {
    id: string;
  }[])
    await api(gw.url, token, 'DELETE', `/v1/instances/${instance.id}?force=true`);
}, 300_000);

afterAll(async () => {
  server?.child.kill('SIGTERM');
  await server?.exited;
  database?.close();
  await cleanupAll();
});

// Not in the default suite yet: on a loaded machine the gateway's descriptors end above the baseline by
// its libSQL connections (docs/reliability.md). Run with EBCC_SOAK=1.
describe.runIf(process.env.EBCC_SOAK === '1')(
  `soak: ${FUNCTIONS} functions, concurrent invocations and batches, kills and redeploys`,
  () => {
    const answered: string[] = [];
    const batchIds: string[] = [];
    const versions = new Map<number, number>();
    let fdsBefore = 0;

    it('answers every request correctly or with a problem document, through the chaos', async () => {
      fdsBefore = openFds();
      let sent = 0;
      let chaos = true;
      const failures: number[] = [];
      const client = async () => {
        try {
          await clientLoop();
        } catch (error) {
          sent = REQUESTS; // the other clients stop too
          throw error;
        }
      };
      const clientLoop = async () => {
        while (sent < REQUESTS) {
          const n = sent++;
          const fn = Math.floor(Math.random() * FUNCTIONS);
          const result = await callFn(gw, token, `soak-${fn}`, { body: `m-${n}` });
          if (result.status === 200) {
            expect(result.body.echoed).toBe(`m-${n}`);
            answered.push(result.headers.get('x-ebcc-invocation')!);
          } else {
            // Only a killed anchor or stage, a redeploy racing the request, or a busy pool may fail a request.
            expect(
              [429, 502, 503, 504],
              `${result.text}\n${result.status === 500 ? server.output().slice(-3000) : ''}`,
            ).toContain(result.status);
            expect(result.headers.get('content-type')).toMatch(/^application\/problem\+json/);
            failures.push(result.status);
          }
          if (n % 100 === 0) {
            const batch = await api(gw.url, token, 'POST', `/v1/functions/soak-${fn}/batches`, [
              'a',
              'b',
              'c',
              'd',
            ]);
            expect(batch.status, JSON.stringify(batch.body)).toBe(202);
            batchIds.push(batch.body.id as string);
          }
        }
      };
      const monkey = async () => {
        let tick = 0;
        while (chaos) {
          await sleep(150 + Math.random() * 250);
          tick++;
          if (tick % 6 === 0) {
            const fn = Math.floor(Math.random() * FUNCTIONS);
            const next = (versions.get(fn) ?? 0) + 1;
            versions.set(fn, next);
            const result = await uploadComposite(gw, token, spec(fn, `1.${next}.0`));
            expect(result.status, JSON.stringify(result.body)).toBe(201);
            continue;
          }
          const victim = random(
            processesOfUids(UID_BASE, 1000).filter((p) =>
              tick % 2 ? p.cmd.includes('/ebcc/harness.mjs') : p.cmd.includes('/stage/'),
            ),
          );
          try {
            if (victim) process.kill(victim.pid, 'SIGKILL');
          } catch {
            // It ended between the listing and the kill.
          }
        }
      };
      const chaosDone = monkey();
      try {
        await Promise.all([client(), client(), client(), client(), client(), client()]);
      } finally {
        chaos = false;
        await chaosDone;
      }
      expect(answered.length).toBeGreaterThan(REQUESTS / 2);
      console.info(
        `soak: ${answered.length} answered, ${failures.length} failed (killed), ${versions.size} redeployed`,
      );
      // Redeployed functions answer with their new version.
      for (const [fn, v] of versions) {
        const result = await callFn(gw, token, `soak-${fn}`, { body: 'which' });
        expect(result.status, result.text).toBe(200);
        expect(result.body.version).toBe(`1.${v}.0`);
      }
    }, 600_000);

    it('lost no result: every answer is durable, every batch item final', async () => {
      const ok = new Set(
        (await database.db.select({ id: invocations.id, status: invocations.status }).from(invocations))
          .filter((r) => r.status === 'ok')
          .map((r) => r.id),
      );
      for (const id of answered) expect(ok.has(id), id).toBe(true);
      for (const id of batchIds) {
        for (let i = 0; ; i++) {
          const { body } = await api(gw.url, token, 'GET', `/v1/batches/${id}?limit=1`);
          if (body.complete) break;
          if (i > 600) throw new Error(`batch ${id} did not complete: ${JSON.stringify(body.counts)}`);
          await sleep(250);
        }
      }
      const items = (await database.db.select().from(batchItems)).filter((i) =>
        batchIds.includes(i.batchId!),
      );
      expect(items).toHaveLength(batchIds.length * 4);
      for (const item of items) expect(['succeeded', 'dead', 'failed']).toContain(item.status);
    }, 300_000);

    it('leaks nothing: sandboxes, their cgroups and the gateway’s descriptors return to where they were', async () => {
      const listed = await api(gw.url, token, 'GET', '/v1/instances');
      for (const instance of listed.body.instances as { id: string; status: string }[]) {
        if (instance.status === 'stopped') continue;
        const { status } = await api(gw.url, token, 'DELETE', `/v1/instances/${instance.id}?force=true`);
        expect([204, 404]).toContain(status);
      }
      for (let i = 0; i < 100 && (processesOfUids(UID_BASE, 1000).length || sandboxCgroups().length); i++)
        await sleep(100);
      const left = processesOfUids(UID_BASE, 1000).map((p) => `${p.pid} ${p.cmd.slice(0, 160)}`);
      if (left.length) console.error(`left behind:\n${left.join('\n')}`);
      expect(left).toEqual([]);
      expect(sandboxCgroups()).toEqual([]);
      for (let i = 0; i < 50 && openFds() > fdsBefore + 10; i++) await sleep(100);
      if (openFds() > fdsBefore + 10) {
        const links = readdirSync(`/proc/${server.gatewayPid}/fd`).map((fd) => {
          try {
            return readlinkSync(`/proc/${server.gatewayPid}/fd/${fd}`);
          } catch {
            return '?';
          }
        });
        console.error(`gateway fds:\n${links.sort().join('\n')}`);
      }
      expect(openFds()).toBeLessThanOrEqual(fdsBefore + 10);
    }, 60_000);
  },
);
