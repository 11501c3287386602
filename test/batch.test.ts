// Batches and queue triggers in one process: a real gateway running its batch workers, a real Redis
// (the global-setup one, under a queue prefix of the gateway's own), real sandboxes and libSQL.
import { Queue } from 'bullmq';
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { batchItems, invocations } from '../db/schema.ts';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { redisOptions } from '../runtime/batch/redis.ts';
import { progressLine } from '../runtime/cli/commands/batch.ts';
import { runEbcc } from './helpers/process.ts';
import {
  api,
  cleanupAll,
  sampleBundle,
  sampleOrder,
  startTestGateway,
  tempDir,
  upload,
  type TestGateway,
} from './helpers/env.ts';

let gw: TestGateway;
let token: string;

async function submit(name: string, body: string, contentType = 'application/json', query = '') {
  const response = await fetch(`${gw.url}/v1/functions/${name}/batches${query}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': contentType },
    body,
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null, headers: response.headers };
}

async function waitComplete(id: string, timeoutMs = 60_000): Promise<any> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { status, body } = await api(gw.url, token, 'GET', `/v1/batches/${id}?limit=1000`);
    expect(status).toBe(200);
    if (body.complete) return body;
    if (Date.now() > deadline)
      throw new Error(`batch ${id} did not complete: ${JSON.stringify(body.counts)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

// Fails with 503 on its first two invocations (one instance, so the count is the function's), then signs.
const FLAKY_ANCHOR = `let n = 0;
export default {
  async fetch(request, env) {
    n++;
    if (n <= 2) return new Response('busy, try later', { status: 503 });
    const order = await request.json();
    const signed = await env.stages.sign.invoke(order);
    return Response.json({ n, ...(await signed.json()) });
  },
};
`;

// Answers 503 until an item { "arm": true } arrives (one instance, so the flag is the function's).
const ARMED_ANCHOR = `let armed = false;
export default {
  async fetch(request, env) {
    const input = await request.json();
    if (input.arm) {
      armed = true;
      return Response.json({ armed });
    }
    if (!armed) return new Response('not armed yet', { status: 503 });
    const signed = await env.stages.sign.invoke(input);
    return Response.json({ order: input.orderId, ...(await signed.json()) });
  },
};
`;

beforeAll(async () => {
  gw = await startTestGateway({ batchWorkers: true });
  token = await gw.token('acme', ['admin']);
  const sample = await upload(
    gw.url,
    token,
    await sampleBundle((m) => {
      m.triggers.queue = { name: 'orders-in', concurrency: 2, path: '/orders' };
    }),
  );
  expect(sample.status, JSON.stringify(sample.body)).toBe(201);
  const flaky = await upload(
    gw.url,
    token,
    await sampleBundle(
      (m) => {
        m.name = 'flaky';
        m.pool = { minWarm: 0, maxInstances: 1 };
        m.triggers = {
          http: { public: false },
          queue: { name: 'flaky-in', retry: { attempts: 2, backoff: { type: 'exponential', delayMs: 50 } } },
        };
      },
      { 'anchor.js': FLAKY_ANCHOR },
    ),
  );
  expect(flaky.status, JSON.stringify(flaky.body)).toBe(201);
  const armed = await upload(
    gw.url,
    token,
    await sampleBundle(
      (m) => {
        m.name = 'armed';
        m.pool = { minWarm: 0, maxInstances: 1 };
        m.triggers = {
          http: { public: false },
          queue: { name: 'armed-in', retry: { attempts: 2, backoff: { type: 'fixed', delayMs: 50 } } },
        };
      },
      { 'anchor.js': ARMED_ANCHOR },
    ),
  );
  expect(armed.status, JSON.stringify(armed.body)).toBe(201);
});

afterAll(cleanupAll);

describe('POST /v1/functions/:name/batches', () => {
  it('runs every good item of a malformed batch, fails the bad ones once, and records each result', async () => {
    const items = [
      sampleOrder('b-1'),
      sampleOrder('b-2'),
      // Refused by the sign stage's JSON Schema: a permanent failure, never retried.
      { orderId: 'b-bad-schema', amountCents: 5, currency: 'EUR', items: [] },
      sampleOrder('b-3'),
      // Refused by the anchor itself (422).
      { ...sampleOrder('b-bad-currency'), currency: 'XXX' },
      sampleOrder('b-4'),
    ];
    const submitted = await submit('order-signer', JSON.stringify(items));
    expect(submitted.status, JSON.stringify(submitted.body)).toBe(202);
    expect(submitted.body).toMatchObject({ total: 6, queued: 6, refused: [], enqueued: true });
    expect(submitted.headers.get('location')).toBe(`/v1/batches/${submitted.body.id}`);

    const done = await waitComplete(submitted.body.id);
    expect(done.counts).toEqual({ queued: 0, succeeded: 4, failed: 2, dead: 0 });
    expect(done.percentDone).toBe(100);
    const bySeq = new Map<number, any>(done.items.map((i: any) => [i.seq, i]));
    for (const seq of [0, 1, 3, 5]) {
      const item = bySeq.get(seq);
      expect(item.status).toBe('succeeded');
      expect(item.attempts).toBe(1);
      expect(item.result.order).toBe(items[seq]!.orderId);
      expect(item.result.signature).toMatch(/\S+/);
      // Each item has its own invocation and its own evidence.
      const evidence = await api(gw.url, token, 'GET', item.evidence);
      expect(evidence.status).toBe(200);
    }
    const invocationIds = new Set([0, 1, 3, 5].map((s) => bySeq.get(s).invocationId));
    expect(invocationIds.size).toBe(4);
    expect(done.failures.map((f: any) => f.seq).sort()).toEqual([2, 4]);
    expect(bySeq.get(2)).toMatchObject({ status: 'failed', attempts: 1 });
    expect(bySeq.get(2).error).toMatch(/stage "sign" refused the request \(request-invalid\)/);
    expect(bySeq.get(4)).toMatchObject({ status: 'failed', attempts: 1, httpStatus: 422 });
    expect(bySeq.get(4).error).toMatch(/answered 422.*currency/);

    const rows = await gw.database.db.select().from(invocations).where(eq(invocations.trigger, 'batch'));
    expect(rows.filter((r) => invocationIds.has(r.id))).toHaveLength(4);
  });

  it('takes streamed NDJSON; a line that is not JSON and an item too large fail alone', async () => {
    const big = JSON.stringify({ ...sampleOrder('big'), pad: 'x'.repeat(1024 * 1024) });
    const lines = [
      JSON.stringify(sampleOrder('n-1')),
      '{"orderId": "broken",',
      '',
      big,
      JSON.stringify(sampleOrder('n-2')),
    ];
    const submitted = await submit('order-signer', `${lines.join('\n')}\n`, 'application/x-ndjson');
    expect(submitted.status, JSON.stringify(submitted.body)).toBe(202);
    expect(submitted.body.total).toBe(4);
    expect(submitted.body.queued).toBe(2);
    const refused = submitted.body.refused.map((r: any) => [r.seq, r.error.split(':')[0]]);
    expect(refused).toEqual([
      [1, 'invalid-json'],
      [2, 'item-too-large'],
    ]);
    const done = await waitComplete(submitted.body.id);
    expect(done.counts).toEqual({ queued: 0, succeeded: 2, failed: 2, dead: 0 });
    expect(done.items.filter((i: any) => i.status === 'succeeded').map((i: any) => i.result.order)).toEqual([
      'n-1',
      'n-2',
    ]);
  });

  it('refuses what is not a batch with a problem document', async () => {
    const notArray = await submit('order-signer', '{"orderId": 1}');
    expect(notArray.status).toBe(400);
    expect(notArray.body.type).toBe('urn:ebcc:problem:invalid-batch');
    const empty = await submit('order-signer', '[]');
    expect(empty.status).toBe(400);
    const badJson = await submit('order-signer', '[1,');
    expect(badJson.status).toBe(400);
    expect(badJson.body.type).toBe('urn:ebcc:problem:invalid-json');
    const text = await submit('order-signer', 'hello', 'text/plain');
    expect(text.status).toBe(415);
    const missing = await submit('no-such-fn', '[1]');
    expect(missing.status).toBe(404);
    const badPath = await submit('order-signer', '[1]', 'application/json', '?path=/../x');
    expect(badPath.status).toBe(400);
    const tooBig = await submit('order-signer', JSON.stringify([{ pad: 'x'.repeat(1024 * 1024 + 1) }]));
    expect(tooBig.status).toBe(202);
    expect(tooBig.body.refused[0].error).toMatch(/^item-too-large/);
    const unknown = await api(gw.url, token, 'GET', '/v1/batches/bat_nope');
    expect(unknown.status).toBe(404);
    const other = await gw.token('other-tenant', ['admin']);
    const foreign = await api(gw.url, other, 'GET', `/v1/batches/${tooBig.body.id}`);
    expect(foreign.status).toBe(404);
  });

  it('retries with backoff up to the function maximum, keeps the dead item and its reason, and retries it in one call', async () => {
    const submitted = await submit('flaky', JSON.stringify([sampleOrder('f-1')]));
    expect(submitted.status).toBe(202);
    const dead = await waitComplete(submitted.body.id);
    expect(dead.counts).toMatchObject({ dead: 1, succeeded: 0 });
    expect(dead.failures[0]).toMatchObject({ status: 'dead', attempts: 2 });
    expect(dead.failures[0].error).toMatch(/answered 503: busy, try later/);

    const retried = await api(gw.url, token, 'POST', `/v1/batches/${submitted.body.id}/retry`);
    expect(retried.status).toBe(200);
    expect(retried.body).toMatchObject({ requeued: 1, enqueued: true });
    const done = await waitComplete(submitted.body.id);
    expect(done.counts).toMatchObject({ succeeded: 1, dead: 0 });
    expect(done.items[0]).toMatchObject({ status: 'succeeded', attempts: 1 });
    expect(done.items[0].result.n).toBe(3);

    const again = await api(
      gw.url,
      token,
      'POST',
      `/v1/batches/${submitted.body.id}/items/${done.items[0].id}/retry`,
    );
    expect(again.status).toBe(409);
  });
});

describe('queue triggers', () => {
  it('runs jobs any BullMQ producer puts on the declared queue, and records each once', async () => {
    const producer = new Queue('orders-in', {
      connection: redisOptions(gw.config.redisUrl, 'worker'),
      prefix: gw.config.queuePrefix,
    });
    try {
      await producer.addBulk([
        { name: 'order', data: sampleOrder('q-1'), opts: { jobId: 'q-1' } },
        { name: 'order', data: sampleOrder('q-2'), opts: { jobId: 'q-2' } },
        { name: 'order', data: { ...sampleOrder('q-3'), currency: 'XXX' }, opts: { jobId: 'q-3' } },
      ]);
      const deadline = Date.now() + 30_000;
      let rows: (typeof batchItems.$inferSelect)[] = [];
      while (Date.now() < deadline) {
        rows = await gw.database.db.select().from(batchItems).where(eq(batchItems.queue, 'orders-in'));
        if (rows.length === 3 && rows.every((r) => r.status !== 'queued')) break;
        await new Promise((r) => setTimeout(r, 200));
      }
      expect(rows.map((r) => r.status).sort()).toEqual(['failed', 'succeeded', 'succeeded']);
      for (const row of rows) expect(row.source).toBe('queue');
      const ok = rows.filter((r) => r.status === 'succeeded');
      for (const row of ok) {
        expect(JSON.parse(row.resultInline!.toString()).order).toMatch(/^q-[12]$/);
        const [inv] = await gw.database.db
          .select()
          .from(invocations)
          .where(eq(invocations.id, row.invocationId!));
        expect(inv!.trigger).toBe('queue');
      }
    } finally {
      await producer.close();
    }
  });
});

describe('dead letters of a function', () => {
  it('keeps a producer job that ran out of attempts with its reason, and retries every dead item in one call', async () => {
    const producer = new Queue('armed-in', {
      connection: redisOptions(gw.config.redisUrl, 'worker'),
      prefix: gw.config.queuePrefix,
    });
    try {
      await producer.add('order', sampleOrder('d-1'), { jobId: 'd-1' });
      let dead: any;
      for (let i = 0; i < 150; i++) {
        dead = await api(gw.url, token, 'GET', '/v1/functions/armed/dead-letters');
        if (dead.body.items.length) break;
        await new Promise((r) => setTimeout(r, 200));
      }
      expect(dead.status).toBe(200);
      expect(dead.body.items).toHaveLength(1);
      expect(dead.body.items[0]).toMatchObject({
        source: 'queue',
        queue: 'armed-in',
        attempts: 2,
        batchId: null,
      });
      expect(dead.body.items[0].error).toMatch(/answered 503: not armed yet/);
      expect(JSON.parse(dead.body.items[0].input).orderId).toBe('d-1');

      const arm = await submit('armed', JSON.stringify([{ arm: true }]));
      expect((await waitComplete(arm.body.id)).counts.succeeded).toBe(1);
      const retried = await api(gw.url, token, 'POST', '/v1/functions/armed/dead-letters/retry');
      expect(retried.status).toBe(200);
      expect(retried.body).toMatchObject({ requeued: 1, enqueued: true });
      const id = retried.body.items[0];
      let row: typeof batchItems.$inferSelect | undefined;
      for (let i = 0; i < 150; i++) {
        [row] = await gw.database.db.select().from(batchItems).where(eq(batchItems.id, id));
        if (row?.status !== 'queued') break;
        await new Promise((r) => setTimeout(r, 200));
      }
      expect(row).toMatchObject({ status: 'succeeded', attempts: 1, source: 'queue' });
      expect(JSON.parse(row!.resultInline!.toString()).order).toBe('d-1');
      expect((await api(gw.url, token, 'GET', '/v1/functions/armed/dead-letters')).body.items).toEqual([]);
      const other = await gw.token('someone-else', ['admin']);
      expect((await api(gw.url, other, 'GET', '/v1/functions/armed/dead-letters')).status).toBe(404);
    } finally {
      await producer.close();
    }
  });
});

describe('ebcc batch', () => {
  it('submits a file and waits with plain progress lines off a terminal; status and wait report failures', async () => {
    const dir = await tempDir('ebcc-batch-cli-');
    const file = join(dir, 'orders.ndjson');
    await writeFile(file, [sampleOrder('c-1'), sampleOrder('c-2')].map((o) => JSON.stringify(o)).join('\n'));
    const env = { EBCC_URL: gw.url, EBCC_TOKEN: token };
    const ok = await runEbcc(['batch', 'submit', 'order-signer', file, '--wait'], env);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stderr).toMatch(/^batch bat_\S+: 2\/2 \(100\.0%\) ok 2 failed 0 dead 0 queued 0$/m);
    expect(ok.stderr.includes('\r') || ok.stderr.includes('\u001b')).toBe(false);
    expect(ok.stdout).toMatch(/2 succeeded, 0 failed, 0 dead, 0 queued of 2/);

    const bad = join(dir, 'bad.json');
    await writeFile(bad, JSON.stringify([sampleOrder('c-3'), { ...sampleOrder('c-4'), currency: 'XXX' }]));
    const submitted = await runEbcc(['batch', 'submit', 'order-signer', bad, '--json'], env);
    expect(submitted.code, submitted.stderr).toBe(0);
    const { id } = JSON.parse(submitted.stdout);
    const waited = await runEbcc(['batch', 'wait', id, '--quiet'], env);
    expect(waited.code).toBe(1);
    expect(waited.stdout).toMatch(/#1 itm_\S+ failed after 1 attempt\(s\): the function answered 422/);
    const status = await runEbcc(['batch', 'status', id, '--json'], env);
    expect(status.code).toBe(0);
    expect(JSON.parse(status.stdout).counts).toEqual({ queued: 0, succeeded: 1, failed: 1, dead: 0 });
    const dead = await runEbcc(['batch', 'dead', 'armed', '--json'], env);
    expect(dead.code, dead.stderr).toBe(0);
    expect(JSON.parse(dead.stdout)).toEqual({ function: 'armed', items: [], nextCursor: null });
    const missing = await runEbcc(['batch', 'status', 'bat_missing'], env);
    expect(missing.code).toBe(5);
    expect(missing.stderr).toMatch(/batch bat_missing does not exist/);
    // Five CLI processes, each loading the CLI through tsx: slow on a loaded machine.
  }, 120_000);
});

it('draws a progress bar for a terminal and a plain line otherwise', () => {
  const s = {
    id: 'bat_x',
    function: 'f',
    total: 8,
    counts: { queued: 4, succeeded: 3, failed: 1, dead: 0 },
    done: 4,
    percentDone: 50,
    complete: false,
    failures: [],
  };
  expect(progressLine(s, true)).toBe(
    `[${'#'.repeat(15)}${'.'.repeat(15)}] 4/8 (50.0%) ok 3 failed 1 dead 0 queued 4`,
  );
  expect(progressLine(s, false)).toBe('batch bat_x: 4/8 (50.0%) ok 3 failed 1 dead 0 queued 4');
});
