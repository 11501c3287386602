import { randomBytes } from 'node:crypto';
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { configureAdapters, trustAnchors } from '../adapters/index.ts';
import { blobs, enclaves, invocations, stageExecutions } from '../db/schema.ts';
import { failedChecks, parseTrustAnchor, verifyBundle } from '../runtime/evidence/index.ts';
import { createLogger } from '../runtime/log.ts';
import { RETENTION_SCHEDULER, RetentionService } from '../runtime/retention/job.ts';
import {
  api,
  cleanupAll,
  postJson,
  sampleBundle,
  sampleOrder,
  startTestGateway,
  upload,
  type TestGateway,
} from './helpers/env.ts';

const DAY = 86_400_000;
let gw: TestGateway;
let token: string;
let now = Date.now();
let service: RetentionService;

beforeAll(async () => {
  gw = await startTestGateway();
  configureAdapters({ dataDir: gw.home });
  token = await gw.token('acme', ['admin']);
  for (const edit of [
    (m: Record<string, any>) => (m.retention = { days: 30 }),
    (m: Record<string, any>) => {
      m.name = 'forever-signer';
      m.triggers = {};
    },
  ]) {
    const deployed = await upload(gw.url, token, await sampleBundle(edit));
    expect(deployed.status).toBe(201);
  }
  // The sweep runs as the BullMQ job, on the tests' real Redis, judging expiry by an injected clock.
  service = new RetentionService({
    db: gw.database.db,
    redisUrl: inject('redisUrl'),
    intervalMs: 60_000,
    logger: createLogger('silent'),
    clock: () => now,
    prefix: `ebcc-test-${randomBytes(4).toString('hex')}`,
  });
});
afterAll(async () => {
  await service.close();
  await cleanupAll();
});

async function invoke(path: string) {
  const response = await postJson(gw.url, path, token, sampleOrder(`o-${randomBytes(4).toString('hex')}`));
  expect(response.status).toBe(200);
  return response.headers.get('x-ebcc-invocation')!;
}
const executionsOf = (id: string) =>
  gw.database.db.select().from(stageExecutions).where(eq(stageExecutions.invocationId, id));
const startedAt = async (id: string) =>
  (await gw.database.db.select().from(invocations).where(eq(invocations.id, id)))[0]!.startedAt;

describe('retention', () => {
  it('registers the sweep as a repeatable job', async () => {
    await service.scheduled;
    const schedulers = await service.schedulers();
    expect(schedulers.map((s) => [s.key, s.every])).toContainEqual([RETENTION_SCHEDULER, 60_000]);
  });

  it('deletes expired invocations and artifacts, keeps the evidence the live chain needs, then whole closed chains', async () => {
    const a = await invoke('/orders');
    const b = await invoke('/orders');
    const kept = await invoke('/fn/forever-signer');
    const bStarted = await startedAt(b);
    while (Date.now() <= bStarted + 1) await new Promise((r) => setTimeout(r, 2));
    const c = await invoke('/orders');
    const [xa] = await executionsOf(a);
    const [xc] = await executionsOf(c);
    expect(xa!.eid).toBe(xc!.eid); // one persistent enclave: a, b and c are one chain

    // A large artifact lives in a blob: pretend a's request was one.
    const digest = `sha256:${randomBytes(32).toString('hex')}`;
    await gw.database.db.insert(blobs).values({ digest, size: 3, data: Buffer.from('big') });
    await gw.database.db
      .update(stageExecutions)
      .set({ requestBlob: digest, requestInline: null })
      .where(eq(stageExecutions.id, xa!.id));

    // 30 days after b started, a and b have expired; c (started later) and the function without a policy not.
    now = bStarted + 1 + 30 * DAY;
    const first = await service.runNow();
    expect(first).toMatchObject({ invocations: 2, pruned: 2, chains: 0, blobs: 1 });
    for (const id of [a, b]) {
      expect((await api(gw.url, token, 'GET', `/v1/invocations/${id}`)).status).toBe(404);
      const [x] = await executionsOf(id);
      expect(x!.prunedAt).toBe(now);
      expect([x!.requestInline, x!.requestBlob, x!.responseInline, x!.responseBlob, x!.log]).toEqual([
        null,
        null,
        null,
        null,
        null,
      ]);
      expect(x!.evidence).not.toBeNull();
    }
    expect(await gw.database.db.select().from(blobs).where(eq(blobs.digest, digest))).toEqual([]);
    expect((await api(gw.url, token, 'GET', `/v1/invocations/${kept}`)).status).toBe(200);
    // c's evidence still verifies, continuity from seq 1 included, through the kept entries of a and b.
    expect((await api(gw.url, token, 'GET', `/v1/invocations/${c}`)).status).toBe(200);
    const bundle = (await api(gw.url, token, 'GET', `/v1/invocations/${c}/evidence`)).body;
    expect(bundle.chain.map((e: { seq: number }) => e.seq)).toEqual([xa!.seq, xa!.seq + 1]);
    const result = verifyBundle(bundle, {
      trustAnchors: [parseTrustAnchor(trustAnchors()[0]!.anchor)],
      allowSim: true,
    });
    expect(failedChecks(result)).toEqual([]);

    // Nothing more to do at the same time: a second sweep is a no-op.
    expect(await service.runNow()).toMatchObject({ invocations: 0, pruned: 0, chains: 0 });

    // Once the enclave is destroyed and all of its chain has expired, the chain goes whole.
    expect((await api(gw.url, token, 'DELETE', `/v1/instances/${xc!.cid}?force=true`)).status).toBe(204);
    now = (await startedAt(c)) + 31 * DAY;
    const last = await service.runNow();
    expect(last).toMatchObject({ invocations: 1, pruned: 1, chains: 1 });
    expect(await gw.database.db.select().from(enclaves).where(eq(enclaves.eid, xc!.eid))).toEqual([]);
    expect(
      await gw.database.db.select().from(stageExecutions).where(eq(stageExecutions.eid, xc!.eid)),
    ).toEqual([]);
    expect((await api(gw.url, token, 'GET', `/v1/invocations/${kept}`)).status).toBe(200);
  });
});
