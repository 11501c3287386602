// Runs inside the anchor sandbox: loads the tenant's Worker-style module and serves invocations that
// the host sends over fd 3. Everything the anchor can reach outside itself (stages, allowed network)
// goes back over the same channel, so the host decides every time.
import { AsyncLocalStorage } from 'node:async_hooks';
import { Socket } from 'node:net';
import { pathToFileURL } from 'node:url';
import { format } from 'node:util';
import { encodeFrame, FrameReader } from './wire.mjs';

const MAX_FRAME = Number(process.env.EBCC_MAX_FRAME_BYTES);
const channel = new Socket({ fd: 3, readable: true, writable: true });
const send = (header, body) => channel.write(encodeFrame(header, body));
const current = new AsyncLocalStorage();
const pending = new Map();
let nextCallId = 1;

function call(header, body) {
  const callId = nextCallId++;
  return new Promise((resolve, reject) => {
    pending.set(callId, { resolve, reject });
    send({ ...header, callId, invocation: current.getStore() ?? null }, body);
  });
}

for (const level of ['debug', 'info', 'log', 'warn', 'error']) {
  console[level] = (...args) =>
    send({ t: 'console', invocation: current.getStore() ?? null, level, text: format(...args) });
}

function toBytes(input) {
  if (input instanceof Uint8Array) return input;
  if (input instanceof ArrayBuffer) return new Uint8Array(input);
  if (ArrayBuffer.isView(input)) return new Uint8Array(input.buffer, input.byteOffset, input.byteLength);
  if (typeof input === 'string') return Buffer.from(input);
  if (input === undefined) throw new TypeError('invoke() needs an input: bytes, a string, or a JSON value');
  return Buffer.from(JSON.stringify(input));
}

class StageResponse {
  #body;
  constructor(meta, body) {
    this.#body = body;
    this.stage = meta.stage;
    this.eid = meta.eid;
    this.seq = meta.seq;
    this.executionId = meta.executionId;
  }
  bytes() {
    return Promise.resolve(new Uint8Array(this.#body));
  }
  arrayBuffer() {
    return Promise.resolve(
      this.#body.buffer.slice(this.#body.byteOffset, this.#body.byteOffset + this.#body.byteLength),
    );
  }
  text() {
    return Promise.resolve(this.#body.toString('utf8'));
  }
  json() {
    return Promise.resolve(JSON.parse(this.#body.toString('utf8')));
  }
}

class StageError extends Error {
  constructor(meta) {
    super(meta.message);
    this.name = 'StageError';
    this.code = meta.code;
    this.status = meta.status;
    this.eid = meta.eid ?? null;
  }
}

const stageNames = JSON.parse(process.env.EBCC_STAGES);
const stages = Object.freeze(
  Object.fromEntries(
    stageNames.map((stage) => [
      stage,
      Object.freeze({
        async invoke(input, options = {}) {
          const nonce = options.nonce === undefined ? undefined : String(options.nonce);
          const { header, body } = await call({ t: 'stage', stage, nonce }, toBytes(input));
          if (!header.ok) throw new StageError(header);
          return new StageResponse(header, body);
        },
      }),
    ]),
  ),
);
const env = Object.freeze({ ...JSON.parse(process.env.EBCC_VARS), stages });

// The anchor has no network of its own (its sandbox has only loopback); fetch() asks the host, which
// allows only the hosts the manifest lists.
globalThis.fetch = async (input, init) => {
  const request = new Request(input, init);
  const body = request.body ? new Uint8Array(await request.arrayBuffer()) : undefined;
  const { header, body: responseBody } = await call(
    { t: 'net', method: request.method, url: request.url, headers: [...request.headers] },
    body,
  );
  if (!header.ok) throw new TypeError(`fetch to ${request.url} refused: ${header.message}`);
  return new Response(header.status === 204 || header.status === 304 ? null : responseBody, {
    status: header.status,
    headers: header.headers,
  });
};

let handler;
try {
  const mod = await import(pathToFileURL(process.env.EBCC_ENTRY).href);
  handler = mod.default;
  if (!handler || typeof handler.fetch !== 'function') {
    throw new TypeError('the anchor module must `export default { fetch(request, env, ctx) }`');
  }
} catch (error) {
  const message = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  channel.write(encodeFrame({ t: 'load-error', message }), () => process.exit(1));
  await new Promise(() => {});
}

async function serve(id, header, body) {
  const waits = [];
  const ctx = Object.freeze({
    waitUntil: (promise) => void waits.push(Promise.resolve(promise)),
    passThroughOnException: () => {},
  });
  let answer;
  try {
    const request = new Request(header.url, {
      method: header.method,
      headers: header.headers,
      body: header.method === 'GET' || header.method === 'HEAD' ? undefined : body,
    });
    const response = await handler.fetch(request, env, ctx);
    if (!(response instanceof Response)) {
      const got =
        response === null
          ? 'null'
          : typeof response === 'object'
            ? (response.constructor?.name ?? 'an object')
            : typeof response;
      throw new TypeError(`the anchor's fetch() returned ${got}, not a Response`);
    }
    const bytes = new Uint8Array(await response.arrayBuffer());
    answer = encodeFrame(
      {
        t: 'response',
        id,
        status: response.status,
        statusText: response.statusText,
        headers: [...response.headers],
      },
      bytes,
    );
  } catch (error) {
    answer = encodeFrame({
      t: 'error',
      id,
      message: error instanceof Error ? `${error.name}: ${error.message}` : `thrown: ${format(error)}`,
    });
  }
  if (waits.length === 0) {
    // Nothing was left running: the invocation ends with its answer. Both frames go out in one write,
    // so that the host has the whole invocation (console included) when it records it, in one commit,
    // instead of recording the console later in a second one.
    channel.write(Buffer.concat([answer, encodeFrame({ t: 'done', id, waitUntilErrors: [] })]));
    return;
  }
  channel.write(answer);
  const settled = await Promise.allSettled(waits);
  const failed = settled
    .filter((s) => s.status === 'rejected')
    .map((s) => String(s.reason?.message ?? s.reason));
  send({ t: 'done', id, waitUntilErrors: failed });
}

const reader = new FrameReader(MAX_FRAME);
let started = false;
channel.on('data', (chunk) => {
  for (const { header, body } of reader.push(chunk)) {
    if (header.t === 'start') started = true;
    else if (header.t === 'fetch' && started)
      current.run(header.id, () => void serve(header.id, header, body));
    else if (header.t === 'reply') {
      const waiter = pending.get(header.callId);
      pending.delete(header.callId);
      waiter?.resolve({ header, body });
    }
  }
});
channel.on('end', () => process.exit(0));

// Node loads the WHATWG fetch classes (undici) lazily, on first use: without this the first invocation
// of every instance pays for it (tens of milliseconds). Warm them, and the paths every invocation takes
// (a Request with a body read as JSON, a Response read back as bytes), before reporting ready.
async function warmFetchClasses() {
  const request = new Request('http://ebcc.invalid/', {
    method: 'POST',
    headers: [['content-type', 'application/json']],
    body: Buffer.from('{}'),
  });
  await request.json();
  const response = Response.json({});
  await response.arrayBuffer();
  return [...response.headers];
}
await warmFetchClasses();
send({ t: 'ready' });
