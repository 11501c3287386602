import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { interpreterBinds, spawnSandboxed, type SandboxExit, type SandboxProcess } from '../sandbox/index.ts';
import { encodeFrame, FrameReader, type Frame } from './guest/wire.mjs';
import { guestFrameSchema, type GuestFrame } from './guest-frames.ts';
import { networkAllowed } from './network.ts';
import { MAX_FRAME_BYTES } from './process-executor.ts';
import {
  AnchorLoadError,
  type AnchorExecutor,
  type AnchorExit,
  type AnchorInstance,
  type AnchorInvocationResult,
  type AnchorOutcome,
  type AnchorRequest,
  type AnchorSpec,
  type ConsoleLine,
  type InvocationHooks,
} from './types.ts';

const MiB = 1024 * 1024;
const GUEST_DIR = fileURLToPath(new URL('./guest/', import.meta.url));
const CONSOLE_LIMIT = 64 * 1024;
const STDERR_TAIL = 16 * 1024;
/** How long a timed-out invocation waits for its disposed isolate to be reported gone. */
const KILL_WAIT_MS = 3_000;
/** The host process itself (Node, isolated-vm, the runtime script) beside its isolates' heaps. */
const HOST_OVERHEAD_BYTES = 128 * MiB;
const LIFETIME_CPU_FACTOR = 1000;
const LIFETIME_WALL_MS = 7 * 24 * 3600 * 1000;
/** isolated-vm refuses heaps under 8 MB. */
const MIN_ISOLATE_MB = 8;

/** The isolated-vm package directory, shown read-only to the host sandbox (it loads the native addon). */
function isolatedVmDir(): string {
  return dirname(createRequire(import.meta.url).resolve('isolated-vm/package.json'));
}

const anchorId = z.number().int().positive();
/** What an isolate host may say: the anchor wire with the anchor it concerns, and its own two frames. */
const hostFrameSchema = z.union([
  z.object({ t: z.literal('host-ready') }),
  z.object({
    t: z.literal('exit'),
    anchor: anchorId,
    reason: z.enum(['killed', 'memory', 'cpu', 'timeout', 'crashed']),
    detail: z.string().optional().nullable(),
    signal: z.string().max(16).nullable().optional(),
  }),
  ...guestFrameSchema.options.map((o) => o.extend({ anchor: anchorId })),
]);
type HostFrame = z.infer<typeof hostFrameSchema>;

export interface IsolateExecutorOptions {
  /** Anchors one host process serves before another is started for the same version. */
  anchorsPerHost?: number;
}

/**
 * Runs anchors as V8 isolates (isolated-vm) inside isolate hosts: one sandboxed process, sandboxed
 * exactly as the process executor's, serves many anchors of one function version, so tenants (and
 * versions) never share a process. The isolate boundary replaces the process boundary between anchors
 * of the same version; see docs/architecture.md for the trade-off.
 */
export class IsolateAnchorExecutor implements AnchorExecutor {
  readonly name = 'isolate';
  private readonly hosts = new Map<string, IsolateHost[]>();
  private readonly anchorsPerHost: number;

  constructor(options: IsolateExecutorOptions = {}) {
    this.anchorsPerHost = options.anchorsPerHost ?? 128;
  }

  async launch(spec: AnchorSpec): Promise<AnchorInstance> {
    if (spec.limits.memoryMb < MIN_ISOLATE_MB)
      throw new AnchorLoadError(`the isolate executor needs anchor.limits.memoryMb >= ${MIN_ISOLATE_MB}`);
    // A version's files and limits are the same for all its anchors: the host is keyed by the directory.
    const key = spec.rootDir;
    const list = this.hosts.get(key) ?? [];
    this.hosts.set(key, list);
    let host = list.find((h) => h.accepting && h.size < this.anchorsPerHost);
    if (!host) {
      host = new IsolateHost(spec, this.anchorsPerHost, () => {
        const left = (this.hosts.get(key) ?? []).filter((h) => h !== host);
        if (left.length) this.hosts.set(key, left);
        else this.hosts.delete(key);
      });
      list.push(host);
    }
    return host.load(spec);
  }

  /** Host processes now running (for density measurements and tests). */
  hostPids(): number[] {
    return [...this.hosts.values()].flat().flatMap((h) => (h.pid === undefined ? [] : [h.pid]));
  }
}

class IsolateHost {
  private readonly sandbox: SandboxProcess;
  private readonly channel;
  private readonly anchors = new Map<number, IsolateAnchor>();
  private nextAnchor = 1;
  private stderr = '';
  /** False once the host is ending: new anchors go to a fresh host. */
  accepting = true;
  readonly exited: Promise<SandboxExit>;

  constructor(spec: AnchorSpec, capacity: number, onGone: () => void) {
    this.sandbox = spawnSandboxed({
      label: `isolates-${spec.cid}`,
      argv: [
        process.execPath,
        // isolated-vm cannot run in a process started from Node 20's startup snapshot.
        '--no-node-snapshot',
        '--experimental-permission',
        '--allow-fs-read=/fn/*',
        '--allow-fs-read=/ebcc/*',
        '--allow-fs-read=/ebcc-ivm/*',
        '--allow-addons',
        '--disable-warning=ExperimentalWarning',
        '--unhandled-rejections=warn',
        '/ebcc/isolate-host.mjs',
      ],
      binds: [
        ...interpreterBinds(),
        { host: spec.rootDir, sandbox: '/fn' },
        { host: GUEST_DIR, sandbox: '/ebcc' },
        { host: isolatedVmDir(), sandbox: '/ebcc-ivm' },
      ],
      env: {
        EBCC_IVM: '/ebcc-ivm',
        EBCC_MAX_FRAME_BYTES: String(MAX_FRAME_BYTES),
        NODE_OPTIONS: '',
      },
      cwd: '/fn',
      extraFds: 1,
      limits: {
        // Each isolate's heap is bounded by its own limit; this bounds the whole host as a backstop.
        memoryBytes: capacity * spec.limits.memoryMb * MiB + HOST_OVERHEAD_BYTES,
        cpuMs: spec.limits.cpuMs * LIFETIME_CPU_FACTOR * capacity,
        wallMs: LIFETIME_WALL_MS,
        maxProcs: 64,
        maxOutputBytes: 16 * MiB,
      },
    });
    this.channel = this.sandbox.extraFds[0];
    this.sandbox.stdout.on('data', () => undefined);
    this.sandbox.stderr.on('data', (d: Buffer) => {
      this.stderr = (this.stderr + d.toString()).slice(-STDERR_TAIL);
    });
    const reader = new FrameReader(MAX_FRAME_BYTES);
    this.channel?.on('data', (chunk: Buffer) => {
      let frames: Frame[];
      try {
        frames = reader.push(chunk);
      } catch {
        // The host is sandboxed as untrusted: a corrupt stream ends it and every anchor in it.
        this.kill();
        return;
      }
      for (const { header, body } of frames) {
        const parsed = hostFrameSchema.safeParse(header);
        if (!parsed.success) {
          this.kill();
          return;
        }
        this.onFrame(parsed.data, body);
      }
    });
    this.channel?.on('error', () => undefined);
    this.exited = this.sandbox.exited.then((exit) => {
      this.accepting = false;
      onGone();
      const detail = exit.detail ?? (this.stderr.trim().split('\n').slice(-3).join(' | ') || undefined);
      for (const anchor of this.anchors.values())
        anchor.ended({
          code: exit.code,
          signal: exit.signal,
          reason: exit.reason,
          detail: `the isolate host ended${detail ? `: ${detail}` : ''}`,
        });
      this.anchors.clear();
      return exit;
    });
    if (!this.channel) this.accepting = false;
  }

  get pid(): number | undefined {
    return this.sandbox.pid;
  }

  get size(): number {
    return this.anchors.size;
  }

  async load(spec: AnchorSpec): Promise<IsolateAnchor> {
    const id = this.nextAnchor++;
    const anchor = new IsolateAnchor(this, id, spec);
    this.anchors.set(id, anchor);
    this.send({
      t: 'load',
      anchor: id,
      entry: spec.entry,
      vars: spec.vars,
      stages: spec.stageNames,
      memoryMb: spec.limits.memoryMb,
      cpuMs: spec.limits.cpuMs,
      timeoutMs: spec.limits.timeoutMs,
    });
    await anchor.loaded(spec.limits.timeoutMs + 10_000);
    return anchor;
  }

  send(header: Record<string, unknown>, body?: Uint8Array): boolean {
    if (!this.channel || this.channel.destroyed) return false;
    this.channel.write(encodeFrame(header, body));
    return true;
  }

  private onFrame(frame: HostFrame, body: Buffer): void {
    if (frame.t === 'host-ready') return;
    const anchor = this.anchors.get(frame.anchor);
    if (!anchor) return;
    if (frame.t === 'exit') {
      this.forget(frame.anchor);
      anchor.ended({
        code: null,
        signal: frame.signal ?? null,
        reason: frame.reason,
        detail: frame.detail ?? undefined,
      });
      return;
    }
    const { anchor: _, ...guest } = frame;
    anchor.onFrame(guest as GuestFrame, body);
  }

  /** An anchor is gone; a host with none left ends (a later launch starts a fresh one). */
  forget(id: number): void {
    this.anchors.delete(id);
    if (this.anchors.size === 0 && this.accepting) {
      this.accepting = false;
      this.channel?.end();
    }
  }

  kill(): void {
    this.accepting = false;
    this.sandbox.kill('SIGKILL');
  }
}

interface Pending {
  hooks: InvocationHooks;
  settle: (outcome: AnchorOutcome) => void;
  finish: (summary: { console: ConsoleLine[]; consoleTruncated: boolean; waitUntilErrors: string[] }) => void;
  console: ConsoleLine[];
  consoleBytes: number;
  consoleTruncated: boolean;
  timer: NodeJS.Timeout;
}

class IsolateAnchor implements AnchorInstance {
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private readonly timedOut = new Set<number>();
  private end: AnchorExit | undefined;
  private markReady!: () => void;
  private failLoad!: (error: Error) => void;
  private readonly ready: Promise<void>;
  private resolveExit!: (exit: AnchorExit) => void;
  readonly exited: Promise<AnchorExit>;

  constructor(
    private readonly host: IsolateHost,
    private readonly id: number,
    private readonly spec: AnchorSpec,
  ) {
    this.ready = new Promise((resolve, reject) => ((this.markReady = resolve), (this.failLoad = reject)));
    this.ready.catch(() => undefined);
    this.exited = new Promise((resolve) => (this.resolveExit = resolve));
  }

  get pid(): number | undefined {
    return this.host.pid;
  }

  async loaded(timeoutMs: number): Promise<void> {
    const timer = setTimeout(() => this.kill(), timeoutMs);
    try {
      await this.ready;
    } catch (error) {
      this.kill();
      await this.exited;
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  /** The isolate is gone (its own limit, a kill, or its host ended). */
  ended(exit: AnchorExit): void {
    if (this.end) return;
    this.end = exit;
    const fromOutside =
      exit.reason === 'killed' || exit.reason === 'spawn-failed' || exit.signal === 'SIGKILL';
    this.failLoad(
      new AnchorLoadError(`the anchor ended before it was ready (${describe(exit)})`, fromOutside),
    );
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      this.pending.delete(id);
      const summary = { console: p.console, consoleTruncated: p.consoleTruncated, waitUntilErrors: [] };
      if (!this.timedOut.has(id)) {
        // A per-invocation budget (CPU, or a run without yielding) is the invocation's timeout, as a
        // process anchor's hang is; the heap limit and a crash end the anchor as its process would.
        p.settle(
          exit.reason === 'cpu' || exit.reason === 'timeout'
            ? { kind: 'timeout', message: exit.detail ?? 'the anchor exceeded its limits' }
            : {
                kind: 'crashed',
                message: `the anchor isolate ended during the invocation (${describe(exit)})`,
              },
        );
      }
      p.finish(summary);
    }
    this.resolveExit(exit);
  }

  start(): void {
    this.host.send({ t: 'start', anchor: this.id });
  }

  invoke(request: AnchorRequest, hooks: InvocationHooks): Promise<AnchorInvocationResult> {
    if (this.end) {
      return Promise.resolve({
        outcome: { kind: 'crashed', message: `the anchor isolate had already ended (${describe(this.end)})` },
        finished: Promise.resolve({ console: [], consoleTruncated: false, waitUntilErrors: [] }),
      });
    }
    const id = this.nextId++;
    let settle!: (outcome: AnchorOutcome) => void;
    let finish!: Pending['finish'];
    const outcome = new Promise<AnchorOutcome>((r) => (settle = r));
    const finished = new Promise<Parameters<Pending['finish']>[0]>((r) => (finish = r));
    const timer = setTimeout(() => {
      const p = this.pending.get(id);
      if (!p) return;
      // As with a process anchor: the anchor is ended, and the answer waits until it is gone, so that
      // its instance is stopped before anyone else is handed it.
      const outcome: AnchorOutcome = {
        kind: 'timeout',
        message: `the anchor did not finish within ${this.spec.limits.timeoutMs} ms`,
      };
      this.timedOut.add(id);
      this.kill();
      void Promise.race([this.exited, new Promise((r) => setTimeout(r, KILL_WAIT_MS))]).then(() => {
        // A host that cannot dispose the isolate in time is itself stuck: it goes, with all its anchors.
        if (!this.end) this.host.kill();
        p.settle(outcome);
      });
    }, this.spec.limits.timeoutMs);
    this.pending.set(id, {
      hooks,
      settle,
      finish,
      console: [],
      consoleBytes: 0,
      consoleTruncated: false,
      timer,
    });
    this.host.send(
      {
        t: 'fetch',
        anchor: this.id,
        id,
        method: request.method,
        url: request.url,
        headers: request.headers,
      },
      request.body,
    );
    return outcome.then((o) => ({ outcome: o, finished }));
  }

  onFrame(h: GuestFrame, body: Buffer): void {
    if (h.t === 'ready') return this.markReady();
    if (h.t === 'load-error') {
      this.failLoad(new AnchorLoadError(`the anchor module failed to load: ${String(h.message)}`));
      return;
    }
    const key = 'id' in h ? h.id : 'invocation' in h ? h.invocation : undefined;
    const p = typeof key === 'number' ? this.pending.get(key) : undefined;
    switch (h.t) {
      case 'console':
        if (p) this.appendConsole(p, h.level, h.text);
        else {
          const first = this.pending.values().next().value as Pending | undefined;
          if (first) this.appendConsole(first, h.level, h.text);
        }
        return;
      case 'response':
        if (this.timedOut.has(h.id)) return;
        p?.settle({
          kind: 'response',
          response: { status: h.status, statusText: h.statusText ?? '', headers: h.headers, body },
        });
        return;
      case 'error':
        if (this.timedOut.has(h.id)) return;
        p?.settle({ kind: 'error', message: h.message });
        return;
      case 'done':
        if (!p) return;
        clearTimeout(p.timer);
        this.pending.delete(h.id);
        p.finish({
          console: p.console,
          consoleTruncated: p.consoleTruncated,
          waitUntilErrors: h.waitUntilErrors,
        });
        return;
      case 'stage':
        void this.reply(h.callId, async () => {
          if (!p)
            return {
              ok: false,
              code: 'no-invocation',
              status: 400,
              message: 'stages can only be called during an invocation',
            };
          return p.hooks.stage(h.stage, body, { nonce: h.nonce });
        });
        return;
      case 'net':
        void this.reply(h.callId, () => this.proxyFetch(h, body));
        return;
    }
  }

  private async reply(
    callId: unknown,
    produce: () => Promise<{ ok: boolean; body?: Uint8Array; [k: string]: unknown }>,
  ): Promise<void> {
    let result;
    try {
      result = await produce();
    } catch (error) {
      result = { ok: false, code: 'internal', status: 500, message: (error as Error).message };
    }
    const { body, ...header } = result;
    if (!this.end) this.host.send({ ...header, t: 'reply', anchor: this.id, callId }, body);
  }

  private async proxyFetch(h: Extract<GuestFrame, { t: 'net' }>, body: Buffer) {
    let url: URL;
    try {
      url = new URL(h.url);
    } catch {
      return { ok: false, message: 'invalid URL' };
    }
    if (!networkAllowed(url, this.spec.networkAllow)) {
      return { ok: false, message: `${url.host} is not in this function's network allowlist` };
    }
    const response = await fetch(url, {
      method: h.method,
      headers: h.headers,
      body: body.length ? new Uint8Array(body) : undefined,
      redirect: 'manual',
      signal: AbortSignal.timeout(this.spec.limits.timeoutMs),
    });
    const bytes = new Uint8Array(await response.arrayBuffer());
    return { ok: true, status: response.status, headers: [...response.headers], body: bytes };
  }

  private appendConsole(p: Pending, level: string, text: string): void {
    if (p.consoleTruncated) return;
    p.consoleBytes += text.length;
    if (p.consoleBytes > CONSOLE_LIMIT) {
      p.consoleTruncated = true;
      return;
    }
    p.console.push({ level, text });
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (this.end) return;
    if (!this.host.send({ t: 'kill', anchor: this.id, signal })) this.host.kill();
  }
}

function describe(exit: AnchorExit): string {
  const how =
    exit.reason === 'exit'
      ? exit.signal
        ? `killed by ${exit.signal}`
        : `exit code ${exit.code}`
      : exit.reason === 'memory'
        ? 'out of memory'
        : exit.reason === 'killed' && exit.signal
          ? `killed by ${exit.signal}`
          : exit.reason;
  return exit.detail ? `${how}: ${exit.detail}` : how;
}
