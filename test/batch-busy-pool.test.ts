// A busy pool is not the item's fault: a batch larger than its function's pool can take at once runs
// every item, and the jobs the pool turned away (429 after its bounded wait) come back later without
// spending one of the item's attempts.
import { and, eq } from 'drizzle-orm';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { batchItems, invocations } from '../db/schema.ts';
import {
  api,
  cleanupAll,
  sampleBundle,
  sampleOrder,
  startTestGateway,
  upload,
  type TestGateway,
} from './helpers/env.ts';

// Holds its one instance long enough that the other items wait out the pool's bounded wait.
const SLOW_ANCHOR = `export default {
  async fetch(request) {
    const order = await request.json();
    await new Promise((resolve) => setTimeout(resolve, 150));
    return Response.json({ order: order.orderId });
  },
};
`;

let gw: TestGateway;
let token: string;

beforeAll(async () => {
  gw = await startTestGateway({ batchWorkers: true, batchConcurrency: 8, poolMaxWaitMs: 100 });
  token = await gw.token('acme', ['admin']);
  const deployed = await upload(
    gw.url,
    token,
    await sampleBundle(
      (m) => {
        m.name = 'narrow';
        m.pool = { minWarm: 0, maxInstances: 1 };
        m.triggers = {
          http: { public: false },
          // One attempt: a single busy-pool refusal counted as a failure would make its item dead.
          queue: { name: 'narrow-in', retry: { attempts: 1, backoff: { type: 'fixed', delayMs: 50 } } },
        };
      },
      { 'anchor.js': SLOW_ANCHOR },
    ),
  );
  expect(deployed.status, JSON.stringify(deployed.body)).toBe(201);
}, 120_000);

afterAll(cleanupAll);

it('runs a batch larger than a one-instance pool; refusals of the busy pool spend no attempt', async () => {
  const n = 12;
  const items = Array.from({ length: n }, (_, i) => sampleOrder(`narrow-${i}`));
  const submitted = await api(gw.url, token, 'POST', '/v1/functions/narrow/batches', items);
  expect(submitted.status, JSON.stringify(submitted.body)).toBe(202);
  const id = submitted.body.id as string;
  let body: any;
  for (let i = 0; i < 600; i++) {
    body = (await api(gw.url, token, 'GET', `/v1/batches/${id}?limit=100`)).body;
    if (body.complete) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  expect(body.complete, JSON.stringify(body.counts)).toBe(true);
  expect(body.counts).toEqual({ queued: 0, succeeded: n, failed: 0, dead: 0 });
  for (const item of body.items) expect(item).toMatchObject({ status: 'succeeded', attempts: 1 });
  // The pool did turn jobs away: eight run at once against one instance and a 100 ms wait.
  const metrics = await fetch(`${gw.url}/metrics`, { headers: { authorization: `Bearer ${token}` } });
  const text = await metrics.text();
  const rejected = /ebcc_pool_rejected_total\{function="narrow",reason="exhausted"\} (\d+)/.exec(text);
  expect(Number(rejected?.[1] ?? 0), text).toBeGreaterThan(0);
  // Each item ran exactly once: the turned-away jobs never reached the function.
  const rows = await gw.database.db.select().from(batchItems).where(eq(batchItems.batchId, id));
  const runs = await gw.database.db
    .select({ id: invocations.id })
    .from(invocations)
    .where(and(eq(invocations.functionId, rows[0]!.functionId), eq(invocations.trigger, 'batch')));
  expect(runs).toHaveLength(n);
}, 180_000);
