// Fuzzing the real gateway over loopback HTTP: arbitrary methods, paths, headers and bodies against every
// route, including invocations of deployed functions (the sample, whose stage validates its payload, and
// an anchor that answers with whatever status the request asks for). Whatever comes in, the gateway
// answers: never a 500, only the documented 5xx (an invocation's anchor or stage failing), and every
// error it makes itself is an RFC 9457 problem document.
import { request as httpRequest } from 'node:http';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deployComposite, expectHealthy, HEALTHY_ANCHOR } from '../helpers/composite-kit.ts';
import {
  cleanupAll,
  sampleBundle,
  sampleOrder,
  startTestGateway,
  upload,
  type TestGateway,
} from '../helpers/env.ts';
import { fuzzAsync, fuzzTimeout } from '../helpers/fuzz.ts';

/** Answers with the status, headers and body the request asks for; or writes raw frames to the host. */
const ECHO_ANCHOR = `
import { writeSync } from 'node:fs';
function frame(header, body = Buffer.alloc(0)) {
  const json = Buffer.from(JSON.stringify(header));
  const out = Buffer.alloc(8 + json.length + body.length);
  out.writeUInt32BE(4 + json.length + body.length, 0);
  out.writeUInt32BE(json.length, 4);
  json.copy(out, 8);
  body.copy(out, 8 + json.length);
  return out;
}
export default {
  async fetch(request, env) {
    const q = new URL(request.url).searchParams;
    const body = new Uint8Array(await request.arrayBuffer());
    if (q.has('raw')) {
      // Tenant code writing to the host channel itself, as hostile code can.
      writeSync(3, frame(JSON.parse(q.get('raw'))));
      return new Promise(() => {});
    }
    if (q.has('stage')) {
      const reply = await env.stages.echo.invoke(body);
      return new Response(await reply.bytes(), { headers: { 'x-eid': String(reply.eid) } });
    }
    const status = Number(q.get('status') ?? 200);
    const headers = new Headers();
    for (const pair of q.getAll('h')) {
      const at = pair.indexOf(':');
      try { headers.append(pair.slice(0, at), pair.slice(at + 1)); } catch {}
    }
    return new Response(q.has('empty') ? null : body, { status, headers });
  },
};
`;

let gw: TestGateway;
let admin: string;
let invoker: string;
let stranger: string;

beforeAll(async () => {
  gw = await startTestGateway();
  admin = await gw.token('acme', ['admin']);
  invoker = await gw.token('acme', ['invoke']);
  stranger = await gw.token('umbrella', ['admin']);
  const sample = await upload(gw.url, admin, await sampleBundle());
  expect(sample.status, JSON.stringify(sample.body)).toBe(201);
  await deployComposite(gw, admin, {
    name: 'fuzz-echo',
    anchor: ECHO_ANCHOR,
    anchorLimits: { timeoutMs: 2000 },
  });
  await deployComposite(gw, admin, { name: 'healthy', anchor: HEALTHY_ANCHOR });
  await deployComposite(gw, admin, { name: 'victim', anchor: HEALTHY_ANCHOR });
}, 120_000);
afterAll(cleanupAll);

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

function send(method: string, path: string, headers: Record<string, string>, body?: Buffer): Promise<Answer> {
  const url = new URL(gw.url);
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: url.hostname,
        port: url.port,
        method,
        path,
        // A well-framed message: a GET body without a length would be read as the next request.
        headers: body ? { ...headers, 'content-length': String(body.length) } : headers,
        timeout: 20_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }),
        );
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer to ${method} ${path} within 20 s`)));
    req.on('error', reject);
    req.end(body);
  });
}

/** Slugs of the 5xx problems the gateway documents: an invocation's anchor or stage failed, or it is busy. */
const DOCUMENTED_5XX =
  /^urn:ebcc:problem:(anchor-[a-z-]+|stage-[a-z-]+|backend-unavailable|stopped|shutting-down|[a-z-]*unavailable[a-z-]*|[a-z-]*timeout[a-z-]*|[a-z-]*crashed[a-z-]*)$/;

function checkAnswer(method: string, path: string, answer: Answer): void {
  const where = `${method} ${path} -> ${answer.status} ${answer.body.toString('utf8', 0, 300)}`;
  expect(answer.status, where).toBeGreaterThanOrEqual(100);
  expect(answer.status, where).toBeLessThan(600);
  const fromAnchor = answer.headers['x-ebcc-invocation'] !== undefined;
  const type = String(answer.headers['content-type'] ?? '');
  const isProblem = type.startsWith('application/problem+json');
  // An anchor may answer 500 itself (its own business); the gateway never does.
  if (!fromAnchor || isProblem) expect(answer.status, where).not.toBe(500);
  // An anchor's own answer is the tenant's business; everything else that fails is a problem document.
  if (answer.status >= 400 && (!fromAnchor || isProblem) && method !== 'HEAD') {
    expect(isProblem, where).toBe(true);
    const problem = JSON.parse(answer.body.toString('utf8')) as Record<string, unknown>;
    expect(problem.type, where).toMatch(/^urn:ebcc:problem:[a-z0-9-]+$/);
    expect(problem.status, where).toBe(answer.status);
    expect(typeof problem.title, where).toBe('string');
    if (answer.status >= 500) expect(problem.type, where).toMatch(DOCUMENTED_5XX);
  }
  if (answer.status >= 500 && !fromAnchor) expect([502, 503, 504], where).toContain(answer.status);
}

const hostileSegment = fc.oneof(
  fc.constantFrom(
    '',
    '.',
    '..',
    '%2e%2e',
    '%2F',
    '%00',
    '%ff',
    '%',
    '%zz',
    'a%20b',
    '~',
    '*',
    ':name',
    'inv_0',
    'cid-1',
  ),
  fc.string({ maxLength: 12 }).map(encodeURIComponent),
  fc.string({ unit: 'binary', maxLength: 8 }).map(encodeURIComponent),
);
const name = fc.oneof(
  fc.constantFrom('order-signer', 'fuzz-echo', 'healthy', 'victim', 'nope', 'A'),
  hostileSegment,
);
const query = fc
  .array(
    fc.oneof(
      fc.tuple(
        fc.constantFrom('status'),
        fc.constantFrom('200', '201', '204', '205', '206', '304', '400', '418', '599', 'x'),
      ),
      fc.tuple(
        fc.constantFrom('h'),
        fc.constantFrom(
          'x-a:1',
          'set-cookie:a=b',
          'content-length:5',
          'x-ebcc-invocation:forged',
          'bad name:x',
        ),
      ),
      fc.tuple(
        fc.constantFrom('empty', 'stage', 'force', 'timeout', 'x'),
        fc.constantFrom('', '1', 'true', '-1', '99999999', '%ff'),
      ),
      fc.tuple(
        fc.string({ maxLength: 6 }).map(encodeURIComponent),
        fc.string({ maxLength: 6 }).map(encodeURIComponent),
      ),
    ),
    { maxLength: 4 },
  )
  .map((pairs) => (pairs.length ? `?${pairs.map(([k, v]) => `${k}=${v}`).join('&')}` : ''));
const path = fc
  .oneof(
    fc.constantFrom('/healthz', '/readyz', '/', '//', '/v1', '/v1/', '/fn', '/fn/', '/orders', '/metrics'),
    fc
      .tuple(name, fc.array(hostileSegment, { maxLength: 3 }))
      .map(([n, rest]) => `/fn/${n}${rest.map((s) => `/${s}`).join('')}`),
    fc
      .tuple(fc.constantFrom('', '/rollback'), name)
      .map(
        ([tail, n]) =>
          `/v1/functions/${n === 'order-signer' || n === 'fuzz-echo' || n === 'healthy' ? 'nope' : n}${tail}`,
      ),
    fc.constant('/v1/functions'),
    fc
      .tuple(
        fc.constantFrom('/v1/tokens', '/v1/instances', '/v1/invocations'),
        fc.array(hostileSegment, { maxLength: 2 }),
      )
      .map(([base, rest]) => `${base}${rest.map((s) => `/${s}`).join('')}`),
    fc
      .tuple(hostileSegment, fc.constantFrom('start', 'kill', 'wait', 'evidence', ''))
      .map(([id, op]) => `/v1/instances/${id}/${op}`),
    fc
      .tuple(hostileSegment, fc.constantFrom('evidence', ''))
      .map(([id, op]) => `/v1/invocations/${id}/${op}`),
  )
  .chain((p) => query.map((q) => `${p}${q}`.replace(/ /g, '%20')));

const jsonBodies = fc.oneof(
  fc.jsonValue({ maxDepth: 3 }),
  fc.record(
    {
      name: fc.string(),
      scopes: fc.array(fc.constantFrom('admin', 'deploy', 'invoke', 'read', 'x')),
      expires: fc.constantFrom('1h', '30d', 'never', '-1s', '99999999999d', 'x'),
    },
    { requiredKeys: [] },
  ),
  fc.record(
    {
      function: fc.constantFrom('nope', 'A', 'x'.repeat(70)),
      version: fc.string(),
      annotations: fc.dictionary(fc.string(), fc.string()),
    },
    { requiredKeys: [] },
  ),
  fc.record({ signal: fc.constantFrom('SIGKILL', 'KILL', 'SIGFOO', '9', '') }),
  fc
    .tuple(
      fc.string({ maxLength: 8 }),
      fc.constantFrom('orderId', 'amountCents', 'currency', 'items'),
      fc.jsonValue({ maxDepth: 2 }),
    )
    .map(([id, key, value]) => ({ ...sampleOrder(id), [key]: value })),
  fc.string({ maxLength: 8 }).map(sampleOrder),
);
const body = fc.option(
  fc.oneof(
    jsonBodies.map((v) => Buffer.from(JSON.stringify(v) ?? 'null')),
    fc.uint8Array({ maxLength: 512 }).map((b) => Buffer.from(b)),
    fc.constantFrom(
      Buffer.from('{'),
      Buffer.from('\xff\xfe'),
      Buffer.from([0x1f, 0x8b, 8, 0]),
      Buffer.from('--x\r\n\r\n--x--'),
    ),
  ),
  { nil: undefined },
);
const headers = fc.record(
  {
    authorization: fc.oneof(
      fc.constantFrom('admin', 'invoker', 'stranger', 'none').map((who) => who),
      fc.constantFrom('Bearer', 'Bearer ', 'Basic abc', 'Bearer ebcc_x', 'bearer  x y'),
    ),
    'content-type': fc.constantFrom(
      'application/json',
      'application/problem+json',
      'application/gzip',
      'application/octet-stream',
      'multipart/form-data; boundary=x',
      'multipart/form-data',
      'text/plain; charset=utf-8',
      'application/json; charset=latin1',
      '',
    ),
    'x-ebcc-evidence': fc.constantFrom('embed', 'no'),
    'x-ebcc-nonce': fc.oneof(
      fc.uint8Array({ maxLength: 32 }).map((b) => Buffer.from(b).toString('hex')),
      fc.string({ maxLength: 10 }).map(encodeURIComponent),
    ),
    'accept-encoding': fc.constantFrom('gzip', 'br', 'identity'),
  },
  { requiredKeys: ['authorization'] },
);
const method = fc.constantFrom(
  'GET',
  'POST',
  'PUT',
  'DELETE',
  'PATCH',
  'HEAD',
  'OPTIONS',
  'PROPFIND',
  'M-SEARCH',
);

function resolveAuth(h: Record<string, string>): Record<string, string> {
  const out = { ...h };
  const who = out.authorization;
  const tokens: Record<string, string> = { admin, invoker, stranger };
  if (who === 'none') delete out.authorization;
  else if (who && tokens[who]) out.authorization = `Bearer ${tokens[who]}`;
  if (out['content-type'] === '') delete out['content-type'];
  return out;
}

describe('gateway under arbitrary requests', () => {
  it(
    'never a 500 or a crash; errors are RFC 9457 problems; 5xx only where documented',
    async () => {
      await fuzzAsync(
        'gateway: arbitrary requests',
        fc.asyncProperty(method, path, headers, body, async (m, p, h, b) => {
          const answer = await send(m, p, resolveAuth(h as Record<string, string>), b);
          checkAnswer(m, p, answer);
        }),
        150,
      );
      // Still serving, and the deployed functions still work.
      expect((await send('GET', '/healthz', {})).status).toBe(200);
      await expectHealthy(gw, admin, 'healthy');
    },
    fuzzTimeout(120_000),
  );

  it(
    'invocation payloads: every status, header and body an anchor may answer with is passed on, or refused as a problem',
    () =>
      fuzzAsync(
        'gateway: anchor answers',
        fc.asyncProperty(
          fc.integer({ min: 200, max: 599 }),
          fc.boolean(),
          fc.constantFrom('x-a:1', 'set-cookie:a=b', 'x-ebcc-cid:forged'),
          fc.uint8Array({ maxLength: 256 }),
          async (status, empty, header, bytes) => {
            const p = `/fn/fuzz-echo/?status=${status}&h=${encodeURIComponent(header)}${empty ? '&empty=1' : ''}`;
            const answer = await send('POST', p, { authorization: `Bearer ${invoker}` }, Buffer.from(bytes));
            checkAnswer('POST', p, answer);
            if (answer.headers['content-type'] !== 'application/problem+json') {
              expect(answer.status).toBe(status);
              expect(answer.headers['x-ebcc-invocation']).toMatch(/^inv_/);
            }
          },
        ),
        40,
      ),
    fuzzTimeout(120_000),
  );

  it(
    'stage payloads: arbitrary bytes through a real sim stage come back whole, with an EID',
    () =>
      fuzzAsync(
        'gateway: stage payloads',
        fc.asyncProperty(fc.uint8Array({ maxLength: 2048 }), async (bytes) => {
          const answer = await send(
            'POST',
            '/fn/fuzz-echo/?stage=1',
            { authorization: `Bearer ${invoker}` },
            Buffer.from(bytes),
          );
          checkAnswer('POST', '/fn/fuzz-echo/?stage=1', answer);
          expect(answer.status, answer.body.toString()).toBe(200);
          expect(answer.body.equals(Buffer.from(bytes))).toBe(true);
          expect(Number(answer.headers['x-eid'])).toBeGreaterThan(0);
        }),
        15,
      ),
    fuzzTimeout(120_000),
  );

  // Found by the arbitrary-requests property (seed 1276857633): an anchor's `content-length: 5` on an
  // empty body was passed on, and the client's connection was cut ("aborted").
  it.each(['content-length:5', 'transfer-encoding:chunked', 'connection:close'])(
    'regression: an anchor cannot set the framing header %s',
    async (header) => {
      const p = `/fn/fuzz-echo/?h=${encodeURIComponent(header)}`;
      const answer = await send('POST', p, { authorization: `Bearer ${invoker}` }, Buffer.from('hi'));
      checkAnswer('POST', p, answer);
      expect(answer.status).toBe(200);
      expect(answer.body.toString()).toBe('hi');
    },
  );

  // Tenant code can write to the host channel (fd 3) itself. A frame whose header was null crashed the
  // gateway (a TypeError in an event handler); malformed ones gave a 500 or an unhandled rejection.
  it.each([
    ['a null header', 'null'],
    ['an array header', '[1,2]'],
    ['a response with status 1000', '{"t":"response","id":1,"status":1000,"headers":[]}'],
    ['a response with bad headers', '{"t":"response","id":1,"status":200,"headers":7}'],
    ['done without waitUntilErrors', '{"t":"done","id":1}'],
    ['an unknown frame type', '{"t":"surprise"}'],
  ])(
    'regression: an anchor writing %s to the host channel gets 502 anchor-crashed; the gateway lives',
    async (_, raw) => {
      const p = `/fn/fuzz-echo/?raw=${encodeURIComponent(raw)}`;
      const answer = await send('GET', p, { authorization: `Bearer ${invoker}` });
      checkAnswer('GET', p, answer);
      expect(answer.status, answer.body.toString()).toBe(502);
      expect(JSON.parse(answer.body.toString()).type).toBe('urn:ebcc:problem:anchor-crashed');
      await expectHealthy(gw, admin, 'healthy');
    },
  );
});
