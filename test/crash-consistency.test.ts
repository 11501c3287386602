// Crash consistency (issue 9 §2): invocations and batch jobs stream in while the gateway, a worker, the
// anchors and the stages are SIGKILLed at random, and Redis is restarted in the middle of work. Then
// the database must tell the truth: every committed stage execution is complete and verifies, nothing is
// half-written, no EID is reused, instance state matches the processes, every answered request is
// durable, every batch item reaches a final state with at most one result, and nothing leaks.
//
// Default: 100 kills. Longer: EBCC_CRASH_KILLS=1000 npm run test:crash (docs/reliability.md).
import { createHash, randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrateDatabase, openDatabase, type Database } from '../db/client.ts';
import { batchItems, instances, invocations, stageExecutions } from '../db/schema.ts';
import { openArtifacts } from '../runtime/artifacts/open.ts';
import { DataKeyring } from '../runtime/keys/data-keys.ts';
import { FileKekProvider } from '../runtime/keys/kek.ts';
import { ensureTenant, issueToken } from '../runtime/auth/tokens.ts';
import { exportInvocation } from '../runtime/evidence/export.ts';
import { LEASE_TTL_MS } from '../runtime/node.ts';
import { installationId } from '../db/queries/installation.ts';
import { redisNamespace, type RedisNamespace } from '../runtime/queues/namespace.ts';
import {
  decodeEvidence,
  failedChecks,
  parseTrustAnchor,
  verifyBundle,
  verifyEvidenceSignature,
  type TrustAnchor,
} from '../runtime/evidence/index.ts';
import { startPrivateRedis, type PrivateRedis } from '../scripts/lib/redis-server.ts';
import { api, cleanupAll, postJson, sampleBundle, sampleOrder, tempDir, upload } from './helpers/env.ts';
import { processesOfUids, runEbcc, spawnServer, type ServerProcess } from './helpers/process.ts';

const KILLS = Number(process.env.EBCC_CRASH_KILLS ?? 100);
const VERIFY_SAMPLE = Number(process.env.EBCC_CRASH_VERIFY_SAMPLE ?? 60);
const UID_BASE = 1_800_000_000 + (process.pid % 1000) * 1000;
const ROLES = {
  gateway: { node: 'crash-gw', uidBase: UID_BASE, batchWorkers: '0' },
  worker: { node: 'crash-wk', uidBase: UID_BASE + 500, batchWorkers: '1' },
} as const;
type Role = keyof typeof ROLES;

let redis: PrivateRedis;
let database: Database;
let dbUrl: string;
/** The shared database's lease keys and fencing counter in Redis. */
let leaseKeys: RedisNamespace;
let kekFile: string;
let token: string;
let tenantId: string;
const homes: Record<Role, string> = { gateway: '', worker: '' };
const live: Partial<Record<Role, ServerProcess>> = {};
const killed = { gateway: 0, worker: 0, anchor: 0, stage: 0, redis: 0 };

async function spawn(role: Role): Promise<ServerProcess> {
  const { node, uidBase, batchWorkers } = ROLES[role];
  const proc = await spawnServer(homes[role], {
    EBCC_DB_URL: dbUrl,
    REDIS_URL: redis.url,
    EBCC_NODE_ID: node,
    EBCC_BATCH_WORKERS: batchWorkers,
    EBCC_BATCH_CONCURRENCY: '4',
    EBCC_BATCH_LOCK_MS: '2000',
    EBCC_SANDBOX_UID_BASE: String(uidBase),
    EBCC_SANDBOX_UID_COUNT: '500',
    // Nodes sharing a database share the key-encryption key of its sealed artifacts.
    EBCC_KEK_FILE: kekFile,
  });
  live[role] = proc;
  return proc;
}

const random = <T>(xs: T[]): T | undefined => xs[Math.floor(Math.random() * xs.length)];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The kinds of fault, in the proportions of the default run (gateway and worker restarts are slow). */
function plan(total: number): (keyof typeof killed)[] {
  const share = { gateway: 0.06, worker: 0.06, anchor: 0.43, stage: 0.42, redis: 0.03 } as const;
  const faults: (keyof typeof killed)[] = [];
  for (const [kind, part] of Object.entries(share))
    for (let i = 0; i < Math.max(1, Math.round(total * part)); i++) faults.push(kind as keyof typeof killed);
  return faults.sort(() => Math.random() - 0.5);
}

/** A gateway or worker that died without being killed is a finding, not noise: fail with its output. */
function expectStillUp(): void {
  for (const [role, proc] of Object.entries(live)) {
    if (proc.child.exitCode !== null || proc.child.signalCode !== null)
      throw new Error(
        `the ${role} died on its own (${proc.child.exitCode ?? proc.child.signalCode}):\n${proc.output().slice(-4000)}`,
      );
  }
}

/** A sandbox process may end between the scan and the kill (a oneshot stage finishing): then no fault. */
function killIfAlive(pid: number): boolean {
  try {
    process.kill(pid, 'SIGKILL');
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw error;
  }
}

async function inject(fault: keyof typeof killed): Promise<boolean> {
  expectStillUp();
  switch (fault) {
    case 'gateway':
    case 'worker': {
      const proc = live[fault]!;
      process.kill(proc.gatewayPid, 'SIGKILL');
      await proc.exited;
      await spawn(fault);
      break;
    }
    case 'anchor': {
      const victim = random(
        processesOfUids(UID_BASE, 1000).filter((p) => p.cmd.includes('/ebcc/harness.mjs')),
      );
      if (!victim || !killIfAlive(victim.pid)) return false;
      break;
    }
    case 'stage': {
      // The shim or the stage program: either way the enclave's work is cut short.
      const victim = random(processesOfUids(UID_BASE, 1000).filter((p) => p.cmd.includes('/stage/')));
      if (!victim || !killIfAlive(victim.pid)) return false;
      break;
    }
    case 'redis':
      await redis.stop();
      await sleep(300);
      await redis.start();
      break;
  }
  killed[fault]++;
  return true;
}

interface Answered {
  invocationId: string;
  order: string;
}

beforeAll(async () => {
  redis = await startPrivateRedis();
  homes.gateway = await tempDir('ebcc-crash-gw-');
  homes.worker = await tempDir('ebcc-crash-wk-');
  const shared = await tempDir('ebcc-crash-db-');
  dbUrl = `file:${join(shared, 'shared.db')}`;
  kekFile = join(shared, 'kek');
  await writeFile(kekFile, randomBytes(32), { mode: 0o600 });
  database = await openDatabase(dbUrl);
  await migrateDatabase(database);
  leaseKeys = redisNamespace(await installationId(database.db));
  const tenant = await ensureTenant(database.db, 'acme');
  tenantId = tenant.id;
  token = (await issueToken(database.db, { tenantId, name: 't', scopes: ['admin'] })).token;
  await Promise.all([spawn('gateway'), spawn('worker')]);
  const deployed = await upload(live.gateway!.url, token, await sampleBundle());
  expect(deployed.status, JSON.stringify(deployed.body)).toBe(201);
}, 120_000);

afterAll(async () => {
  await Promise.all(
    Object.values(live).map(async (p) => {
      if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGTERM');
      await p.exited;
    }),
  );
  database?.close();
  await redis?.dispose();
  await cleanupAll();
});

describe(`${KILLS} random SIGKILLs and Redis restarts under streaming work`, () => {
  const answered: Answered[] = [];
  const batchIds: string[] = [];
  let submittedItems = 0;

  it(
    'keeps serving through the faults',
    async () => {
      let streaming = true;
      let n = 0;
      const client = async (lane: number) => {
        while (streaming) {
          const order = `c${lane}-${n++}`;
          const url = live.gateway!.url;
          const response = await postJson(url, '/fn/order-signer', token, sampleOrder(order)).catch(
            () => null,
          );
          if (response?.status === 200)
            answered.push({ invocationId: response.headers.get('x-ebcc-invocation')!, order });
          else await sleep(50);
        }
      };
      const submitter = async () => {
        let b = 0;
        while (streaming) {
          const items = Array.from({ length: 4 }, (_, i) => sampleOrder(`b${b}-${i}`));
          b++;
          const result = await api(
            live.gateway!.url,
            token,
            'POST',
            '/v1/functions/order-signer/batches',
            items,
          ).catch(() => null);
          if (result?.status === 202) {
            batchIds.push(result.body.id as string);
            submittedItems += items.length;
          }
          await sleep(400);
        }
      };
      const work = [client(0), client(1), submitter()];
      let injected = 0;
      try {
        for (const fault of plan(KILLS)) {
          // A kind may find nothing to kill at its moment (no stage running yet, say): wait for one rather
          // than count a fault that did not happen.
          for (let attempt = 0; attempt < 50; attempt++) {
            await sleep(30 + Math.random() * 150);
            if (await inject(fault)) {
              injected++;
              break;
            }
          }
        }
      } finally {
        // Also when a fault fails (a restart that does not come up): clients still streaming would run
        // into the later checks, which need nothing in flight (leases, instance state).
        streaming = false;
        await Promise.all(work);
      }
      expectStillUp();
      expect(injected).toBe(KILLS);
      expect(answered.length).toBeGreaterThan(10);
      expect(batchIds.length).toBeGreaterThan(2);
      // Afterwards it simply works.
      const after = await postJson(live.gateway!.url, '/fn/order-signer', token, sampleOrder('after'));
      expect(after.status).toBe(200);
      console.info(`faults injected: ${JSON.stringify(killed)}; ${answered.length} answered invocations`);
    },
    Math.max(600_000, KILLS * 4_000),
  );

  it('finishes every batch item once: succeeded with one result, or dead with a reason', async () => {
    const deadline = Date.now() + 180_000;
    for (const id of batchIds) {
      for (;;) {
        const { body } = await api(live.gateway!.url, token, 'GET', `/v1/batches/${id}?limit=1`);
        if (body.complete) break;
        if (Date.now() > deadline)
          throw new Error(`batch ${id} did not complete: ${JSON.stringify(body.counts)}`);
        await sleep(250);
      }
    }
    const items = await database.db.select().from(batchItems);
    const ours = items.filter((i) => i.batchId && batchIds.includes(i.batchId));
    expect(ours).toHaveLength(submittedItems);
    for (const item of ours) {
      expect(['succeeded', 'dead', 'failed'], JSON.stringify(item)).toContain(item.status);
      if (item.status === 'succeeded') expect(item.invocationId).toBeTruthy();
    }
    const results = ours.filter((i) => i.invocationId).map((i) => i.invocationId);
    expect(new Set(results).size).toBe(results.length);
  }, 200_000);

  it('made every answered invocation durable, and every committed execution complete and verifiable', async () => {
    const anchors: TrustAnchor[] = [];
    for (const role of ['gateway', 'worker'] as Role[]) {
      const exported = await runEbcc(['trust', 'export'], { EBCC_HOME: homes[role], EBCC_DB_URL: dbUrl });
      expect(exported.code, exported.stderr).toBe(0);
      anchors.push(parseTrustAnchor(JSON.parse(exported.stdout)));
    }
    const okInvocations = await database.db.select().from(invocations).where(eq(invocations.status, 'ok'));
    const ok = new Set(okInvocations.map((i) => i.id));
    for (const { invocationId } of answered) expect(ok.has(invocationId), invocationId).toBe(true);
    // Every committed execution: its stored artifacts hash to what its enclave signed, the signature is
    // the enclave's, and its evidence names the execution's own enclave, sequence and metadata.
    const enclaveKeys = new Map(
      (await database.client.execute('select eid, public_key from enclaves')).rows.map((r) => [
        Number(r.eid),
        Buffer.from(r.public_key as ArrayBuffer),
      ]),
    );
    // Artifacts are sealed at rest: they are read as their tenant reads them, through its data key.
    const keyring = new DataKeyring(database, FileKekProvider.open(kekFile, { create: false }));
    const rows = await database.db.select().from(stageExecutions);
    const opened = await openArtifacts(database.db, keyring, tenantId, rows);
    let unsigned = 0;
    const sha256 = (b: unknown) =>
      createHash('sha256')
        .update(Buffer.from(b as ArrayBuffer))
        .digest();
    for (const row of rows) {
      const what = `execution ${row.id}`;
      // An enclave killed mid-request signs nothing; that execution is recorded as failed, unsigned.
      if (row.evidence === null) {
        expect(row.exitReason, what).not.toBe('exit');
        unsigned++;
        continue;
      }
      expect(verifyEvidenceSignature(row.evidence, enclaveKeys.get(row.eid)!), what).toBe(true);
      const { claims } = decodeEvidence(row.evidence);
      const artifacts = opened.get(row.id)!;
      expect([claims.eid, claims.seq], what).toEqual([row.eid, row.seq]);
      expect(
        claims.requestDigest!.equals(sha256(artifacts.request ?? Buffer.alloc(0))),
        `${what} request`,
      ).toBe(true);
      expect(
        claims.responseDigest!.equals(sha256(artifacts.response ?? Buffer.alloc(0))),
        `${what} response`,
      ).toBe(true);
      expect(claims.logDigest!.equals(sha256(artifacts.log ?? Buffer.alloc(0))), `${what} log`).toBe(true);
      expect(
        claims.metadataDigest!.equals(sha256(row.boundMetadata ?? Buffer.alloc(0))),
        `${what} metadata`,
      ).toBe(true);
    }
    expect(rows.length - unsigned).toBeGreaterThanOrEqual(answered.length);
    // And the full offline verification (chains, native evidence, trust anchors) of a sample of
    // invocations: exporting one carries its enclave's whole chain, so doing all is quadratic.
    const signedOnly = await database.client.execute(
      "select id from invocations where status = 'ok' and id not in (select invocation_id from stage_executions where evidence is null)",
    );
    const sample = signedOnly.rows
      .map((r) => ({ id: String(r.id) }))
      .sort(() => Math.random() - 0.5)
      .slice(0, VERIFY_SAMPLE);
    for (const invocation of sample) {
      const bundle = await exportInvocation(database.db, invocation.id, tenantId, keyring);
      const result = verifyBundle(bundle, { trustAnchors: anchors, allowSim: true });
      expect(failedChecks(result), invocation.id).toEqual([]);
    }
    // Nothing half-written: every execution belongs to a recorded invocation, and has its digests.
    const orphans = await database.client.execute(
      'select count(*) from stage_executions s left join invocations i on i.id = s.invocation_id where i.id is null',
    );
    expect(Number(orphans.rows[0]![0])).toBe(0);
    const incomplete = await database.client.execute(
      'select count(*) from stage_executions where request_digest is null or response_digest is null or metadata is null',
    );
    expect(Number(incomplete.rows[0]![0])).toBe(0);
  }, 300_000);

  it('never reused an EID, nor a sequence number within one', async () => {
    const reusedSeq = await database.client.execute(
      'select eid, seq, count(*) n from stage_executions group by eid, seq having n > 1',
    );
    expect(reusedSeq.rows).toEqual([]);
    const sharedEid = await database.client.execute(
      'select eid, count(distinct cid) n from stage_executions group by eid having n > 1',
    );
    expect(sharedEid.rows).toEqual([]);
    const enclaveTwice = await database.client.execute(
      'select eid, count(*) n from enclaves group by eid having n > 1',
    );
    expect(enclaveTwice.rows).toEqual([]);
  });

  it('leaves no lease held: a live node holds none once idle, a killed holder’s expire within the TTL', async () => {
    const client = new Redis(redis.url, { maxRetriesPerRequest: 1 });
    try {
      // Leases were taken: the fencing counter moved (at least for the last invocation after the last restart).
      expect(Number(await client.get(leaseKeys.fenceKey))).toBeGreaterThan(0);
      const held = async () => {
        const keys = (await client.keys(`${leaseKeys.leasePrefix}*`)).filter(
          (key) => key !== leaseKeys.fenceKey,
        );
        return Promise.all(
          keys.map(async (key) => ({ key, value: await client.get(key), ttlMs: await client.pttl(key) })),
        );
      };
      // Nothing is in flight now, so a lease held by a live gateway or worker was never given back (its
      // holder would renew it for ever); one of a SIGKILLed holder must still be counting down.
      const liveHolders = new Set(
        (Object.keys(live) as Role[]).map((role) => `${ROLES[role].node}:${live[role]!.gatewayPid}`),
      );
      for (const lease of await held()) {
        const holder = lease.value?.slice(lease.value.indexOf(':') + 1);
        expect(liveHolders.has(holder!), `${lease.key} is still held by the live ${holder}`).toBe(false);
        expect(lease.ttlMs, `${lease.key} of ${holder}`).toBeGreaterThan(0);
        expect(lease.ttlMs, `${lease.key} of ${holder}`).toBeLessThanOrEqual(LEASE_TTL_MS);
      }
      for (let deadline = Date.now() + LEASE_TTL_MS + 2_000; (await held()).length && Date.now() < deadline;)
        await sleep(250);
      expect(await held()).toEqual([]);
    } finally {
      client.disconnect();
    }
  }, 30_000);

  it('reports instance state that matches the processes, and leaks nothing once stopped', async () => {
    const alive = (pid: number | null) => {
      if (!pid) return false;
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    const rows = await database.db.select().from(instances);
    for (const row of rows) {
      if (row.status === 'running') expect(alive(row.pid), `${row.cid} is said to run`).toBe(true);
      if (row.status === 'stopped') expect(alive(row.pid), `${row.cid} is said to be stopped`).toBe(false);
    }
    for (const role of ['gateway', 'worker'] as Role[]) {
      const proc = live[role]!;
      proc.child.kill('SIGTERM');
      await proc.exited;
    }
    for (let i = 0; i < 100 && processesOfUids(UID_BASE, 1000).length; i++) await sleep(100);
    expect(processesOfUids(UID_BASE, 1000)).toEqual([]);
    const client = new Redis(redis.url, { maxRetriesPerRequest: 1 });
    try {
      const keys = await client.keys(`${leaseKeys.leasePrefix}*`);
      expect(
        keys.filter((key) => key !== leaseKeys.fenceKey),
        'leases left after a graceful stop',
      ).toEqual([]);
    } finally {
      client.disconnect();
    }
    for (const role of ['gateway', 'worker'] as Role[]) {
      const tmp = join(homes[role], 'tmp');
      const left = (() => {
        try {
          return readdirSync(tmp);
        } catch {
          return [];
        }
      })();
      expect(left, `${role} temporary files`).toEqual([]);
    }
    const after = await database.db.select().from(instances);
    expect(after.filter((r) => r.status === 'running' && alive(r.pid))).toEqual([]);
  }, 60_000);
});
