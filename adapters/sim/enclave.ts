import {
  spawnSandboxed,
  runSandboxed,
  type SandboxExit,
  type SandboxProcess,
} from '../../runtime/sandbox/index.ts';
import type { EnclaveHandle, StageExit, StageImage, StageResult, StageRun } from '../types.ts';
import { enclaveSandbox } from './launch.ts';

const LOG_CAP = 256 * 1024;

function stageExit(exit: SandboxExit): StageExit {
  const reason = exit.reason === 'spawn-failed' ? 'crashed' : exit.reason;
  return { code: exit.code, signal: exit.signal, reason, ...(exit.detail ? { detail: exit.detail } : {}) };
}

/** A oneshot sim enclave: one sandbox, one request on stdin, the response on stdout. */
export async function runOneshot(
  image: StageImage,
  handle: EnclaveHandle,
  run: StageRun,
): Promise<StageResult> {
  const result = await runSandboxed({
    ...enclaveSandbox(image, handle, false),
    input: run.request,
    signal: run.signal,
  });
  return { response: result.stdout, log: result.stderr.subarray(0, LOG_CAP), exit: stageExit(result.exit) };
}

/**
 * A persistent sim enclave: one sandboxed process serving requests in order over length-prefixed
 * frames (a 4-byte big-endian length, then the bytes) on stdin and stdout. Its stderr between a request
 * and its response is that request's log.
 */
export class PersistentEnclave {
  private readonly proc: SandboxProcess;
  private buffer: Buffer = Buffer.alloc(0);
  private log: Buffer[] = [];
  private logBytes = 0;
  private waiter: ((frame: Buffer | Error) => void) | undefined;
  private exit: SandboxExit | undefined;

  constructor(
    private readonly image: StageImage,
    handle: EnclaveHandle,
  ) {
    this.proc = spawnSandboxed(enclaveSandbox(image, handle, true));
    this.proc.stdin.on('error', () => undefined);
    this.proc.stdout.on('data', (chunk: Buffer) => this.onStdout(chunk));
    this.proc.stderr.on('data', (chunk: Buffer) => {
      if (this.logBytes < LOG_CAP) {
        this.log.push(chunk);
        this.logBytes += chunk.length;
      }
    });
    void this.proc.exited.then((exit) => {
      this.exit = exit;
      this.waiter?.(new Error('exited'));
    });
  }

  get alive(): boolean {
    return this.exit === undefined;
  }

  private onStdout(chunk: Buffer): void {
    this.buffer = this.buffer.length ? Buffer.concat([this.buffer, chunk]) : chunk;
    if (this.buffer.length < 4) return;
    const length = this.buffer.readUInt32BE(0);
    if (length > this.image.limits.maxResponseBytes) {
      this.overflow = true;
      this.proc.kill();
      return;
    }
    if (this.buffer.length < 4 + length) return;
    const frame = this.buffer.subarray(4, 4 + length);
    this.buffer = this.buffer.subarray(4 + length);
    const waiter = this.waiter;
    this.waiter = undefined;
    if (waiter) waiter(frame);
    else this.proc.kill(); // output nobody asked for breaks the protocol
  }

  private overflow = false;

  async run(run: StageRun): Promise<StageResult> {
    if (this.exit) return { response: new Uint8Array(0), log: new Uint8Array(0), exit: stageExit(this.exit) };
    this.log = [];
    this.logBytes = 0;
    const header = Buffer.alloc(4);
    header.writeUInt32BE(run.request.byteLength);
    const frame = new Promise<Buffer | Error>((resolve) => (this.waiter = resolve));
    const timer = setTimeout(() => {
      this.timedOut = true;
      this.proc.kill();
    }, this.image.limits.timeoutMs);
    const onAbort = () => this.proc.kill();
    run.signal?.addEventListener('abort', onAbort, { once: true });
    this.proc.stdin.write(Buffer.concat([header, run.request]));
    const got = await frame;
    clearTimeout(timer);
    run.signal?.removeEventListener('abort', onAbort);
    // stderr written just before the response may still be in its pipe.
    await new Promise((r) => setImmediate(r));
    const log = Buffer.concat(this.log);
    if (got instanceof Buffer) return { response: got, log, exit: { code: 0, signal: null, reason: 'exit' } };
    const exit = await this.proc.exited;
    const reason = this.overflow
      ? 'output'
      : this.timedOut
        ? 'timeout'
        : run.signal?.aborted
          ? 'killed'
          : stageExit(exit).reason;
    const detail =
      exit.reason === 'exit'
        ? `the stage process ended (exit code ${exit.code}) instead of answering`
        : exit.detail;
    return {
      response: new Uint8Array(0),
      log,
      exit: { code: exit.code, signal: exit.signal, reason, ...(detail ? { detail } : {}) },
    };
  }

  private timedOut = false;

  async destroy(): Promise<void> {
    this.proc.stdin.end();
    this.proc.kill();
    await this.proc.exited;
  }
}
