// Every kind of stage image the sim backend runs: sh and python3 scripts, a native executable (a
// `#!/bin/sh` file with its exec bit), and a WASI module, each through a real anchor over HTTP.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { callFn, deployComposite, invocationRecord, uploadComposite } from './helpers/composite-kit.ts';
import { cleanupAll, startTestGateway, type TestGateway } from './helpers/env.ts';

let gw: TestGateway;
let token: string;

const ANCHOR = `
export default {
  async fetch(request, env) {
    const stage = new URL(request.url).searchParams.get('stage');
    try {
      const reply = await env.stages[stage].invoke(await request.text());
      return Response.json({ eid: reply.eid, seq: reply.seq, body: await reply.text() });
    } catch (e) {
      return Response.json({ code: e.code, status: e.status, eid: e.eid, message: e.message }, { status: 502 });
    }
  },
};
`;

const PYTHON_ONESHOT = `import json, os, sys
data = sys.stdin.buffer.read()
sys.stderr.write("python saw %d bytes\\n" % len(data))
sys.stdout.write(json.dumps({
    "upper": data.decode().upper(),
    "mode": os.environ["EBCC_STAGE_MODE"],
    "stage": os.environ["EBCC_STAGE_NAME"],
    "eid": int(os.environ["EBCC_EID"]),
    "isolated": sys.flags.isolated,
}))
`;

const PYTHON_PERSISTENT = `import struct, sys
stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
count = 0
while True:
    head = stdin.read(4)
    if len(head) < 4:
        break
    (length,) = struct.unpack(">I", head)
    body = stdin.read(length)
    count += 1
    answer = b"py%d:" % count + body
    stdout.write(struct.pack(">I", len(answer)) + answer)
    stdout.flush()
`;

const SH_ONESHOT = `printf 'sh[%s]:' "$1"
tr a-z A-Z
echo "sh ran as $(id -u)" >&2
`;

const EXECUTABLE = `#!/bin/sh
IFS= read -r line || true
printf 'exe(%s):%s' "$#" "$line"
`;

// --- A WASI command module, assembled by hand: it reads stdin once and writes "wasm:" + what it read.
const uleb = (n: number): number[] => {
  const out: number[] = [];
  do {
    let byte = n & 0x7f;
    n >>>= 7;
    if (n) byte |= 0x80;
    out.push(byte);
  } while (n);
  return out;
};
const sleb = (n: number): number[] => {
  const out: number[] = [];
  for (;;) {
    const byte = n & 0x7f;
    n >>= 7;
    if ((n === 0 && !(byte & 0x40)) || (n === -1 && byte & 0x40)) return [...out, byte];
    out.push(byte | 0x80);
  }
};
const str = (s: string): number[] => [...uleb(s.length), ...Buffer.from(s)];
const vec = (items: number[][]): number[] => [...uleb(items.length), ...items.flat()];
const section = (id: number, body: number[]): number[] => [id, ...uleb(body.length), ...body];
const i32 = (n: number): number[] => [0x41, ...sleb(n)];
const store = [0x36, 0x02, 0x00];
const load = [0x28, 0x02, 0x00];
const call = (f: number): number[] => [0x10, ...uleb(f)];
const DROP = 0x1a;
const END = 0x0b;

/** Memory: [0..8) write iovec, [16..24) read iovec, [32] byte count, [64..69) "wasm:", [69..) input. */
function echoWasm(): Buffer {
  const fdRw = [0x60, 4, 0x7f, 0x7f, 0x7f, 0x7f, 1, 0x7f];
  const start = [0x60, 0, 0];
  // prettier-ignore
  const body = [
    0, // no locals
    ...i32(16), ...i32(69), ...store, // read iovec: buf = 69
    ...i32(20), ...i32(1024), ...store, // len = 1024
    ...i32(0), ...i32(16), ...i32(1), ...i32(32), ...call(0), DROP, // fd_read(stdin, iov, 1, &n)
    ...i32(0), ...i32(64), ...store, // write iovec: buf = 64 ("wasm:" then the input)
    ...i32(4), ...i32(32), ...load, ...i32(5), 0x6a, ...store, // len = n + 5
    ...i32(1), ...i32(0), ...i32(1), ...i32(32), ...call(1), DROP, // fd_write(stdout, iov, 1, &n)
    END,
  ];
  return Buffer.from([
    ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
    ...section(1, vec([fdRw, start])),
    ...section(
      2,
      vec([
        [...str('wasi_snapshot_preview1'), ...str('fd_read'), 0x00, 0],
        [...str('wasi_snapshot_preview1'), ...str('fd_write'), 0x00, 0],
      ]),
    ),
    ...section(3, vec([[1]])),
    ...section(5, vec([[0x00, 1]])),
    ...section(
      7,
      vec([
        [...str('memory'), 0x02, 0],
        [...str('_start'), 0x00, 2],
      ]),
    ),
    ...section(10, vec([[...uleb(body.length), ...body]])),
    ...section(11, vec([[0x00, ...i32(64), END, ...str('wasm:')]])),
  ]);
}

beforeAll(async () => {
  gw = await startTestGateway();
  token = await gw.token('acme', ['admin']);
  await deployComposite(gw, token, {
    name: 'kinds',
    anchor: ANCHOR,
    stages: [
      { name: 'py', image: { kind: 'script', interpreter: 'python3', entry: 'stages/py.py' } },
      {
        name: 'pykept',
        mode: 'persistent',
        image: { kind: 'script', interpreter: 'python3', entry: 'stages/pykept.py' },
      },
      { name: 'sh', image: { kind: 'script', interpreter: 'sh', entry: 'stages/up.sh', args: ['arg one'] } },
      { name: 'exe', image: { kind: 'executable', entry: 'stages/exe', args: ['a', 'b'] } },
      { name: 'wasm', image: { kind: 'wasm', entry: 'stages/echo.wasm' } },
    ],
    files: {
      'stages/py.py': PYTHON_ONESHOT,
      'stages/pykept.py': PYTHON_PERSISTENT,
      'stages/up.sh': SH_ONESHOT,
      'stages/exe': { data: EXECUTABLE, mode: 0o755 },
      'stages/echo.wasm': echoWasm(),
    },
  });
});
afterAll(cleanupAll);

const run = (stage: string, body: string) => callFn(gw, token, 'kinds', { path: `/?stage=${stage}`, body });

describe('stage image kinds on sim', () => {
  it('a python3 script (isolated mode) gets the request, its identity, and logs to stderr', async () => {
    const result = await run('py', 'hello python');
    expect(result.status, result.text).toBe(200);
    const answer = JSON.parse(result.body.body);
    expect(answer).toEqual({
      upper: 'HELLO PYTHON',
      mode: 'oneshot',
      stage: 'py',
      eid: result.body.eid,
      isolated: 1,
    });
    const record = await invocationRecord(gw, token, result.headers.get('x-ebcc-invocation')!);
    expect(record.executions[0].log.text).toBe('python saw 12 bytes\n');
    expect(record.executions[0].exit).toEqual({ reason: 'exit', code: 0 });
  });

  it('a persistent python3 script keeps its state and its enclave between requests', async () => {
    const first = await run('pykept', 'one');
    const second = await run('pykept', 'two');
    expect(first.body).toMatchObject({ body: 'py1:one', seq: 1 });
    expect(second.body).toMatchObject({ body: 'py2:two', seq: 2, eid: first.body.eid });
  });

  it('a sh script gets its args and stdin', async () => {
    const result = await run('sh', 'hello sh');
    expect(result.status, result.text).toBe(200);
    expect(result.body.body).toBe('sh[arg one]:HELLO SH');
    const record = await invocationRecord(gw, token, result.headers.get('x-ebcc-invocation')!);
    expect(record.executions[0].log.text).toMatch(/^sh ran as [1-9]\d*\n$/);
  });

  it('an executable with its exec bit runs (shebang), with its args', async () => {
    const result = await run('exe', 'native line');
    expect(result.status, result.text).toBe(200);
    expect(result.body.body).toBe('exe(2):native line');
  });

  it('an executable without its exec bit is refused at deploy', async () => {
    const result = await uploadComposite(gw, token, {
      name: 'noexec',
      anchor: ANCHOR,
      stages: [{ name: 'exe', image: { kind: 'executable', entry: 'stages/exe' } }],
      files: { 'stages/exe': { data: EXECUTABLE, mode: 0o644 } },
    });
    expect(result.status).toBe(422);
    expect(result.body).toMatchObject({
      type: 'urn:ebcc:problem:bundle-not-executable',
      field: 'stages[0].image.entry',
      entry: 'stages/exe',
    });
  });

  it('a WASI module reads stdin and writes stdout', async () => {
    const result = await run('wasm', 'hello wasm');
    expect(result.status, result.text).toBe(200);
    expect(result.body.body).toBe('wasm:hello wasm');
    const record = await invocationRecord(gw, token, result.headers.get('x-ebcc-invocation')!);
    expect(record.executions[0]).toMatchObject({ stage: 'wasm', backend: 'sim', exit: { reason: 'exit' } });
    expect(record.executions[0].measurement).toMatch(/^sha3-512:[0-9a-f]{128}$/);
  });
});
