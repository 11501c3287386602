import { encodeFrame, FrameReader, type Frame } from '../../runtime/anchor/guest/wire.mjs';
import { spawnSandboxed, type SandboxExit, type SandboxProcess } from '../../runtime/sandbox/index.ts';
import type {
  EnclaveHandle,
  EvidenceContext,
  StageExit,
  StageImage,
  StageResult,
  StageRun,
} from '../types.ts';
import { enclaveSandbox } from './launch.ts';
import type { ShimBundle } from './shim/bundle.ts';
import type { ExecutionContext, HostToShim, ShimToHost } from './shim/protocol.ts';

const MAX_FRAME = 80 * 1024 * 1024;
/** How long a new enclave may take to start its shim and say hello. */
const HELLO_TIMEOUT_MS = 10_000;

function sandboxExit(exit: SandboxExit): StageExit {
  const reason =
    exit.reason === 'spawn-failed' || (exit.reason === 'exit' && exit.signal !== null)
      ? 'crashed'
      : exit.reason;
  return { code: exit.code, signal: exit.signal, reason, ...(exit.detail ? { detail: exit.detail } : {}) };
}

/**
 * One sim enclave: a sandbox whose first process is the shim (the code EBCC adds inside the enclave),
 * which runs the stage as its child. The host sends requests and receives responses, logs, the metadata
 * the shim signed and the evidence, and never sees the enclave's private key.
 */
export class ShimEnclave {
  private readonly proc: SandboxProcess;
  private readonly reader = new FrameReader(MAX_FRAME);
  private waiter: ((frame: Frame | SandboxExit) => void) | undefined;
  private exit: SandboxExit | undefined;
  private timedOut = false;
  /** The enclave's raw evidence key (Ed25519) and encryption key (X25519), once it said hello. */
  readonly keys: Promise<{ publicKey: Buffer; encryptionKey: Buffer }>;

  constructor(
    private readonly image: StageImage,
    private readonly handle: EnclaveHandle,
    shim: ShimBundle,
    /** A key broker: the shim alone, with the sealing key of its measurement and the device root. */
    broker?: { sealingKey: Buffer; deviceKey: Buffer },
  ) {
    const persistent = image.mode === 'persistent';
    const sandbox = enclaveSandbox(image, handle, persistent);
    this.proc = spawnSandboxed({
      ...sandbox,
      ...(broker
        ? {
            env: {
              ...sandbox.env,
              EBCC_SHIM_SEALING_KEY: broker.sealingKey.toString('hex'),
              EBCC_SHIM_DEVICE_KEY: broker.deviceKey.toString('hex'),
            },
          }
        : {}),
      argv: [
        '/.ebcc-node',
        '--max-semi-space-size=2',
        '/.ebcc-shim/sim-shim.mjs',
        broker ? 'broker' : image.mode,
        '--',
        ...sandbox.argv,
      ],
      binds: [
        ...sandbox.binds,
        { host: shim.dir, sandbox: '/.ebcc-shim' },
        { host: shim.runtime, sandbox: '/.ebcc-node' },
      ],
    });
    this.proc.stdin.on('error', () => undefined);
    this.proc.stdout.on('data', (chunk: Buffer) => {
      let frames: Frame[];
      try {
        frames = this.reader.push(chunk);
      } catch {
        this.proc.kill();
        return;
      }
      for (const frame of frames) {
        const waiter = this.waiter;
        this.waiter = undefined;
        waiter?.(frame);
      }
    });
    void this.proc.exited.then((exit) => {
      this.exit = exit;
      const waiter = this.waiter;
      this.waiter = undefined;
      waiter?.(exit);
    });
    this.keys = this.next(HELLO_TIMEOUT_MS).then((frame) => {
      const header = 'header' in frame ? (frame.header as ShimToHost) : undefined;
      if (header?.t !== 'hello') {
        this.proc.kill();
        const why = 'reason' in frame ? describe(frame) : `unexpected ${JSON.stringify(header)}`;
        throw new Error(`the sim enclave did not start: ${why}`);
      }
      return {
        publicKey: Buffer.from(header.publicKey, 'hex'),
        encryptionKey: Buffer.from(header.encryptionKey, 'hex'),
      };
    });
    this.keys.catch(() => undefined);
  }

  get mode(): StageImage['mode'] {
    return this.image.mode;
  }

  get alive(): boolean {
    return this.exit === undefined;
  }

  private next(timeoutMs: number): Promise<Frame | SandboxExit> {
    if (this.exit) return Promise.resolve(this.exit);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.timedOut = true;
        this.proc.kill();
      }, timeoutMs);
      this.waiter = (value) => {
        clearTimeout(timer);
        resolve(value);
      };
    });
  }

  private context(evidence: EvidenceContext): ExecutionContext {
    return {
      backend: this.handle.backend,
      hardwareProtected: false,
      function: evidence.function,
      versionDigest: evidence.versionDigest,
      cid: this.handle.cid,
      eid: this.handle.eid,
      stage: this.handle.stage,
      measurement: this.handle.measurement,
      nonce: evidence.nonce ? Buffer.from(evidence.nonce).toString('hex') : null,
      nativeEvidenceDigest: Buffer.from(evidence.nativeEvidenceDigest).toString('hex'),
    };
  }

  async run(run: StageRun): Promise<StageResult> {
    const empty = new Uint8Array(0);
    if (!run.evidence) throw new Error('sim enclaves sign every execution: the evidence context is required');
    await this.keys;
    // An enclave that ended while idle never saw this request: the runtime may serve it elsewhere.
    if (this.exit)
      return { response: empty, log: empty, exit: { ...sandboxExit(this.exit), reason: 'unavailable' } };
    const onAbort = () => this.proc.kill();
    run.signal?.addEventListener('abort', onAbort, { once: true });
    const answer = this.next(this.image.limits.timeoutMs);
    this.proc.stdin.write(
      encodeFrame(
        {
          t: 'run',
          context: this.context(run.evidence),
          maxResponseBytes: this.image.limits.maxResponseBytes,
        },
        run.request,
      ),
    );
    const got = await answer;
    run.signal?.removeEventListener('abort', onAbort);
    if ('reason' in got) {
      const exit = sandboxExit(got);
      const reason = this.timedOut ? 'timeout' : run.signal?.aborted ? 'killed' : exit.reason;
      return { response: empty, log: empty, exit: { ...exit, reason } };
    }
    const header = got.header as ShimToHost;
    if (header.t === 'unavailable')
      return { response: empty, log: empty, exit: { ...header.exit, reason: 'unavailable' } };
    if (header.t !== 'result') {
      this.proc.kill();
      return {
        response: empty,
        log: empty,
        exit: { code: null, signal: null, reason: 'crashed', detail: `the shim answered ${header.t}` },
      };
    }
    const [responseLength, logLength, metadataLength] = header.lengths;
    let at = 0;
    const take = (n: number) => got.body.subarray(at, (at += n));
    const response = take(responseLength);
    const log = take(logLength);
    const boundMetadata = take(metadataLength);
    const evidence = got.body.subarray(at);
    const exit: StageExit = { ...header.exit };
    // The kernel's OOM killer ends the stage with SIGKILL; the shim, which survives, sees only that.
    if (exit.reason === 'crashed' && exit.signal === 'SIGKILL' && this.proc.oomKills() > 0)
      Object.assign(exit, { reason: 'memory', detail: 'the stage ran out of memory (OOM kill)' });
    // A refused sealed request ran nothing: the enclave stays. Any other failure ends a persistent one.
    if (exit.reason !== 'exit' && exit.reason !== 'refused' && this.image.mode === 'persistent')
      this.proc.kill();
    return {
      response,
      log,
      exit,
      evidence,
      boundMetadata,
      ...(typeof header.evidenceMs === 'number' ? { evidenceMs: header.evidenceMs } : {}),
    };
  }

  /** One request to the shim that is not a stage run (key release): its answer frame. */
  async ask(
    header: HostToShim,
    body?: Uint8Array,
    timeoutMs = 5_000,
  ): Promise<{ header: ShimToHost; body: Buffer }> {
    await this.keys;
    if (this.exit) throw new Error('the enclave has ended');
    const answer = this.next(timeoutMs);
    this.proc.stdin.write(encodeFrame(header, body));
    const got = await answer;
    if ('reason' in got) throw new Error(`the enclave ended: ${describe(got)}`);
    return { header: got.header as ShimToHost, body: got.body };
  }

  /** Asks the shim for the final checkpoint of the enclave's chain, then ends the enclave. */
  async destroy(evidence?: EvidenceContext): Promise<Uint8Array | undefined> {
    let checkpoint: Uint8Array | undefined;
    if (evidence && this.alive) {
      try {
        await this.keys;
        const answer = this.next(2_000);
        this.proc.stdin.write(encodeFrame({ t: 'checkpoint', context: this.context(evidence) }));
        const got = await answer;
        if ('header' in got && (got.header as ShimToHost).t === 'checkpoint') checkpoint = got.body;
      } catch {
        // An enclave that cannot sign its checkpoint is destroyed all the same; its chain stays open.
      }
    }
    this.proc.stdin.end();
    this.proc.kill();
    await this.proc.exited;
    return checkpoint;
  }
}

function describe(exit: SandboxExit): string {
  return (
    exit.detail ?? (exit.signal ? `killed by ${exit.signal}` : `${exit.reason} (exit code ${exit.code})`)
  );
}
