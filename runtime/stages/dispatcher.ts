import { eq } from 'drizzle-orm';
import { createHash } from 'node:crypto';
import {
  BackendUnavailableError,
  getAdapter,
  type EnclaveHandle,
  type EvidenceContext,
  type Measurement,
  type NativeEvidence,
  type StageExit,
  type StageImage,
  type StageResult,
  type TeeAdapter,
} from '../../adapters/index.ts';
import { enclaves, stageExecutions } from '../../db/schema.ts';
import type { GroupCommitter, InvocationBatch, Write } from '../artifacts/group-commit.ts';
import { LOG_LIMIT, storeBytes } from '../artifacts/records.ts';
import { artifactSealer, type ArtifactSealing } from '../artifacts/sealing.ts';
import type { DataKey } from '../keys/data-keys.ts';
import { enclaveBinding } from '../evidence/binding.ts';
import { parseSealedRequest, SealError } from '../seal/envelope.ts';
import { newId } from '../ids.ts';
import { SecretReleaseError } from '../keyrelease/service.ts';
import { sha256Digest } from '../registry/digest.ts';
import type { EidAllocator } from './eid-allocator.ts';
import type { RequestValidator } from './request-schema.ts';

export type StageErrorCode =
  | 'unknown-stage'
  | 'request-too-large'
  | 'request-invalid'
  | 'stage-failed'
  | 'response-too-large'
  | 'backend-unavailable'
  | 'enclave-start-failed'
  | 'secret-release-refused'
  | 'stopped'
  | 'request-not-sealed'
  | 'sealed-key-unknown'
  | 'sealed-request-invalid';

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
  /** Which artifacts are sealed at rest with the tenant's data key; absent: all stored in clear. */
  atRest?: ArtifactSealing;
  /** The manifest's sealing policy for the stage. */
  sealing?: { required: boolean; publicFields: string[] };
}

/** What a client needs to seal requests to a stage's current enclave (GET …/stages/:stage/key). */
export interface EnclaveKey {
  cid: string;
  handle: EnclaveHandle;
  native: NativeEvidence;
}

export interface StageTimings {
  validate: number;
  allocate: number;
  dispatch: number;
  execute: number;
  /** The part of `execute` the enclave reports for making the evidence, where the backend reports it. */
  evidence?: number;
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
  alive: boolean;
  /** The backend's native evidence for the enclave's key, and its digest (bound into every entry). */
  native?: NativeEvidence;
  nativeDigest?: Buffer;
}

/** Which function version an instance runs: bound into every piece of evidence it produces. */
export interface InstanceIdentity {
  function: string;
  versionDigest: string;
}

const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest();
const NONCE = /^(?:[0-9a-fA-F]{2}){8,64}$/;

const ms = (from: number) => +(performance.now() - from).toFixed(3);

/**
 * The stage requests of one composite instance: validation, EID allocation, dispatch through the
 * adapter, and artifact persistence. Persistent stages keep one enclave per instance (re-created if it
 * dies); oneshot stages get a fresh enclave, and so a fresh EID, for every request.
 */
export class InstanceStages {
  private readonly persistent = new Map<string, Enclave>();
  private readonly live = new Set<AbortController>();
  /** The tail of each persistent stage's request queue. */
  private readonly turns = new Map<string, Promise<unknown>>();
  /** Dead persistent enclaves being torn down. */
  private readonly retiring = new Set<Promise<void>>();
  private stopped = false;

  constructor(
    private readonly cid: string,
    private readonly identity: InstanceIdentity,
    private readonly bindings: ReadonlyMap<string, StageBinding>,
    private readonly eids: EidAllocator,
    private readonly committer: GroupCommitter,
    private readonly adapterFor: (backend: string) => TeeAdapter = getAdapter,
    /**
     * Called once an enclave is attested, before its stage program starts (key release hands it its
     * secrets). A rejection fails the enclave's start; its message says why.
     */
    private readonly onAttested?: (enclave: EnclaveKey) => Promise<unknown>,
  ) {}

  /** Creates the enclaves of persistent stages; called when the instance is created. */
  async prepare(): Promise<void> {
    for (const [name, binding] of this.bindings) {
      if (binding.image.mode !== 'persistent') continue;
      const enclave = await this.createEnclave(binding.image, true);
      if (this.stopped) {
        // Destroyed while this enclave was being made: it must not outlive the instance.
        await this.committer.submit(markDestroyed(enclave.handle.eid, await this.destroyEnclave(enclave)));
        throw new StageError('stopped', `instance ${this.cid} is stopped`, 503);
      }
      this.persistent.set(name, enclave);
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
      // An enclave that dies while starting (its sandbox killed, say) is a failure of this attempt only.
      throw new StageError('enclave-start-failed', (error as Error).message, 503, eid);
    }
    const enclave: Enclave = { handle, seq: 0, alive: true };
    if (handle.native) {
      // The backend attested the enclave itself at create (its executions are signed by another key).
      enclave.native = handle.native;
      enclave.nativeDigest = sha256(handle.native.bytes);
    }
    if (handle.publicKey) {
      // The enclave made its key inside itself; its native evidence binds that key, and which enclave
      // it is, to its measurement. Every execution it signs then refers to this by digest.
      const binding = enclaveBinding({
        publicKey: handle.publicKey,
        ...(handle.encryptionKey ? { encryptionKey: handle.encryptionKey } : {}),
        cid: this.cid,
        eid,
        stage: image.name,
      });
      try {
        enclave.native = await adapter.attest(handle, binding);
      } catch (error) {
        await adapter.destroy(handle).catch(() => undefined);
        throw error;
      }
      enclave.nativeDigest = sha256(enclave.native.bytes);
    }
    try {
      // An enclave without native evidence is offered too, so that a secret it declared is refused.
      const native = enclave.native ?? { format: 'none', bytes: new Uint8Array(0) };
      await this.onAttested?.({ cid: this.cid, handle, native });
    } catch (error) {
      // Never a silent fallback: a stage that declared a secret it was refused does not run at all.
      await adapter.destroy(handle).catch(() => undefined);
      const code = error instanceof SecretReleaseError ? 'secret-release-refused' : 'enclave-start-failed';
      throw new StageError(code, (error as Error).message, 503, eid);
    }
    try {
      // Only now, with its secrets inside, does the enclave start the stage program.
      await adapter.startStage?.(handle);
    } catch (error) {
      await adapter.destroy(handle).catch(() => undefined);
      throw new StageError('enclave-start-failed', (error as Error).message, 503, eid);
    }
    if (record) await this.committer.submit(enclaveRecord(enclave));
    return enclave;
  }

  private evidenceContext(enclave: Enclave, nonce?: Uint8Array): EvidenceContext | undefined {
    if (!enclave.nativeDigest) return undefined;
    return { ...this.identity, nonce, nativeEvidenceDigest: enclave.nativeDigest };
  }

  /** Destroys an enclave, keeping its final checkpoint (which closes its chain) if it signs one. */
  private async destroyEnclave(enclave: Enclave): Promise<Buffer | null> {
    const { checkpoint } = await this.adapterFor(enclave.handle.backend)
      .destroy(enclave.handle, this.evidenceContext(enclave))
      .catch(() => ({ checkpoint: undefined }));
    return checkpoint ? Buffer.from(checkpoint) : null;
  }

  /** The stage's persistent enclave, re-created if the previous one died. */
  private async livePersistent(stageName: string, image: StageImage): Promise<Enclave> {
    const current = this.persistent.get(stageName);
    if (current?.alive) return current;
    const enclave = await this.createEnclave(image, true);
    if (this.stopped) {
      // The instance stopped while the enclave was being made: it must not outlive it.
      await this.committer.submit(markDestroyed(enclave.handle.eid, await this.destroyEnclave(enclave)));
      throw new StageError('stopped', `instance ${this.cid} is stopped`, 503);
    }
    this.persistent.set(stageName, enclave);
    return enclave;
  }

  /** A persistent enclave that failed a request is not used again: it is destroyed and recorded so. */
  private retire(stageName: string, enclave: Enclave): void {
    enclave.alive = false;
    if (this.persistent.get(stageName) === enclave) this.persistent.delete(stageName);
    const done = (async () => {
      const checkpoint = await this.destroyEnclave(enclave);
      await this.committer.submit(markDestroyed(enclave.handle.eid, checkpoint)).catch(() => undefined);
    })();
    this.retiring.add(done);
    void done.finally(() => this.retiring.delete(done));
  }

  /**
   * The encryption key of the stage's persistent enclave (made if need be), with the native evidence
   * that binds it. Oneshot stages have none: each request gets a fresh enclave, whose key nobody can
   * know in advance.
   */
  async enclaveKey(stageName: string): Promise<EnclaveKey> {
    const binding = this.bindings.get(stageName);
    if (!binding)
      throw new StageError(
        'unknown-stage',
        `no stage "${stageName}"; this function has: ${[...this.bindings.keys()].join(', ')}`,
        404,
      );
    if (binding.image.mode !== 'persistent')
      throw new StageError(
        'request-invalid',
        `stage "${stageName}" is oneshot: every request gets a fresh enclave, so there is no key to seal to in advance; sealing needs a persistent stage`,
        409,
      );
    // Taken in the stage's request queue, so that it is the enclave the next request will reach.
    const turn = (this.turns.get(stageName) ?? Promise.resolve()).then(() =>
      this.livePersistent(stageName, binding.image),
    );
    this.turns.set(
      stageName,
      turn.catch(() => undefined),
    );
    const enclave = await turn;
    if (!enclave.native || !enclave.handle.encryptionKey)
      throw new StageError(
        'backend-unavailable',
        `the ${binding.image.backend} backend gives stage "${stageName}" no attested encryption key`,
        501,
      );
    return { cid: this.cid, handle: enclave.handle, native: enclave.native };
  }

  async invoke(
    invocationId: string,
    stageName: string,
    request: Uint8Array,
    /** `batch`: persist with the invocation's other writes (the caller commits them) instead of alone. */
    options: { nonce?: string; batch?: InvocationBatch } = {},
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
    const { image, validate, sealing } = binding;
    if (request.byteLength > image.limits.maxRequestBytes) {
      throw new StageError(
        'request-too-large',
        `the request to stage "${stageName}" is ${request.byteLength} bytes; its limit is ${image.limits.maxRequestBytes}`,
        413,
      );
    }
    // A sealed request is opaque here: its schema is the stage's to check on the plaintext, inside the
    // enclave. The host checks only the envelope and which fields it shows in clear.
    let sealed;
    try {
      sealed = parseSealedRequest(request);
    } catch (error) {
      if (!(error instanceof SealError)) throw error;
      throw new StageError('sealed-request-invalid', error.message, 400);
    }
    if (!sealed && sealing?.required)
      throw new StageError(
        'request-not-sealed',
        `stage "${stageName}" takes sealed requests only (its manifest says sealing.required)`,
        422,
      );
    const shown = Object.keys(sealed?.public ?? {}).filter((k) => !sealing?.publicFields.includes(k));
    if (shown.length)
      throw new StageError(
        'sealed-request-invalid',
        `the sealed request shows field(s) ${shown.join(', ')} in clear; the manifest of stage "${stageName}" allows ${sealing?.publicFields.length ? sealing.publicFields.join(', ') : 'none'}`,
        422,
      );
    const invalid = sealed ? null : validate?.(request);
    if (invalid)
      throw new StageError(
        'request-invalid',
        `the request to stage "${stageName}" fails its schema: ${invalid}`,
        422,
      );
    if (options.nonce !== undefined && !NONCE.test(options.nonce)) {
      throw new StageError('request-invalid', 'the nonce must be 8 to 64 bytes, written as hex', 400);
    }
    const nonce = options.nonce === undefined ? undefined : Buffer.from(options.nonce, 'hex');
    // The data key is fetched before the stage runs: without it nothing is run that could not be stored sealed.
    let dataKey: DataKey | undefined;
    if (binding.atRest?.artifacts.size) {
      try {
        dataKey = await binding.atRest.dataKey();
      } catch (error) {
        throw new StageError(
          'backend-unavailable',
          `the tenant's data key is unavailable, so stage "${stageName}" cannot seal its artifacts: ${(error as Error).message}`,
          503,
        );
      }
    }
    const validateMs = ms(t0);

    const t1 = performance.now();
    const oneshot = image.mode === 'oneshot';
    const adapter = this.adapterFor(image.backend);
    const abort = new AbortController();
    this.live.add(abort);
    let allocateMs = 0;
    let dispatchMs = 0;
    let executeMs = 0;
    let seq = 0;
    let enclave!: Enclave;
    let result;
    const execute = async () => {
      seq = ++enclave.seq;
      const t3 = performance.now();
      try {
        return await adapter.run(enclave.handle, {
          request,
          seq,
          signal: abort.signal,
          evidence: this.evidenceContext(enclave, nonce),
        });
      } finally {
        executeMs = ms(t3);
      }
    };
    try {
      if (oneshot) {
        enclave = await this.createEnclave(image, false);
        allocateMs = ms(t1);
        result = await execute();
      } else {
        // A persistent stage serves one request at a time, in order. The enclave is looked up when the
        // request's turn comes, so that requests queued behind one that killed it go to its replacement.
        const turn = (this.turns.get(stageName) ?? Promise.resolve()).then(async () => {
          dispatchMs = ms(t1);
          if (this.stopped) throw new StageError('stopped', `instance ${this.cid} is stopped`, 503);
          const t2 = performance.now();
          enclave = await this.livePersistent(stageName, image);
          allocateMs = ms(t2);
          let done = await execute();
          if (done.exit.reason === 'unavailable') {
            // The enclave had ended while idle and never saw this request: a new one serves it.
            this.retire(stageName, enclave);
            const t4 = performance.now();
            enclave = await this.livePersistent(stageName, image);
            allocateMs += ms(t4);
            done = await execute();
          }
          // Decided before the next request's turn: a failed enclave serves nothing more. A refused
          // sealed request ran nothing, so the enclave stays.
          if (!succeeded(done.exit) && done.exit.reason !== 'refused') this.retire(stageName, enclave);
          return done;
        });
        this.turns.set(
          stageName,
          turn.catch(() => undefined),
        );
        result = await turn;
      }
    } finally {
      this.live.delete(abort);
    }
    const ok = succeeded(result.exit);
    const checkpoint = oneshot ? await this.destroyEnclave(enclave) : null;

    const executionId = newId('sx');
    const timings: StageTimings = {
      validate: validateMs,
      allocate: allocateMs,
      dispatch: dispatchMs,
      execute: executeMs,
      ...(result.evidenceMs === undefined ? {} : { evidence: result.evidenceMs }),
    };
    const durable = this.persist(
      executionId,
      invocationId,
      enclave,
      seq,
      image,
      request,
      result,
      timings,
      oneshot ? { checkpoint } : null,
      options.nonce,
      options.batch,
      dataKey && binding.atRest ? { key: dataKey, artifacts: binding.atRest.artifacts } : undefined,
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
    if (!ok && result.exit.reason === 'refused') {
      const unknownKey = result.exit.refusal === 'key-unknown';
      throw Object.assign(
        new StageError(
          unknownKey ? 'sealed-key-unknown' : 'sealed-request-invalid',
          `stage "${stageName}" refused the sealed request: ${result.exit.detail ?? 'it does not open'}`,
          unknownKey ? 421 : 400,
          enclave.handle.eid,
        ),
        { outcome },
      );
    }
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
    enclave: Enclave,
    seq: number,
    image: StageImage,
    request: Uint8Array,
    result: StageResult,
    timings: StageTimings,
    /** For a oneshot enclave, destroyed already: its record is written with the execution. */
    oneshot: { checkpoint: Buffer | null } | null,
    nonce: string | undefined,
    batch: InvocationBatch | undefined,
    atRest: { key: DataKey; artifacts: ArtifactSealing['artifacts'] } | undefined,
  ): Promise<void> {
    const { handle } = enclave;
    const writes: Write[] = [];
    if (oneshot) writes.push(enclaveRecord(enclave, Date.now(), oneshot.checkpoint));
    const sealer = (artifact: 'request' | 'response' | 'log') =>
      atRest?.artifacts.has(artifact) ? artifactSealer(atRest.key.key, executionId, artifact) : undefined;
    const req = storeBytes(request, writes, sealer('request'));
    const res = storeBytes(result.response, writes, sealer('response'));
    const logPlain = Buffer.from(result.log.subarray(0, LOG_LIMIT));
    const logDigest = sha256Digest(logPlain);
    const sealLog = sealer('log');
    // The log always stays in its row, sealed or not.
    const log = sealLog ? sealLog(logDigest, logPlain) : logPlain;
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
        evidence: result.evidence ? Buffer.from(result.evidence) : null,
        boundMetadata: result.boundMetadata ? Buffer.from(result.boundMetadata) : null,
        sealedWith: atRest?.key.id ?? null,
        sealed: atRest ? [...atRest.artifacts] : null,
      }),
    );
    const chainHead = result.evidence ? sha256(result.evidence).toString('hex') : null;
    writes.push((tx) =>
      tx.update(enclaves).set({ lastSeq: seq, chainHead }).where(eq(enclaves.eid, handle.eid)),
    );
    const write: Write = async (tx) => {
      for (const w of writes) await w(tx);
    };
    return batch ? batch.add(write) : this.committer.submit(write);
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
    await Promise.all([
      ...this.retiring,
      ...all.map(async (e) => {
        await this.committer.submit(markDestroyed(e.handle.eid, await this.destroyEnclave(e)));
      }),
    ]);
  }
}

function markDestroyed(eid: number, checkpoint: Buffer | null = null): Write {
  return (tx) =>
    tx
      .update(enclaves)
      .set({ destroyedAt: Date.now(), ...(checkpoint ? { finalCheckpoint: checkpoint } : {}) })
      .where(eq(enclaves.eid, eid));
}

function enclaveRecord(
  { handle, native }: Enclave,
  destroyedAt: number | null = null,
  checkpoint: Buffer | null = null,
): Write {
  return (tx) =>
    tx.insert(enclaves).values({
      eid: handle.eid,
      cid: handle.cid,
      stage: handle.stage,
      backend: handle.backend,
      measurementAlg: handle.measurement.alg,
      measurement: handle.measurement.value,
      publicKey: handle.publicKey ? Buffer.from(handle.publicKey) : null,
      encryptionKey: handle.encryptionKey ? Buffer.from(handle.encryptionKey) : null,
      nativeEvidence: native ? Buffer.from(native.bytes) : null,
      nativeFormat: native?.format ?? null,
      finalCheckpoint: checkpoint,
      destroyedAt,
    });
}

const succeeded = (exit: StageExit) => exit.reason === 'exit' && exit.code === 0;

export function describeExit(exit: StageExit): string {
  const base =
    exit.reason === 'exit'
      ? exit.signal
        ? `killed by ${exit.signal}`
        : `exit code ${exit.code}`
      : exit.reason === 'killed' || exit.reason === 'crashed'
        ? `${exit.reason}${exit.signal ? ` by ${exit.signal}` : ''}`
        : exit.reason;
  return exit.detail ? `${base}: ${exit.detail}` : base;
}

export type { Measurement };
