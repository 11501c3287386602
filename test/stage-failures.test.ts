// Stages that fail: the anchor sees a StageError with its code, status and EID; the failed execution is
// still recorded with its exit; a persistent stage gets a new enclave afterwards; bad requests never
// reach an enclave.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  callFn,
  deployComposite,
  expectHealthy,
  HEALTHY_ANCHOR,
  invocationRecord,
} from './helpers/composite-kit.ts';
import { api, cleanupAll, startTestGateway, type TestGateway } from './helpers/env.ts';

let gw: TestGateway;
let token: string;

/** Calls the stage named in the query with the request body; reports a StageError as JSON. */
const ANCHOR = `
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.searchParams.has('list')) {
      const names = Object.keys(env.stages);
      let replaced;
      try {
        env.stages.nope = { invoke: async () => 'forged' };
        replaced = 'assigned';
      } catch (e) {
        replaced = e.name;
      }
      return Response.json({
        names,
        frozen: Object.isFrozen(env.stages),
        nope: typeof env.stages.nope,
        replaced,
        stillNope: env.stages.nope === undefined,
      });
    }
    const stage = url.searchParams.get('stage');
    try {
      const reply = await env.stages[stage].invoke(new Uint8Array(await request.arrayBuffer()));
      return Response.json({ ok: true, eid: reply.eid, seq: reply.seq, body: await reply.text() });
    } catch (e) {
      if (e?.name !== 'StageError') return Response.json({ thrown: e.name, message: e.message }, { status: 500 });
      return Response.json({ code: e.code, status: e.status, eid: e.eid, message: e.message }, { status: 200 });
    }
  },
};
`;

/** Oneshot: the request is one line naming what to do. */
const FAULTY_SH = `IFS= read -r mode || true
case "$mode" in
  crash) echo "crashing on purpose" >&2; exit 3 ;;
  abort) echo "about to die by a signal" >&2; kill -SEGV $$ ;;
  hang) exec sleep 30 ;;
  big) head -c 5000 /dev/zero; exec sleep 30 ;;
  *) printf 'ok:%s' "$mode" ;;
esac
`;

/** Persistent: framed requests on stdin, framed answers on stdout. */
const FAULTY_MJS = `
let buffer = Buffer.alloc(0);
function reply(payload) {
  const header = Buffer.alloc(4);
  header.writeUInt32BE(payload.length);
  process.stdout.write(Buffer.concat([header, payload]));
}
function handle(mode) {
  if (mode === 'crash') {
    process.stderr.write('crashing on purpose\\n');
    process.exit(3);
  }
  if (mode === 'abort') {
    process.stderr.write('about to die by a signal\\n');
    process.abort();
  }
  if (mode === 'hang') return;
  if (mode === 'quit') process.exit(0);
  if (mode === 'bye') {
    reply(Buffer.from('ok:bye'));
    process.stdout.end(() => process.exit(0));
    return;
  }
  if (mode === 'big') return reply(Buffer.alloc(5000, 120));
  process.stderr.write('served ' + mode + '\\n');
  reply(Buffer.from('ok:' + mode));
}
process.stdin.on('data', (chunk) => {
  buffer = Buffer.concat([buffer, chunk]);
  while (buffer.length >= 4 && buffer.length >= 4 + buffer.readUInt32BE(0)) {
    const length = buffer.readUInt32BE(0);
    const request = buffer.subarray(4, 4 + length).toString();
    buffer = buffer.subarray(4 + length);
    handle(request);
  }
});
`;

const FAULT_LIMITS = { timeoutMs: 1200, maxResponseBytes: 1000, memoryMb: 96 };

beforeAll(async () => {
  gw = await startTestGateway();
  token = await gw.token('acme', ['admin']);
  await deployComposite(gw, token, { name: 'healthy', anchor: HEALTHY_ANCHOR });
  await deployComposite(gw, token, {
    name: 'faulty',
    anchor: ANCHOR,
    pool: { maxInstances: 1 },
    stages: [
      {
        name: 'once',
        mode: 'oneshot',
        image: { kind: 'script', interpreter: 'sh', entry: 'stages/faulty.sh' },
        limits: FAULT_LIMITS,
      },
      {
        name: 'kept',
        mode: 'persistent',
        image: { kind: 'script', interpreter: 'node', entry: 'stages/faulty.mjs' },
        limits: FAULT_LIMITS,
      },
      {
        name: 'small',
        image: { kind: 'script', interpreter: 'sh', entry: 'stages/echo.sh' },
        limits: { maxRequestBytes: 64 },
      },
      {
        name: 'typed',
        image: { kind: 'script', interpreter: 'sh', entry: 'stages/echo.sh' },
        requestSchema: {
          type: 'object',
          properties: { n: { type: 'integer', minimum: 1 } },
          required: ['n'],
          additionalProperties: false,
        },
      },
    ],
    files: {
      'stages/faulty.sh': FAULTY_SH,
      'stages/faulty.mjs': FAULTY_MJS,
      'stages/echo.sh': 'exec cat\n',
    },
  });
});
afterAll(cleanupAll);

const callStage = (stage: string, body: string) =>
  callFn(gw, token, 'faulty', { path: `/?stage=${stage}`, body });

async function enclavesOf(cid: string): Promise<{ eid: number; stage: string; destroyed: boolean }[]> {
  const state = await api(gw.url, token, 'GET', `/v1/instances/${cid}`);
  expect(state.status).toBe(200);
  return JSON.parse(state.body.annotations['ebcc.enclaves']);
}

const failures = [
  // mode, StageError code, status, recorded exit reason, exit code, what the log shows
  ['crash', 'stage-failed', 502, 'exit', 3, 'crashing on purpose'],
  ['abort', 'stage-failed', 502, 'crashed', null, 'about to die by a signal'],
  ['hang', 'stage-failed', 504, 'timeout', null, ''],
  ['big', 'response-too-large', 502, 'output', null, ''],
] as const;

describe.each(['once', 'kept'] as const)('a %s stage that fails', (stage) => {
  it.each(failures)(
    '%s: the anchor gets StageError %s/%d and the execution is recorded as %s',
    async (mode, code, status, reason, exitCode, log) => {
      const before = await callStage(stage, 'warmup');
      expect(before.status, before.text).toBe(200);
      expect(before.body).toMatchObject({ ok: true, body: 'ok:warmup' });
      const cid = before.headers.get('x-ebcc-cid')!;

      const failed = await callStage(stage, mode);
      expect(failed.status, failed.text).toBe(200);
      expect(failed.body).toMatchObject({ code, status });
      expect(failed.body.eid).toEqual(expect.any(Number));
      expect(failed.body.message).toContain(`stage "${stage}"`);
      if (code === 'response-too-large') expect(failed.body.message).toContain('1000-byte');
      if (stage === 'kept') expect(failed.body.eid).toBe(before.body.eid);
      else expect(failed.body.eid).not.toBe(before.body.eid);
      // The anchor survives its stage's failure: the instance is the same one.
      expect(failed.headers.get('x-ebcc-cid')).toBe(cid);
      expect(failed.headers.get('x-ebcc-eids')).toBe(`${stage}=${failed.body.eid}`);

      const record = await invocationRecord(gw, token, failed.headers.get('x-ebcc-invocation')!);
      expect(record.status).toBe('ok');
      expect(record.executions).toHaveLength(1);
      const [execution] = record.executions;
      expect(execution).toMatchObject({ stage, eid: failed.body.eid, exit: { reason, code: exitCode } });
      expect(Buffer.from(execution.request.base64, 'base64').toString()).toBe(mode);
      expect(execution.metadata.mode).toBe(stage === 'once' ? 'oneshot' : 'persistent');
      if (log) expect(execution.log.text).toContain(log);
      if (reason === 'crashed') expect(execution.metadata.exit.signal).toMatch(/^SIG(SEGV|ABRT)$/);

      // The next request works; a persistent stage gets a new enclave, and the dead one is destroyed.
      const after = await callStage(stage, 'again');
      expect(after.status, after.text).toBe(200);
      expect(after.body).toMatchObject({ ok: true, body: 'ok:again' });
      expect(after.body.eid).not.toBe(failed.body.eid);
      expect(after.headers.get('x-ebcc-cid')).toBe(cid);
      if (stage === 'kept') {
        expect(after.body.seq).toBe(1);
        const enclaves = await enclavesOf(cid);
        expect(enclaves).toContainEqual(
          expect.objectContaining({ eid: failed.body.eid, stage: 'kept', destroyed: true }),
        );
        expect(enclaves).toContainEqual(
          expect.objectContaining({ eid: after.body.eid, stage: 'kept', destroyed: false }),
        );
      }
      await expectHealthy(gw, token, 'healthy');
    },
  );
});

describe('a persistent stage that ends cleanly', () => {
  it('exiting 0 instead of answering is a failure (crashed), never an empty success', async () => {
    const before = await callStage('kept', 'warmup');
    expect(before.status, before.text).toBe(200);
    const quit = await callStage('kept', 'quit');
    expect(quit.body).toMatchObject({ code: 'stage-failed', status: 502, eid: before.body.eid });
    expect(quit.body.message).toContain('instead of answering');
    const record = await invocationRecord(gw, token, quit.headers.get('x-ebcc-invocation')!);
    expect(record.executions[0].exit).toEqual({ reason: 'crashed', code: 0 });
    const after = await callStage('kept', 'again');
    expect(after.body).toMatchObject({ ok: true, body: 'ok:again', seq: 1 });
    expect(after.body.eid).not.toBe(before.body.eid);
  });

  it('an enclave that ended after its last answer is replaced for the next request', async () => {
    const bye = await callStage('kept', 'bye');
    expect(bye.body).toMatchObject({ ok: true, body: 'ok:bye' });
    await new Promise((r) => setTimeout(r, 300));
    // The request never reached the ended enclave, so it goes to a new one (and is recorded there only).
    const next = await callStage('kept', 'next');
    expect(next.status, next.text).toBe(200);
    expect(next.body).toMatchObject({ ok: true, body: 'ok:next', seq: 1 });
    expect(next.body.eid).not.toBe(bye.body.eid);
    const record = await invocationRecord(gw, token, next.headers.get('x-ebcc-invocation')!);
    expect(record.executions).toHaveLength(1);
    expect(record.executions[0]).toMatchObject({
      eid: next.body.eid,
      seq: 1,
      exit: { reason: 'exit', code: 0 },
    });
    const enclaves = await enclavesOf(next.headers.get('x-ebcc-cid')!);
    expect(enclaves).toContainEqual(expect.objectContaining({ eid: bye.body.eid, destroyed: true }));
  });
});

describe('requests a stage refuses', () => {
  it('env.stages has exactly the declared stages, frozen; an unknown one is undefined', async () => {
    const result = await callFn(gw, token, 'faulty', { path: '/?list' });
    expect(result.status, result.text).toBe(200);
    expect(result.body).toEqual({
      names: ['once', 'kept', 'small', 'typed'],
      frozen: true,
      nope: 'undefined',
      replaced: 'TypeError',
      stillNope: true,
    });
  });

  it('calling an undeclared stage is a TypeError in the anchor, not a stage call', async () => {
    const result = await callStage('nope', 'x');
    expect(result.status).toBe(500);
    expect(result.body.thrown).toBe('TypeError');
    expect(result.body.message).toMatch(/invoke/);
    expect(result.headers.get('x-ebcc-eids')).toBe('');
    const record = await invocationRecord(gw, token, result.headers.get('x-ebcc-invocation')!);
    expect(record.executions).toEqual([]);
  });

  it('a request over maxRequestBytes is refused with request-too-large (413) before any enclave', async () => {
    const fits = await callStage('small', 'x'.repeat(64));
    expect(fits.body).toMatchObject({ ok: true, body: 'x'.repeat(64) });
    const result = await callStage('small', 'x'.repeat(65));
    expect(result.body).toMatchObject({ code: 'request-too-large', status: 413, eid: null });
    expect(result.body.message).toContain('65 bytes; its limit is 64');
    const record = await invocationRecord(gw, token, result.headers.get('x-ebcc-invocation')!);
    expect(record.executions).toEqual([]);
  });

  it.each([
    ['a wrong type', JSON.stringify({ n: 'seven' }), /n:/],
    ['a missing field', JSON.stringify({}), /n:/],
    ['an extra field', JSON.stringify({ n: 1, extra: true }), /.+/],
    ['not JSON', 'n=1', /not valid UTF-8 JSON/],
  ])('a request with %s fails its requestSchema: request-invalid (422)', async (_what, body, detail) => {
    const result = await callStage('typed', body);
    expect(result.body).toMatchObject({ code: 'request-invalid', status: 422, eid: null });
    expect(result.body.message).toMatch(detail);
    const record = await invocationRecord(gw, token, result.headers.get('x-ebcc-invocation')!);
    expect(record.executions).toEqual([]);
  });

  it('a request that satisfies the schema goes through', async () => {
    const result = await callStage('typed', JSON.stringify({ n: 7 }));
    expect(result.body).toMatchObject({ ok: true, body: '{"n":7}' });
  });
});
