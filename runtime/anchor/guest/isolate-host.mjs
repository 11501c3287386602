// The isolate host: runs inside one sandbox (as the process harness does) and serves many anchors of
// one function version, each in its own V8 isolate (isolated-vm) with its own heap limit. Tenant code
// runs only inside isolates, which have no Node APIs: what it can do is what isolate-runtime.js gives
// it. Frames on fd 3 are the anchor wire with an `anchor` number added, so that one channel carries
// every anchor of this host.
import { readFileSync } from 'node:fs';
import { createHash, createHmac, randomFillSync } from 'node:crypto';
import { createRequire } from 'node:module';
import { Socket } from 'node:net';
import { dirname, join, normalize } from 'node:path';
import { encodeFrame, FrameReader } from './wire.mjs';

const ivm = createRequire(import.meta.url)(process.env.EBCC_IVM);
const MAX_FRAME = Number(process.env.EBCC_MAX_FRAME_BYTES);
const FN_ROOT = '/fn/';
/** How often the CPU time of isolates with work in flight is checked against their budget. */
const CPU_POLL_MS = 20;
/** Module evaluation at load gets this much wall time (the tenant's top level must not hang the host). */
const LOAD_TIMEOUT_MS = 10_000;
const BACKSTOP_MS = 1_000;
const MAX_TIMERS = 10_000;
/** How isolate-runtime.js marks an exception thrown from a timer callback. */
const UNCAUGHT = 'ebcc-uncaught: ';
const RUNTIME_SOURCE = readFileSync(new URL('./isolate-runtime.js', import.meta.url), 'utf8');

const channel = new Socket({ fd: 3, readable: true, writable: true });
const send = (header, body) => channel.write(encodeFrame(header, body));
const anchors = new Map();

function fnPath(specifier, referrer) {
  if (!specifier.startsWith('./') && !specifier.startsWith('../') && !specifier.startsWith('/'))
    throw new Error(`cannot import "${specifier}": only files of the function bundle can be imported`);
  const path = normalize(specifier.startsWith('/') ? specifier : join(dirname(referrer), specifier));
  if (!path.startsWith(FN_ROOT)) throw new Error(`cannot import "${specifier}": outside the function bundle`);
  return path;
}

// Node's WHATWG URL parser, for the isolate's URL class: one parser for both sides of the wire.
const URL_FIELDS = ['href', 'origin', 'protocol', 'username', 'password', 'host', 'hostname', 'port'];
function urlParts(url) {
  const parts = {};
  for (const f of [...URL_FIELDS, 'pathname', 'search', 'hash']) parts[f] = url[f];
  return JSON.stringify(parts);
}
function hostUrl(op, a, b, c) {
  try {
    if (op === 'parse') return urlParts(b === undefined ? new URL(String(a)) : new URL(String(a), String(b)));
    if (op === 'set' && [...URL_FIELDS, 'pathname', 'search', 'hash'].includes(b) && b !== 'origin') {
      const url = new URL(String(a));
      url[b] = String(c);
      return urlParts(url);
    }
  } catch {
    return null;
  }
  return null;
}
const HASHES = new Set(['sha1', 'sha256', 'sha384', 'sha512']);
function hostCrypto(op, hash, data, key) {
  if (op === 'random') {
    const n = Number(data);
    if (!Number.isInteger(n) || n < 0 || n > 65536) throw new RangeError('bad length');
    return new ivm.ExternalCopy(randomFillSync(new Uint8Array(n))).copyInto({ release: true });
  }
  if (!HASHES.has(hash) || !(data instanceof Uint8Array)) throw new TypeError('bad crypto call');
  const out =
    op === 'digest'
      ? createHash(hash).update(data).digest()
      : op === 'hmac' && key instanceof Uint8Array
        ? createHmac(hash, key).update(data).digest()
        : undefined;
  if (!out) throw new TypeError('bad crypto call');
  return new ivm.ExternalCopy(new Uint8Array(out)).copyInto({ release: true });
}

class Anchor {
  constructor(id, spec) {
    this.id = id;
    this.spec = spec;
    this.isolate = new ivm.Isolate({ memoryLimit: spec.memoryMb });
    this.started = false;
    this.ended = false;
    this.disposing = null;
    /** Invocation id -> the isolate's CPU time (ns) when it began. */
    this.inflight = new Map();
    this.timers = new Map();
    this.modules = new Map();
  }

  async load() {
    const context = await this.isolate.createContext();
    this.context = context;
    const global = context.global;
    await global.set('__ebccSend', new ivm.Callback((header, body) => this.fromIsolate(header, body)));
    await global.set('__ebccUrl', new ivm.Callback(hostUrl));
    await global.set('__ebccCrypto', new ivm.Callback(hostCrypto));
    await global.set('__ebccTimer', new ivm.Callback((op, id, ms) => this.timer(op, id, ms)));
    const runtime = await this.isolate.compileScript(RUNTIME_SOURCE, {
      filename: '/ebcc/isolate-runtime.js',
    });
    await runtime.run(context, { timeout: LOAD_TIMEOUT_MS });
    runtime.release();
    const entry = await this.module(fnPath(FN_ROOT + this.spec.entry, FN_ROOT));
    await entry.instantiate(context, (specifier, referrer) => this.resolve(specifier, referrer));
    await entry.evaluate({ timeout: LOAD_TIMEOUT_MS });
    const init = await global.get('__ebccInit', { reference: true });
    const mod = await entry.namespace.get('default', { reference: true });
    await init.apply(
      undefined,
      [mod.derefInto(), JSON.stringify(this.spec.vars), JSON.stringify(this.spec.stages)],
      {
        timeout: LOAD_TIMEOUT_MS,
      },
    );
    this.deliverRef = await global.get('__ebccDeliver', { reference: true });
  }

  async module(path) {
    let mod = this.modules.get(path);
    if (!mod) {
      const source = readFileSync(path, 'utf8');
      mod = await this.isolate.compileModule(source, { filename: `file://${path}` });
      this.modules.set(path, mod);
      this.paths ??= new WeakMap();
      this.paths.set(mod, path);
    }
    return mod;
  }

  resolve(specifier, referrer) {
    return this.module(fnPath(specifier, this.paths.get(referrer) ?? FN_ROOT));
  }

  /** One entry into the isolate. Its failure is the isolate's end (disposed, or out of memory). */
  deliver(kind, header, body) {
    if (this.ended) return;
    const args = [kind, JSON.stringify(header)];
    if (body) args.push(new ivm.ExternalCopy(new Uint8Array(body)).copyInto({ release: true }));
    // The host's own timeout is a backstop: the executor ends a hung invocation first (timeoutMs).
    this.deliverRef
      .apply(undefined, args, { timeout: this.spec.timeoutMs + BACKSTOP_MS })
      .catch((error) => this.failed(error));
  }

  fromIsolate(headerJson, body) {
    if (this.ended || typeof headerJson !== 'string') return;
    let header;
    try {
      header = JSON.parse(headerJson);
    } catch {
      return;
    }
    if (header === null || typeof header !== 'object') return;
    if (header.t === 'done') this.inflight.delete(header.id);
    send({ ...header, anchor: this.id }, body instanceof Uint8Array ? body : undefined);
  }

  timer(op, id, ms) {
    if (this.ended || !Number.isInteger(id)) return;
    clearTimeout(this.timers.get(id));
    this.timers.delete(id);
    // Each timer is host memory: one anchor must not be able to grow the host without bound.
    if (op === 'set' && this.timers.size >= MAX_TIMERS)
      throw new RangeError(`an anchor may have at most ${MAX_TIMERS} timers pending`);
    if (op === 'set')
      this.timers.set(
        id,
        setTimeout(
          () => {
            this.timers.delete(id);
            this.deliver('timer', { id });
          },
          Math.max(0, Math.min(Number(ms) || 0, 2 ** 31 - 1)),
        ),
      );
  }

  /** The CPU budget of each invocation in flight (the isolate's CPU time is shared by all of them). */
  checkCpu() {
    // isolated-vm disposes an isolate that hits its heap limit by itself, and reading the CPU time of
    // a disposed isolate crashes the process: the flag is checked first, every time.
    if (this.ended || this.isolate.isDisposed || this.inflight.size === 0) return;
    const now = this.isolate.cpuTime;
    const budget = BigInt(this.spec.cpuMs) * 1_000_000n;
    for (const began of this.inflight.values()) {
      if (now - began > budget) {
        this.end(
          'cpu',
          `the invocation used more than ${this.spec.cpuMs} ms of CPU time (anchor.limits.cpuMs)`,
        );
        return;
      }
    }
  }

  failed(error) {
    if (this.ended) return;
    const message = String(error?.message ?? error);
    if (message.startsWith(UNCAUGHT)) {
      // Thrown from a timer, outside any invocation's handler: as in a process, that ends the anchor.
      this.end('crashed', `uncaught exception: ${message.slice(UNCAUGHT.length)}`);
    } else if (!this.isolate.isDisposed && !/timed out/.test(message)) {
      // isolated-vm rejects the entry with a promise rejection that nobody handled. As in Workers (and
      // the process executor, with --unhandled-rejections=warn) it is reported, not fatal.
      this.fromIsolate(
        JSON.stringify({
          t: 'console',
          invocation: null,
          level: 'warn',
          text: `Unhandled rejection: ${message}`,
        }),
      );
    } else if (/memory limit/.test(message))
      this.end(
        'memory',
        `the JavaScript heap reached its ${this.spec.memoryMb} MB limit (anchor.limits.memoryMb)`,
      );
    else if (/timed out/.test(message))
      this.end('timeout', `the anchor did not finish within ${this.spec.timeoutMs} ms`);
    else this.end('crashed', message);
  }

  end(reason, detail, signal = null) {
    if (this.ended) return;
    this.ended = true;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    anchors.delete(this.id);
    if (!this.isolate.isDisposed) this.isolate.dispose();
    send({ t: 'exit', anchor: this.id, reason, detail, signal });
  }
}

async function load(header) {
  const anchor = new Anchor(header.anchor, header);
  anchors.set(anchor.id, anchor);
  try {
    await anchor.load();
    send({ t: 'ready', anchor: anchor.id });
  } catch (error) {
    const message = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    if (!anchor.ended) send({ t: 'load-error', anchor: anchor.id, message });
    anchor.end('crashed', `the module did not load: ${message}`);
  }
}

const reader = new FrameReader(MAX_FRAME);
channel.on('data', (chunk) => {
  for (const { header, body } of reader.push(chunk)) {
    if (header.t === 'load') {
      void load(header);
      continue;
    }
    const anchor = anchors.get(header.anchor);
    if (!anchor) {
      // Asked to end an anchor that has already ended: say so, or the host would wait for it forever.
      if (header.t === 'kill')
        send({ t: 'exit', anchor: header.anchor, reason: 'killed', signal: header.signal });
      continue;
    }
    if (header.t === 'start') anchor.started = true;
    else if (header.t === 'fetch' && anchor.started) {
      if (anchor.isolate.isDisposed) continue;
      anchor.inflight.set(header.id, anchor.isolate.cpuTime);
      anchor.deliver('fetch', header, body);
    } else if (header.t === 'reply') anchor.deliver('reply', header, body);
    else if (header.t === 'kill') anchor.end('killed', undefined, header.signal ?? 'SIGKILL');
  }
});
channel.on('end', () => process.exit(0));
setInterval(() => {
  for (const anchor of anchors.values()) anchor.checkCpu();
}, CPU_POLL_MS);
send({ t: 'host-ready' });
