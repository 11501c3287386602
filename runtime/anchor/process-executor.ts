import { fileURLToPath } from 'node:url';
import { interpreterBinds, spawnSandboxed, type SandboxProcess } from '../sandbox/index.ts';
import { encodeFrame, FrameReader, type Frame } from './guest/wire.mjs';
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
  private stderr = '';
  private readonly ready: Promise<void>;
  readonly exited: Promise<AnchorExit>;

  constructor(
    private readonly sandbox: SandboxProcess,
    private readonly spec: AnchorSpec,
  ) {
    this.channel = sandbox.extraFds[0]!;
    sandbox.stdout.on('data', (d: Buffer) => this.orphanConsole('log', d.toString()));
    sandbox.stderr.on('data', (d: Buffer) => {
      if (this.stderr.length < 8192) this.stderr += d.toString();
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
      for (const frame of frames) {
        const t = frame.header.t;
        if (t === 'ready') markReady();
        else if (t === 'load-error')
          failLoad(new AnchorLoadError(`the anchor module failed to load: ${String(frame.header.message)}`));
        else this.onFrame(frame);
      }
    });
    this.channel.on('error', () => undefined);
    this.exited = sandbox.exited.then((exit) => {
      const detail = exit.detail ?? (this.stderr.trim().split('\n').slice(-3).join(' | ') || undefined);
      const result: AnchorExit = { code: exit.code, signal: exit.signal, reason: exit.reason, detail };
      failLoad(new AnchorLoadError(`the anchor exited before it was ready (${describe(result)})`));
      for (const [id, p] of this.pending) {
        clearTimeout(p.timer);
        this.pending.delete(id);
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
    const id = this.nextId++;
    let settle!: (outcome: AnchorOutcome) => void;
    let finish!: Pending['finish'];
    const outcome = new Promise<AnchorOutcome>((r) => (settle = r));
    const finished = new Promise<Parameters<Pending['finish']>[0]>((r) => (finish = r));
    const timer = setTimeout(() => {
      const p = this.pending.get(id);
      if (!p) return;
      // A hung invocation may have blocked the event loop: the only safe answer is to end the anchor.
      p.settle({
        kind: 'timeout',
        message: `the anchor did not finish within ${this.spec.limits.timeoutMs} ms`,
      });
      this.kill();
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

  private onFrame({ header, body }: Frame): void {
    const h = header as Record<string, unknown>;
    const p =
      typeof h.id === 'number'
        ? this.pending.get(h.id)
        : typeof h.invocation === 'number'
          ? this.pending.get(h.invocation)
          : undefined;
    switch (h.t) {
      case 'console':
        if (p) this.appendConsole(p, String(h.level), String(h.text));
        else this.orphanConsole(String(h.level), String(h.text));
        return;
      case 'response':
        p?.settle({
          kind: 'response',
          response: {
            status: Number(h.status),
            statusText: String(h.statusText ?? ''),
            headers: h.headers as [string, string][],
            body,
          },
        });
        return;
      case 'error':
        p?.settle({ kind: 'error', message: String(h.message) });
        return;
      case 'done':
        if (!p) return;
        clearTimeout(p.timer);
        this.pending.delete(h.id as number);
        p.finish({
          console: p.console,
          consoleTruncated: p.consoleTruncated,
          waitUntilErrors: h.waitUntilErrors as string[],
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
          return p.hooks.stage(String(h.stage), body, {
            nonce: typeof h.nonce === 'string' ? h.nonce : undefined,
          });
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

  private async proxyFetch(h: Record<string, unknown>, body: Buffer) {
    let url: URL;
    try {
      url = new URL(String(h.url));
    } catch {
      return { ok: false, message: 'invalid URL' };
    }
    if (!networkAllowed(url, this.spec.networkAllow)) {
      return { ok: false, message: `${url.host} is not in this function's network allowlist` };
    }
    const response = await fetch(url, {
      method: String(h.method),
      headers: h.headers as [string, string][],
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
  const how = exit.reason === 'exit' ? `exit code ${exit.code}` : exit.reason;
  return exit.detail ? `${how}: ${exit.detail}` : how;
}
