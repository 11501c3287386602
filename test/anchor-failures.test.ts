// Anchors that misbehave: each gets a clear RFC 9457 answer, and the gateway keeps serving others.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  busyInstance,
  callFn,
  deployComposite,
  expectHealthy,
  expectProblem,
  HEALTHY_ANCHOR,
  invocationRecord,
} from './helpers/composite-kit.ts';
import { cleanupAll, startTestGateway, type TestGateway } from './helpers/env.ts';

// Every case runs under both anchor executors: the isolate executor must give the same answers.
describe.each(['process', 'isolate'] as const)('with the %s anchor executor', (anchorExecutor) => {
  let gw: TestGateway;
  let token: string;

  beforeAll(async () => {
    gw = await startTestGateway({ anchorExecutor });
    token = await gw.token('acme', ['admin']);
    await deployComposite(gw, token, { name: 'healthy', anchor: HEALTHY_ANCHOR });
  });
  afterAll(cleanupAll);

  /** Each request says what to do, so that one deployed function covers both a good and a bad path. */
  const MODAL_ANCHOR = `
  const boot = crypto.randomUUID();
  export default {
    async fetch(request) {
      const mode = new URL(request.url).searchParams.get('mode');
      if (mode === 'throw') throw new Error('boom from the anchor');
      if (mode === 'throw-string') throw 'a bare string';
      if (mode === 'spin') { for (;;) {} }
      if (mode === 'never') return new Promise(() => {});
      if (mode === 'string') return 'not a response';
      if (mode === 'object') return { status: 200 };
      if (mode === 'undefined') return undefined;
      if (mode === 'stray-rejection') {
        Promise.reject(new Error('nobody awaits this'));
        return Response.json({ boot, stray: true });
      }
      if (mode === 'late-throw') {
        setTimeout(() => {
          throw new Error('thrown from a timer after the response');
        }, 10);
        return Response.json({ boot, late: true });
      }
      if (mode === 'memory') {
        const hoard = [];
        for (;;) hoard.push(new Array(1 << 16).fill(hoard.length));
      }
      return Response.json({ boot });
    },
  };
  `;

  describe('anchor failures', () => {
    beforeAll(async () => {
      await deployComposite(gw, token, {
        name: 'modal',
        anchor: MODAL_ANCHOR,
        anchorLimits: { timeoutMs: 500, memoryMb: 32 },
        pool: { maxInstances: 1 },
      });
    });

    it('an anchor that throws answers 502 anchor-error, and the same instance keeps serving', async () => {
      const first = await callFn(gw, token, 'modal');
      expect(first.status, first.text).toBe(200);
      const cid = first.headers.get('x-ebcc-cid');

      const thrown = await callFn(gw, token, 'modal', { path: '/?mode=throw' });
      const problem = expectProblem(thrown, 502, 'anchor-error');
      expect(problem.detail).toBe('Error: boom from the anchor');
      expect(thrown.headers.get('x-ebcc-cid')).toBe(cid);

      const bare = await callFn(gw, token, 'modal', { path: '/?mode=throw-string' });
      expect(expectProblem(bare, 502, 'anchor-error').detail).toContain('a bare string');

      const record = await invocationRecord(gw, token, thrown.headers.get('x-ebcc-invocation')!);
      expect(record).toMatchObject({
        status: 'error',
        httpStatus: 502,
        error: 'Error: boom from the anchor',
      });

      // A thrown error does not cost the instance: the next call is warm on the same one.
      const after = await callFn(gw, token, 'modal');
      expect(after.status).toBe(200);
      expect(after.headers.get('x-ebcc-start')).toBe('warm');
      expect(after.headers.get('x-ebcc-cid')).toBe(cid);
      expect(after.body.boot).toBe(first.body.boot);
      await expectHealthy(gw, token, 'healthy');
    });

    it.each([
      ['string', 'string'],
      ['object', 'Object'],
      ['undefined', 'undefined'],
    ])('an anchor returning a non-Response (%s) answers 502 anchor-error naming it', async (mode, named) => {
      const result = await callFn(gw, token, 'modal', { path: `/?mode=${mode}` });
      const problem = expectProblem(result, 502, 'anchor-error');
      expect(problem.detail).toBe(`TypeError: the anchor's fetch() returned ${named}, not a Response`);
      await expectHealthy(gw, token, 'healthy');
    });

    it.each(['spin', 'never'])(
      '[A4 no endless blocking, A3 bounded CPU] an anchor that hangs (%s) answers 504 anchor-timeout and is replaced',
      async (mode) => {
        const warm = await callFn(gw, token, 'modal');
        expect(warm.status).toBe(200);
        const cid = warm.headers.get('x-ebcc-cid');

        const started = Date.now();
        const hung = await callFn(gw, token, 'modal', { path: `/?mode=${mode}` });
        const elapsed = Date.now() - started;
        const problem = expectProblem(hung, 504, 'anchor-timeout');
        expect(problem.detail).toBe('the anchor did not finish within 500 ms');
        expect(hung.headers.get('x-ebcc-cid')).toBe(cid);
        expect(elapsed).toBeGreaterThanOrEqual(450);
        expect(elapsed).toBeLessThan(5_000);

        // The hung anchor was ended: the very next call gets a new instance, cold, and it works.
        const next = await callFn(gw, token, 'modal');
        expect(next.status, next.text).toBe(200);
        expect(next.headers.get('x-ebcc-start')).toBe('cold');
        expect(next.headers.get('x-ebcc-cid')).not.toBe(cid);
        expect(next.body.boot).not.toBe(warm.body.boot);

        const record = await invocationRecord(gw, token, hung.headers.get('x-ebcc-invocation')!);
        expect(record).toMatchObject({ status: 'error', httpStatus: 504 });
        await expectHealthy(gw, token, 'healthy');
      },
    );

    it('a promise rejection nobody handles does not cost the instance', async () => {
      const stray = await callFn(gw, token, 'modal', { path: '/?mode=stray-rejection' });
      expect(stray.status, stray.text).toBe(200);
      await new Promise((r) => setTimeout(r, 200));
      const after = await callFn(gw, token, 'modal');
      expect(after.status, after.text).toBe(200);
      expect(after.headers.get('x-ebcc-start')).toBe('warm');
      expect(after.body.boot).toBe(stray.body.boot);
    });

    it('an anchor that throws from a timer between invocations is replaced; the next call works', async () => {
      const late = await callFn(gw, token, 'modal', { path: '/?mode=late-throw' });
      expect(late.status, late.text).toBe(200);
      const cid = late.headers.get('x-ebcc-cid');
      await new Promise((r) => setTimeout(r, 300));
      const next = await callFn(gw, token, 'modal');
      expect(next.status, next.text).toBe(200);
      expect(next.headers.get('x-ebcc-start')).toBe('cold');
      expect(next.headers.get('x-ebcc-cid')).not.toBe(cid);
      expect(next.body.boot).not.toBe(late.body.boot);
    });

    it('[A3 bounded memory] an anchor that exceeds its memory answers 502 with a reason naming memory, and is replaced', async () => {
      // A long timeout, so that the memory limit (not the clock, on a slow machine) is what ends it.
      await deployComposite(gw, token, {
        name: 'hog',
        anchor: MODAL_ANCHOR,
        anchorLimits: { timeoutMs: 20_000, memoryMb: 32 },
        pool: { maxInstances: 1 },
      });
      const warm = await callFn(gw, token, 'hog');
      expect(warm.status, warm.text).toBe(200);
      const cid = warm.headers.get('x-ebcc-cid');
      const result = await callFn(gw, token, 'hog', { path: '/?mode=memory' });
      const problem = expectProblem(result, 502, 'anchor-crashed');
      expect(problem.detail).toContain('out of memory: the JavaScript heap reached its 32 MB limit');
      expect(problem.detail).not.toContain('exit code null');

      const next = await callFn(gw, token, 'hog');
      expect(next.status, next.text).toBe(200);
      expect(next.headers.get('x-ebcc-start')).toBe('cold');
      expect(next.headers.get('x-ebcc-cid')).not.toBe(cid);
      await expectHealthy(gw, token, 'healthy');
    });
  });

  describe('a request queued behind a hung invocation', () => {
    it('is served by the replacement instance once the hung one is ended', async () => {
      await deployComposite(gw, token, {
        name: 'single',
        anchor: MODAL_ANCHOR,
        anchorLimits: { timeoutMs: 500 },
        pool: { maxInstances: 1 },
      });
      const warm = await callFn(gw, token, 'single');
      expect(warm.status).toBe(200);
      const hung = callFn(gw, token, 'single', { path: '/?mode=spin' });
      expect(await busyInstance(gw, token, 'single')).toBe(warm.headers.get('x-ebcc-cid'));
      // The only instance is busy: this one waits for it (up to the pool's wait limit of 5 s).
      const started = Date.now();
      const queued = await callFn(gw, token, 'single');
      expectProblem(await hung, 504, 'anchor-timeout');
      expect(queued.status, queued.text).toBe(200);
      expect(queued.headers.get('x-ebcc-cid')).not.toBe(warm.headers.get('x-ebcc-cid'));
      expect(Date.now() - started).toBeLessThan(3_000);
    });
  });

  describe('anchor modules that fail to load', () => {
    it.each([
      ['a syntax error', 'export default { fetch( {', /SyntaxError/],
      ['no default export', 'export const fetch = () => new Response("x");', /export default/],
      ['a default without fetch', 'export default { handle() {} };', /export default \{ fetch/],
      [
        'a throwing top level',
        'throw new RangeError("bad config");\nexport default {};',
        /RangeError: bad config/,
      ],
    ])('an anchor with %s answers 422 anchor-load-failed', async (_what, source, detail) => {
      const name = `broken-${Math.random().toString(36).slice(2, 8)}`;
      await deployComposite(gw, token, { name, anchor: source });
      const result = await callFn(gw, token, name);
      // The failure happens while the instance is created, before there is an invocation to name.
      const problem = expectProblem(result, 422, 'anchor-load-failed', false);
      expect(problem.detail).toMatch(detail);
      // Nothing half-made is left behind.
      const instances = await fetch(`${gw.url}/v1/instances`, {
        headers: { authorization: `Bearer ${token}` },
      });
      const listed = (await instances.json()).instances as { annotations: Record<string, string> }[];
      expect(listed.filter((i) => i.annotations['ebcc.function'] === name)).toEqual([]);
      await expectHealthy(gw, token, 'healthy');
    });
  });
});
