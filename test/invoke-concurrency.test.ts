// Load and interference: many concurrent invocations against a small non-concurrent pool, and an
// instance killed while it serves one.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  callFn,
  deployComposite,
  expectHealthy,
  expectProblem,
  busyInstance,
  HEALTHY_ANCHOR,
  invocationRecord,
  type CallResult,
} from './helpers/composite-kit.ts';
import { api, cleanupAll, startTestGateway, type TestGateway } from './helpers/env.ts';

let gw: TestGateway;
let token: string;

/** Answers 500 if it is ever entered while it serves another invocation. */
const GUARDED_ANCHOR = `
const boot = crypto.randomUUID();
let busy = false;
let served = 0;
export default {
  async fetch(request, env) {
    if (busy) return Response.json({ overlap: true, boot }, { status: 500 });
    busy = true;
    try {
      const ms = Number(new URL(request.url).searchParams.get('ms') ?? '25');
      await new Promise((resolve) => setTimeout(resolve, ms));
      const echoed = await (await env.stages.echo.invoke('n' + served)).text();
      served += 1;
      return Response.json({ boot, served, echoed });
    } finally {
      busy = false;
    }
  },
};
`;

const ECHO_PERSISTENT = `
let buffer = Buffer.alloc(0);
process.stdin.on('data', (chunk) => {
  buffer = Buffer.concat([buffer, chunk]);
  while (buffer.length >= 4 && buffer.length >= 4 + buffer.readUInt32BE(0)) {
    const frame = buffer.subarray(0, 4 + buffer.readUInt32BE(0));
    buffer = buffer.subarray(frame.length);
    process.stdout.write(frame);
  }
});
`;

beforeAll(async () => {
  gw = await startTestGateway();
  token = await gw.token('acme', ['admin']);
  const echo = { 'stages/echo.mjs': ECHO_PERSISTENT };
  await deployComposite(gw, token, { name: 'healthy', anchor: HEALTHY_ANCHOR });
  for (const name of ['guarded', 'slow']) {
    await deployComposite(gw, token, {
      name,
      anchor: GUARDED_ANCHOR,
      anchorLimits: { timeoutMs: 20_000 },
      pool: { maxInstances: 2, concurrent: false },
      stages: [
        {
          name: 'echo',
          mode: 'persistent',
          image: { kind: 'script', interpreter: 'node', entry: 'stages/echo.mjs' },
          limits: { memoryMb: 96 },
        },
      ],
      files: echo,
    });
  }
});
afterAll(cleanupAll);

describe('concurrency', () => {
  it('40 concurrent invocations on 2 non-concurrent instances: each served alone, or told to retry', async () => {
    const results = await Promise.all(
      Array.from({ length: 40 }, () => callFn(gw, token, 'guarded', { path: '/?ms=25' })),
    );
    const byStatus = new Map<number, CallResult[]>();
    for (const r of results) byStatus.set(r.status, [...(byStatus.get(r.status) ?? []), r]);
    const statuses = [...byStatus.keys()].sort();
    expect(
      statuses.every((s) => s === 200 || s === 429),
      `statuses ${statuses.join(',')}: ${results.find((r) => r.status !== 200 && r.status !== 429)?.text}`,
    ).toBe(true);

    for (const rejected of byStatus.get(429) ?? []) {
      expectProblem(rejected, 429, 'pool-exhausted', false);
      expect(Number(rejected.headers.get('retry-after'))).toBeGreaterThan(0);
    }
    const ok = byStatus.get(200) ?? [];
    expect(ok.length).toBeGreaterThan(0);
    const cids = new Set(ok.map((r) => r.headers.get('x-ebcc-cid')));
    const boots = new Set(ok.map((r) => r.body.boot));
    expect(cids.size).toBeGreaterThan(0);
    expect(cids.size).toBeLessThanOrEqual(2);
    expect(boots.size).toBe(cids.size);
    // Each instance counted its own invocations one after another: no count was seen twice.
    for (const boot of boots) {
      const counts = ok.filter((r) => r.body.boot === boot).map((r) => r.body.served);
      expect(new Set(counts).size).toBe(counts.length);
      expect(Math.max(...counts)).toBe(counts.length);
    }
    for (const r of ok) expect(r.body.echoed).toBe(`n${r.body.served - 1}`);
    expect(ok.filter((r) => r.headers.get('x-ebcc-start') === 'cold').length).toBe(cids.size);

    // Nothing crashed: the instances are still running and serve again.
    const again = await callFn(gw, token, 'guarded', { path: '/?ms=1' });
    expect(again.status, again.text).toBe(200);
    expect(cids.has(again.headers.get('x-ebcc-cid'))).toBe(true);
    await expectHealthy(gw, token, 'healthy');
  });
});

describe('killing an instance mid-invocation', () => {
  it('fails the invocation with 502 anchor-crashed and stops the instance as killed', async () => {
    const pending = callFn(gw, token, 'slow', { path: '/?ms=10000' });
    // Wait until the instance is serving it.
    const cid = await busyInstance(gw, token, 'slow');

    const started = Date.now();
    const killed = await api(gw.url, token, 'POST', `/v1/instances/${cid}/kill`, { signal: 'SIGTERM' });
    expect(killed.status, JSON.stringify(killed.body)).toBe(202);
    expect(killed.body.status).toBe('stopped');
    expect(killed.body.annotations['ebcc.stopReason']).toBe('killed by SIGTERM');
    expect(killed.body.annotations['ebcc.exitStatus']).toBe('143');
    expect(killed.body.pid).toBeUndefined();

    const result = await pending;
    expect(Date.now() - started).toBeLessThan(5_000);
    const problem = expectProblem(result, 502, 'anchor-crashed');
    expect(problem.detail).toContain('killed by SIGTERM');
    expect(result.headers.get('x-ebcc-cid')).toBe(cid);
    const record = await invocationRecord(gw, token, result.headers.get('x-ebcc-invocation')!);
    expect(record).toMatchObject({ status: 'error', httpStatus: 502, cid });

    // The function is served again by a new instance, and so is every other function.
    const next = await callFn(gw, token, 'slow', { path: '/?ms=1' });
    expect(next.status, next.text).toBe(200);
    expect(next.headers.get('x-ebcc-cid')).not.toBe(cid);
    expect(next.body.echoed).toBe('n0');
    await expectHealthy(gw, token, 'healthy');
  });
});
