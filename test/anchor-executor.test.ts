// The anchor executors on their own (real sandboxes, no gateway): how they report ends, and, for the
// isolate executor, that its limits end only the anchor that broke them and that isolates share nothing.
import { chmod, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { IsolateAnchorExecutor } from '../runtime/anchor/isolate-executor.ts';
import { ProcessAnchorExecutor } from '../runtime/anchor/process-executor.ts';
import type {
  AnchorExecutor,
  AnchorInstance,
  AnchorSpec,
  InvocationHooks,
  StageReply,
} from '../runtime/anchor/types.ts';
import { cleanupAll, tempDir } from './helpers/env.ts';

afterAll(cleanupAll);

const SOURCE = `
import { greeting } from './lib.mjs';
globalThis.counter = 0;
export default {
  async fetch(request, env, ctx) {
    const url = new URL(request.url);
    const mode = url.searchParams.get('mode');
    if (mode === 'spin') for (;;) {}
    if (mode === 'spin-later') { await env.stages.echo.invoke('x'); for (;;) {} }
    if (mode === 'memory') {
      const hoard = [];
      for (;;) hoard.push(new Array(1 << 16).fill(hoard.length));
    }
    if (mode === 'globals') {
      globalThis.counter += 1;
      globalThis.secret ??= url.searchParams.get('secret');
      return Response.json({ counter: globalThis.counter, secret: globalThis.secret });
    }
    if (mode === 'contract') {
      const stage = await env.stages.echo.invoke({ n: 1 }, { nonce: 'n-1' });
      const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode('abc')));
      const key = await crypto.subtle.importKey('raw', new TextEncoder().encode('k'), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign', 'verify']);
      const mac = await crypto.subtle.sign('HMAC', key, new TextEncoder().encode('m'));
      ctx.waitUntil(new Promise((r) => setTimeout(r, 5)));
      console.log('contract', request.method, request.headers.get('x-test'));
      const body = await request.text();
      const rel = new URL('../up?x=1#h', url);
      rel.searchParams.append('y', 'z w');
      return new Response(JSON.stringify({
        greeting,
        body,
        var: env.GREETING,
        stage: await stage.json(),
        eid: stage.eid,
        digest: [...digest.slice(0, 4)],
        macBytes: mac.byteLength,
        verified: await crypto.subtle.verify('HMAC', key, mac, new TextEncoder().encode('m')),
        uuid: crypto.randomUUID().length,
        rel: rel.href,
        decoded: new TextDecoder().decode(new Uint8Array([0xe2, 0x82, 0xac])),
        b64: btoa('hi') + atob('aGk='),
        headers: [...new Headers([['B', '2'], ['a', '1']])],
      }), { status: 201, statusText: 'Made', headers: { 'x-out': 'yes', 'content-type': 'application/json' } });
    }
    return new Response('ok');
  },
};
`;

const hooks: InvocationHooks = {
  stage: async (stage, body, options): Promise<StageReply> => ({
    ok: true,
    stage,
    eid: 7,
    seq: 1,
    executionId: 'x_1',
    body: Buffer.from(JSON.stringify({ echoed: Buffer.from(body).toString(), nonce: options.nonce })),
  }),
};
const request = (
  query = '',
  init: { method?: string; body?: string; headers?: [string, string][] } = {},
) => ({
  method: init.method ?? 'GET',
  url: `http://fn.test/a/b?${query}`,
  headers: init.headers ?? [],
  body: Buffer.from(init.body ?? ''),
});
const text = (bytes: Uint8Array) => Buffer.from(bytes).toString();

async function bundle(): Promise<string> {
  const rootDir = await tempDir('ebcc-anchor-');
  await writeFile(join(rootDir, 'anchor.mjs'), SOURCE, { mode: 0o644 });
  await writeFile(join(rootDir, 'lib.mjs'), 'export const greeting = "hello";\n', { mode: 0o644 });
  await chmod(rootDir, 0o755); // the sandbox's own uid reads it
  return rootDir;
}

async function launch(
  executor: AnchorExecutor,
  rootDir?: string,
  limits: Partial<AnchorSpec['limits']> = {},
): Promise<AnchorInstance> {
  const spec: AnchorSpec = {
    cid: `c_test_${Math.random().toString(36).slice(2)}`,
    rootDir: rootDir ?? (await bundle()),
    entry: 'anchor.mjs',
    vars: { GREETING: 'hi there' },
    stageNames: ['echo'],
    limits: { memoryMb: 64, cpuMs: 2000, timeoutMs: 400, ...limits },
    networkAllow: [],
  };
  const anchor = await executor.launch(spec);
  anchor.start();
  return anchor;
}

describe.each([
  ['process', () => new ProcessAnchorExecutor()],
  ['isolate', () => new IsolateAnchorExecutor()],
] as const)('the %s anchor executor', (name, make) => {
  const executor = make();
  const what = name === 'process' ? 'process' : 'isolate';

  it('answers a timeout only once the hung anchor is gone', async () => {
    const anchor = await launch(executor);
    const ok = await anchor.invoke(request(), hooks);
    expect(ok.outcome.kind).toBe('response');
    let exited = false;
    void anchor.exited.then(() => (exited = true));
    const { outcome, finished } = await anchor.invoke(request('mode=spin'), hooks);
    expect(outcome).toEqual({ kind: 'timeout', message: 'the anchor did not finish within 400 ms' });
    // By the time the caller hears of the timeout, the anchor has ended, so its instance can be
    // marked stopped before anyone else is handed it.
    expect(exited).toBe(true);
    expect((await anchor.exited).reason).toBe('killed');
    await expect(finished).resolves.toMatchObject({ waitUntilErrors: [] });
  });

  it('an invocation of an anchor that already ended fails at once as crashed', async () => {
    const anchor = await launch(executor);
    anchor.kill('SIGKILL');
    const exit = await anchor.exited;
    expect(exit).toMatchObject({ signal: 'SIGKILL', reason: 'killed' });
    const started = Date.now();
    const { outcome } = await anchor.invoke(request(), hooks);
    expect(Date.now() - started).toBeLessThan(200);
    expect(outcome).toEqual({
      kind: 'crashed',
      message: `the anchor ${what} had already ended (killed by SIGKILL)`,
    });
  });

  it('serves the Worker contract: Request, Response, URL, Headers, text, crypto, timers, stages, console', async () => {
    const anchor = await launch(executor, undefined, { timeoutMs: 5000 });
    const { outcome, finished } = await anchor.invoke(
      request('mode=contract', { method: 'POST', body: 'payload', headers: [['x-test', 'yes']] }),
      hooks,
    );
    if (outcome.kind !== 'response') throw new Error(JSON.stringify(outcome));
    expect(outcome.response.status).toBe(201);
    expect(outcome.response.statusText).toBe('Made');
    expect(outcome.response.headers).toEqual(
      expect.arrayContaining([
        ['x-out', 'yes'],
        ['content-type', 'application/json'],
      ]),
    );
    expect(JSON.parse(text(outcome.response.body))).toEqual({
      greeting: 'hello',
      body: 'payload',
      var: 'hi there',
      stage: { echoed: '{"n":1}', nonce: 'n-1' },
      eid: 7,
      digest: [0xba, 0x78, 0x16, 0xbf],
      macBytes: 32,
      verified: true,
      uuid: 36,
      rel: 'http://fn.test/up?x=1&y=z+w#h',
      decoded: '€',
      b64: 'aGk=hi',
      headers: [
        ['a', '1'],
        ['b', '2'],
      ],
    });
    const summary = await finished;
    expect(summary.console).toEqual([{ level: 'log', text: 'contract POST yes' }]);
    expect(summary.waitUntilErrors).toEqual([]);
    anchor.kill();
    await anchor.exited;
  });
});

describe('the isolate executor', () => {
  const executor = new IsolateAnchorExecutor();

  it('runs the anchors of one version in one host process, and one isolate cannot see another’s globals', async () => {
    const rootDir = await bundle();
    const [a, b] = [await launch(executor, rootDir), await launch(executor, rootDir)];
    expect(a.pid).toBeDefined();
    expect(b.pid).toBe(a.pid);
    const seen = async (anchor: AnchorInstance, secret: string) => {
      const { outcome } = await anchor.invoke(request(`mode=globals&secret=${secret}`), hooks);
      if (outcome.kind !== 'response') throw new Error(JSON.stringify(outcome));
      return JSON.parse(text(outcome.response.body));
    };
    expect(await seen(a, 'alpha')).toEqual({ counter: 1, secret: 'alpha' });
    expect(await seen(a, 'ignored')).toEqual({ counter: 2, secret: 'alpha' });
    expect(await seen(b, 'beta')).toEqual({ counter: 1, secret: 'beta' });
    // Another version gets another host process.
    const other = await launch(executor);
    expect(other.pid).not.toBe(a.pid);
    for (const anchor of [a, b, other]) anchor.kill();
    await Promise.all([a.exited, b.exited, other.exited]);
  });

  it('a heap past memoryMb ends only that anchor, as crashed for memory; its neighbour keeps serving', async () => {
    const rootDir = await bundle();
    const hog = await launch(executor, rootDir, { memoryMb: 16, timeoutMs: 20_000 });
    const neighbour = await launch(executor, rootDir, { memoryMb: 16, timeoutMs: 20_000 });
    expect(neighbour.pid).toBe(hog.pid);
    const { outcome } = await hog.invoke(request('mode=memory'), hooks);
    expect(outcome.kind).toBe('crashed');
    expect(outcome.kind === 'crashed' && outcome.message).toContain(
      'out of memory: the JavaScript heap reached its 16 MB limit',
    );
    expect(await hog.exited).toMatchObject({ reason: 'memory' });
    const after = await neighbour.invoke(request(), hooks);
    expect(after.outcome.kind === 'response' && text(after.outcome.response.body)).toBe('ok');
    neighbour.kill();
    await neighbour.exited;
  });

  it('an invocation past its CPU budget times out and ends only that anchor', async () => {
    const rootDir = await bundle();
    // The wall-clock timeout is far away: the CPU budget is what ends it.
    const spinner = await launch(executor, rootDir, { cpuMs: 300, timeoutMs: 30_000 });
    const neighbour = await launch(executor, rootDir, { cpuMs: 300, timeoutMs: 30_000 });
    const started = Date.now();
    const { outcome } = await spinner.invoke(request('mode=spin-later'), hooks);
    expect(outcome).toEqual({
      kind: 'timeout',
      message: 'the invocation used more than 300 ms of CPU time (anchor.limits.cpuMs)',
    });
    expect(Date.now() - started).toBeLessThan(20_000);
    expect(await spinner.exited).toMatchObject({ reason: 'cpu' });
    const after = await neighbour.invoke(request(), hooks);
    expect(after.outcome.kind).toBe('response');
    neighbour.kill();
    await neighbour.exited;
  });

  it('an isolate has no Node APIs', async () => {
    const rootDir = await tempDir('ebcc-anchor-');
    await writeFile(
      join(rootDir, 'anchor.mjs'),
      `export default { async fetch() {
        const names = ['process', 'require', 'Buffer', 'module', '__ebccSend', '__ebccUrl', '__ebccCrypto', '__ebccTimer', '__ebccInit'];
        const present = names.filter((n) => typeof globalThis[n] !== 'undefined');
        let imported = 'no';
        try { await import('node:fs'); imported = 'yes'; } catch {}
        // Timers live in the host process: their number is bounded per anchor.
        let timers = 'unbounded';
        try { for (let i = 0; i <= 10_000; i++) setTimeout(() => {}, 60_000); } catch (error) { timers = error.message; }
        return Response.json({ present, imported, timers });
      } };`,
      { mode: 0o644 },
    );
    await chmod(rootDir, 0o755);
    const anchor = await launch(executor, rootDir, { timeoutMs: 20_000 });
    const { outcome } = await anchor.invoke(request(), hooks);
    if (outcome.kind !== 'response') throw new Error(JSON.stringify(outcome));
    expect(JSON.parse(text(outcome.response.body))).toEqual({
      present: [],
      imported: 'no',
      timers: 'an anchor may have at most 10000 timers pending',
    });
    anchor.kill();
    await anchor.exited;
  });
});
