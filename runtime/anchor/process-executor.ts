import { fileURLToPath } from 'node:url';
import { interpreterBinds, spawnSandboxed, type SandboxProcess } from '../sandbox/index.ts';
import { encodeFrame, FrameReader, type Frame } from './guest/wire.mjs';
import { parseGuestFrame, type GuestFrame } from './guest-frames.ts';
import { networkAllowed } from './network.ts';
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
/** Frames carry request and response bodies; this bounds any one of them. */
export const MAX_FRAME_BYTES = 16 * MiB;
const CONSOLE_LIMIT = 64 * 1024;
/** The end of the anchor's stderr kept for diagnostics (V8 prints its fatal errors there). */
const STDERR_TAIL = 16 * 1024;
/** How long a timed-out invocation waits for its killed anchor to be gone before answering anyway. */
const KILL_WAIT_MS = 3_000;
/** What V8 prints when the JS heap hits --max-old-space-size (it then aborts). */
const HEAP_OOM = /FATAL ERROR:.*(heap out of memory|heap limit)/;
/** The JS heap gets the manifest's memory; the runtime itself (code, threads, buffers) this much more. */
const RUNTIME_OVERHEAD_BYTES = 96 * MiB;
/** CPU time an anchor process may use over its whole life, as a multiple of its per-invocation budget. */
const LIFETIME_CPU_FACTOR = 1000;
const LIFETIME_WALL_MS = 7 * 24 * 3600 * 1000;

interface Pending {
  hooks: InvocationHooks;
  settle: (outcome: AnchorOutcome) => void;
  finish: (summary: { console: ConsoleLine[]; consoleTruncated: boolean; waitUntilErrors: string[] }) => void;
  console: ConsoleLine[];
  consoleBytes: number;
  consoleTruncated: boolean;
  timer: NodeJS.Timeout;
}

/**
 * Runs each anchor in its own sandboxed process: bubblewrap with no network, an unprivileged uid, no
 * capabilities, seccomp, cgroup/rlimit limits, and Node's permission model on top (the anchor may read
 * only its bundle and the guest harness).
 */
export class ProcessAnchorExecutor implements AnchorExecutor {
  readonly name = 'process';

  async launch(spec: AnchorSpec): Promise<AnchorInstance> {
    const sandbox = spawnSandboxed({
      label: `anchor-${spec.cid}`,
      argv: [
        process.execPath,
        '--experimental-permission',
        '--allow-fs-read=/fn/*',
        '--allow-fs-read=/ebcc/*',
        `--max-old-space-size=${spec.limits.memoryMb}`,
        '--disable-warning=ExperimentalWarning',
        // As in Workers, a promise rejection nobody handles is reported, not fatal: ending the process
        // would fail every other invocation it serves.
        '--unhandled-rejections=warn',
        '/ebcc/harness.mjs',
      ],
      binds: [
        ...interpreterBinds(),
        { host: spec.rootDir, sandbox: '/fn' },
        { host: GUEST_DIR, sandbox: '/ebcc' },
      ],
      env: {
        EBCC_ENTRY: `/fn/${spec.entry}`,
        EBCC_VARS: JSON.stringify(spec.vars),
        EBCC_STAGES: JSON.stringify(spec.stageNames),
        EBCC_MAX_FRAME_BYTES: String(MAX_FRAME_BYTES),
        NODE_OPTIONS: '',
      },
      cwd: '/fn',
      extraFds: 1,
      limits: {
        memoryBytes: spec.limits.memoryMb * MiB + RUNTIME_OVERHEAD_BYTES,
        cpuMs: spec.limits.cpuMs * LIFETIME_CPU_FACTOR,
        wallMs: LIFETIME_WALL_MS,
        maxProcs: 64,
        maxOutputBytes: 16 * MiB,
      },
    });
    const instance = new ProcessAnchor(sandbox, spec);
    await instance.loaded(spec.limits.timeoutMs + 10_000);
    return instance;
  }
}

class ProcessAnchor implements AnchorInstance {
  private readonly channel;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  /** Invocations whose timeout ended the anchor: they answer `timeout`, not `crashed`. */
  private readonly timedOut = new Set<number>();
  private stderr = '';
  /** Set once the anchor process has ended. */
  private ended: AnchorExit | undefined;
  private readonly ready: Promise<void>;
  readonly exited: Promise<AnchorExit>;

  constructor(
    private readonly sandbox: SandboxProcess,
    private readonly spec: AnchorSpec,
  ) {
    this.channel = sandbox.extraFds[0]!;
    sandbox.stdout.on('data', (d: Buffer) => this.orphanConsole('log', d.toString()));
    sandbox.stderr.on('data', (d: Buffer) => {
      // The end matters most: a fatal error is the last thing a process writes.
      this.stderr = (this.stderr + d.toString()).slice(-STDERR_TAIL);
    });
    let markReady: () => void;
    let failLoad: (error: Error) => void;
    this.ready = new Promise((resolve, reject) => ((markReady = resolve), (failLoad = reject)));
    this.ready.catch(() => undefined);
    const reader = new FrameReader(MAX_FRAME_BYTES);
    this.channel.on('data', (chunk: Buffer) => {
      let frames: Frame[];
      try {
        frames = reader.push(chunk);
      } catch (error) {
        // A corrupt stream from tenant code: the anchor cannot be trusted to continue.
        this.orphanConsole('error', `ebcc: ${(error as Error).message}`);
        this.kill();
        return;
      }
      for (const { header, body } of frames) {
        const parsed = parseGuestFrame(header);
        if (!parsed.ok) {
          // Tenant code can write to fd 3 itself: a frame the harness would never send ends the anchor.
          this.orphanConsole('error', `ebcc: anchor wire: ${parsed.error}`);
          this.kill();
          return;
        }
        const frame = parsed.frame;
        if (frame.t === 'ready') markReady();
        else if (frame.t === 'load-error')
          failLoad(new AnchorLoadError(`the anchor module failed to load: ${String(frame.message)}`));
        else this.onFrame(frame, body);
      }
    });
    this.channel.on('error', () => undefined);
    this.exited = sandbox.exited.then((exit) => {
      // V8 aborts when the JS heap reaches the manifest's memoryMb; that is the memory limit too.
      const heapOom = exit.reason === 'exit' && exit.code !== 0 && HEAP_OOM.test(this.stderr);
      const detail = heapOom
        ? `the JavaScript heap reached its ${this.spec.limits.memoryMb} MB limit (anchor.limits.memoryMb)`
        : (exit.detail ?? (this.stderr.trim().split('\n').slice(-3).join(' | ') || undefined));
      const result: AnchorExit = {
        code: exit.code,
        signal: exit.signal,
        reason: heapOom ? 'memory' : exit.reason,
        detail,
      };
      this.ended = result;
      failLoad(new AnchorLoadError(`the anchor exited before it was ready (${describe(result)})`));
      for (const [id, p] of this.pending) {
        clearTimeout(p.timer);
        this.pending.delete(id);
        if (this.timedOut.has(id)) {
          p.finish({ console: p.console, consoleTruncated: p.consoleTruncated, waitUntilErrors: [] });
          continue;
        }
        p.settle({
          kind: 'crashed',
          message: `the anchor process ended during the invocation (${describe(result)})`,
        });
        p.finish({ console: p.console, consoleTruncated: p.consoleTruncated, waitUntilErrors: [] });
      }
      return result;
    });
  }

  get pid(): number | undefined {
    return this.sandbox.pid;
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

  start(): void {
    this.channel.write(encodeFrame({ t: 'start' }));
  }

  invoke(request: AnchorRequest, hooks: InvocationHooks): Promise<AnchorInvocationResult> {
    if (this.ended || this.channel.destroyed) {
      // Between the anchor's end and its instance being marked stopped: answer now, not at the timeout.
      const how = this.ended ? describe(this.ended) : 'its channel is closed';
      return Promise.resolve({
        outcome: { kind: 'crashed', message: `the anchor process had already ended (${how})` },
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
      // A hung invocation may have blocked the event loop: the only safe answer is to end the anchor.
      // The answer waits until the anchor is gone, so that the instance is known to be stopped (and is
      // not handed another invocation) by the time the caller hears of the timeout.
      const outcome: AnchorOutcome = {
        kind: 'timeout',
        message: `the anchor did not finish within ${this.spec.limits.timeoutMs} ms`,
      };
      this.timedOut.add(id);
      this.kill();
      void Promise.race([this.exited, new Promise((r) => setTimeout(r, KILL_WAIT_MS))]).then(() =>
        p.settle(outcome),
      );
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
    this.channel.write(
      encodeFrame(
        { t: 'fetch', id, method: request.method, url: request.url, headers: request.headers },
        request.body,
      ),
    );
    return outcome.then((o) => ({ outcome: o, finished }));
  }

  private onFrame(h: GuestFrame, body: Buffer): void {
    const key = 'id' in h ? h.id : 'invocation' in h ? h.invocation : undefined;
    const p = typeof key === 'number' ? this.pending.get(key) : undefined;
    switch (h.t) {
      case 'console':
        if (p) this.appendConsole(p, h.level, h.text);
        else this.orphanConsole(h.level, h.text);
        return;
      case 'response':
        // An answer that comes after the timeout fired is too late: the timeout stands.
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
    if (!this.channel.destroyed) this.channel.write(encodeFrame({ ...header, t: 'reply', callId }, body));
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

  /** Output outside any invocation (module top level, stray writes): attributed to the oldest one in flight. */
  private orphanConsole(level: string, text: string): void {
    const first = this.pending.values().next().value as Pending | undefined;
    if (first) this.appendConsole(first, level, text);
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    this.sandbox.kill(signal);
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
