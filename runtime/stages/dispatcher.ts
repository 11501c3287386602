import { eq } from 'drizzle-orm';
import {
  BackendUnavailableError,
  getAdapter,
  type EnclaveHandle,
  type Measurement,
  type StageExit,
  type StageImage,
  type TeeAdapter,
} from '../../adapters/index.ts';
import { enclaves, stageExecutions } from '../../db/schema.ts';
import type { GroupCommitter, Write } from '../artifacts/group-commit.ts';
import { LOG_LIMIT, storeBytes } from '../artifacts/records.ts';
import { newId } from '../ids.ts';
import type { EidAllocator } from './eid-allocator.ts';
import type { RequestValidator } from './request-schema.ts';

export type StageErrorCode =
  | 'unknown-stage'
  | 'request-too-large'
  | 'request-invalid'
  | 'stage-failed'
  | 'response-too-large'
  | 'backend-unavailable'
  | 'stopped';

/** A stage request that did not produce a response; `status` is the HTTP status it maps to. */
export class StageError extends Error {
  constructor(
    readonly code: StageErrorCode,
    message: string,
    readonly status: number,
    readonly eid?: number,
  ) {
    super(message);
    this.name = 'StageError';
  }
}

export interface StageBinding {
  image: StageImage;
  validate: RequestValidator | null;
}

export interface StageTimings {
  validate: number;
  allocate: number;
  dispatch: number;
  execute: number;
}

export interface StageOutcome {
  executionId: string;
  stage: string;
  eid: number;
  seq: number;
  response: Uint8Array;
  exit: StageExit;
  timings: StageTimings;
  /** Resolves when the execution's artifacts are durable. */
  durable: Promise<void>;
}

interface Enclave {
  handle: EnclaveHandle;
  seq: number;
  /** Persistent enclaves serve one request at a time, in order. */
  tail: Promise<unknown>;
  alive: boolean;
}

const ms = (from: number) => +(performance.now() - from).toFixed(3);

/**
 * The stage requests of one composite instance: validation, EID allocation, dispatch through the
 * adapter, and artifact persistence. Persistent stages keep one enclave per instance (re-created if it
 * dies); oneshot stages get a fresh enclave, and so a fresh EID, for every request.
 */
export class InstanceStages {
  private readonly persistent = new Map<string, Enclave>();
  private readonly live = new Set<AbortController>();
  private stopped = false;

  constructor(
    private readonly cid: string,
    private readonly bindings: ReadonlyMap<string, StageBinding>,
    private readonly eids: EidAllocator,
    private readonly committer: GroupCommitter,
    private readonly adapterFor: (backend: string) => TeeAdapter = getAdapter,
  ) {}

  /** Creates the enclaves of persistent stages; called when the instance is created. */
  async prepare(): Promise<void> {
    for (const [name, binding] of this.bindings) {
      if (binding.image.mode === 'persistent')
        this.persistent.set(name, await this.createEnclave(binding.image, true));
    }
  }

  enclaveIds(): { stage: string; eid: number }[] {
    return [...this.persistent].map(([stage, e]) => ({ stage, eid: e.handle.eid }));
  }

  private async createEnclave(image: StageImage, record: boolean): Promise<Enclave> {
    const adapter = this.adapterFor(image.backend);
    const eid = await this.eids.allocate();
    let handle: EnclaveHandle;
    try {
      handle = await adapter.create(image, { eid, cid: this.cid });
    } catch (error) {
      if (error instanceof BackendUnavailableError)
        throw new StageError('backend-unavailable', error.message, 503, eid);
      throw error;
    }
    const enclave = { handle, seq: 0, tail: Promise.resolve(), alive: true };
    if (record) await this.committer.submit(enclaveRecord(handle));
    return enclave;
  }

  async invoke(
    invocationId: string,
    stageName: string,
    request: Uint8Array,
    options: { nonce?: string } = {},
  ): Promise<StageOutcome> {
    if (this.stopped) throw new StageError('stopped', `instance ${this.cid} is stopped`, 503);
    const t0 = performance.now();
    const binding = this.bindings.get(stageName);
    if (!binding) {
      throw new StageError(
        'unknown-stage',
        `no stage "${stageName}"; this function has: ${[...this.bindings.keys()].join(', ')}`,
        400,
      );
    }
    const { image, validate } = binding;
    if (request.byteLength > image.limits.maxRequestBytes) {
      throw new StageError(
        'request-too-large',
        `the request to stage "${stageName}" is ${request.byteLength} bytes; its limit is ${image.limits.maxRequestBytes}`,
        413,
      );
    }
    const invalid = validate?.(request);
    if (invalid)
      throw new StageError(
        'request-invalid',
        `the request to stage "${stageName}" fails its schema: ${invalid}`,
        422,
      );
    const validateMs = ms(t0);

    const t1 = performance.now();
    let enclave: Enclave;
    const oneshot = image.mode === 'oneshot';
    if (oneshot) {
      enclave = await this.createEnclave(image, false);
    } else {
      enclave = this.persistent.get(stageName)!;
      if (!enclave?.alive) {
        enclave = await this.createEnclave(image, true);
        this.persistent.set(stageName, enclave);
      }
    }
    const allocateMs = ms(t1);
    const adapter = this.adapterFor(image.backend);
    const abort = new AbortController();
    this.live.add(abort);
    const t2 = performance.now();
    let dispatchMs = 0;
    let executeMs = 0;
    let seq = 0;
    let result;
    try {
      const run = async () => {
        dispatchMs = ms(t2);
        seq = oneshot ? 0 : ++enclave.seq;
        const t3 = performance.now();
        try {
          return await adapter.run(enclave.handle, { request, seq, signal: abort.signal });
        } finally {
          executeMs = ms(t3);
        }
      };
      const turn = enclave.tail.then(run, run);
      enclave.tail = turn.catch(() => undefined);
      result = await turn;
    } finally {
      this.live.delete(abort);
    }
    const ok = result.exit.reason === 'exit' && result.exit.code === 0;
    if (!oneshot && !ok) enclave.alive = false;
    if (oneshot) await adapter.destroy(enclave.handle).catch(() => undefined);

    const executionId = newId('sx');
    const timings = { validate: validateMs, allocate: allocateMs, dispatch: dispatchMs, execute: executeMs };
    const durable = this.persist(
      executionId,
      invocationId,
      enclave.handle,
      seq,
      image,
      request,
      result,
      timings,
      oneshot,
      options.nonce,
    );
    const outcome = {
      executionId,
      stage: stageName,
      eid: enclave.handle.eid,
      seq,
      response: result.response,
      exit: result.exit,
      timings,
      durable,
    };
    durable.catch(() => undefined);
    if (!ok) {
      const limit = result.exit.reason === 'output';
      throw Object.assign(
        new StageError(
          limit ? 'response-too-large' : 'stage-failed',
          limit
            ? `stage "${stageName}" produced more than its ${image.limits.maxResponseBytes}-byte response limit`
            : `stage "${stageName}" failed (${describeExit(result.exit)})`,
          result.exit.reason === 'timeout' ? 504 : 502,
          enclave.handle.eid,
        ),
        { outcome },
      );
    }
    return outcome;
  }

  private persist(
    executionId: string,
    invocationId: string,
    handle: EnclaveHandle,
    seq: number,
    image: StageImage,
    request: Uint8Array,
    result: { response: Uint8Array; log: Uint8Array; exit: StageExit },
    timings: StageTimings,
    oneshot: boolean,
    nonce: string | undefined,
  ): Promise<void> {
    const writes: Write[] = [];
    if (oneshot) writes.push(enclaveRecord(handle, Date.now()));
    const req = storeBytes(request, writes);
    const res = storeBytes(result.response, writes);
    const log = Buffer.from(result.log.subarray(0, LOG_LIMIT));
    const logDigest = storeBytes(log, []).digest;
    const metadata = {
      cid: this.cid,
      eid: handle.eid,
      seq,
      stage: image.name,
      backend: image.backend,
      mode: image.mode,
      imageDigest: image.imageDigest,
      measurement: handle.measurement,
      requestBytes: req.size,
      responseBytes: res.size,
      logBytes: result.log.byteLength,
      logTruncated: result.log.byteLength > LOG_LIMIT,
      requestDigest: req.digest,
      responseDigest: res.digest,
      logDigest,
      exit: result.exit,
      nonce: nonce ?? null,
      timings,
    };
    writes.push((tx) =>
      tx.insert(stageExecutions).values({
        id: executionId,
        invocationId,
        cid: this.cid,
        eid: handle.eid,
        seq,
        stage: image.name,
        backend: image.backend,
        measurement: `${handle.measurement.alg}:${handle.measurement.value}`,
        requestDigest: req.digest,
        requestInline: req.inline,
        requestBlob: req.blob,
        responseDigest: res.digest,
        responseInline: res.inline,
        responseBlob: res.blob,
        log,
        logDigest,
        metadata,
        exitReason: result.exit.reason,
        exitCode: result.exit.code,
        evidence: null,
      }),
    );
    writes.push((tx) => tx.update(enclaves).set({ lastSeq: seq }).where(eq(enclaves.eid, handle.eid)));
    return this.committer.submit(async (tx) => {
      for (const write of writes) await write(tx);
    });
  }

  /** Stops live stage executions (kill). The instance serves nothing more afterwards. */
  abort(): void {
    this.stopped = true;
    for (const controller of this.live) controller.abort();
  }

  /** Destroys every enclave of the instance and records when. */
  async destroy(): Promise<void> {
    this.abort();
    const all = [...this.persistent.values()];
    this.persistent.clear();
    await Promise.all(
      all.map(async (e) => {
        await this.adapterFor(e.handle.backend)
          .destroy(e.handle)
          .catch(() => undefined);
        await this.committer.submit((tx) =>
          tx.update(enclaves).set({ destroyedAt: Date.now() }).where(eq(enclaves.eid, e.handle.eid)),
        );
      }),
    );
  }
}

function enclaveRecord(handle: EnclaveHandle, destroyedAt: number | null = null): Write {
  return (tx) =>
    tx.insert(enclaves).values({
      eid: handle.eid,
      cid: handle.cid,
      stage: handle.stage,
      backend: handle.backend,
      measurementAlg: handle.measurement.alg,
      measurement: handle.measurement.value,
      destroyedAt,
    });
}

export function describeExit(exit: StageExit): string {
  const base =
    exit.reason === 'exit'
      ? `exit code ${exit.code}`
      : exit.reason === 'killed'
        ? `killed${exit.signal ? ` by ${exit.signal}` : ''}`
        : exit.reason;
  return exit.detail ? `${base}: ${exit.detail}` : base;
}

export type { Measurement };
