/**
 * The whole TEE boundary. Everything outside `adapters/` talks to a backend only through this interface
 * and never by its name.
 */

export type StageMode = 'oneshot' | 'persistent';

/** A stage image as the runtime hands it to an adapter: its files are already extracted on local disk. */
export interface StageImage {
  /** Stage name from the manifest. */
  name: string;
  backend: string;
  mode: StageMode;
  /** The image section of the manifest, unchanged. */
  image: StageImageSpec;
  limits: StageLimits;
  /** Local directory holding the version's extracted files (read-only for the stage). */
  rootDir: string;
  /** `sha256:<hex>` over the image files and the canonical stage config. */
  imageDigest: string;
}

export type StageImageSpec =
  | { kind: 'executable'; entry: string; files: string[]; args: string[] }
  | { kind: 'script'; interpreter: 'node' | 'python3' | 'sh'; entry: string; files: string[]; args: string[] }
  | { kind: 'wasm'; entry: string; files: string[]; args: string[] };

export interface StageLimits {
  memoryMb: number;
  cpuMs: number;
  timeoutMs: number;
  maxRequestBytes: number;
  maxResponseBytes: number;
}

/** A backend-specific measurement, e.g. a Keystone SHA3-512 enclave hash or a TA digest. */
export interface Measurement {
  alg: string;
  /** Lower-case hex. */
  value: string;
}

export interface ProbeResult {
  available: boolean;
  /** True only when a real TEE protects the stage from the host. */
  hardwareProtected: boolean;
  detail: string;
}

export interface EnclaveIdentity {
  eid: number;
  cid: string;
}

export interface EnclaveHandle extends EnclaveIdentity {
  stage: string;
  backend: string;
  measurement: Measurement;
  /** The enclave's evidence-signing key (raw Ed25519), generated inside it; absent where a backend signs nothing. */
  publicKey?: Uint8Array;
  /**
   * The enclave's encryption key (raw X25519), generated inside it, where the backend has one. Clients
   * seal requests to it (runtime/seal) once the native evidence binding it has been verified.
   */
  encryptionKey?: Uint8Array;
}

/** What the runtime knows of an execution and wants bound into its evidence. */
export interface EvidenceContext {
  function: string;
  versionDigest: string;
  nonce?: Uint8Array;
  /** SHA-256 of the enclave's native evidence (from `attest`). */
  nativeEvidenceDigest: Uint8Array;
}

export interface StageRun {
  request: Uint8Array;
  /** Sequence number within the enclave, from 1. */
  seq: number;
  signal?: AbortSignal;
  evidence?: EvidenceContext;
}

export interface StageExit {
  code: number | null;
  signal: string | null;
  /** Why the stage ended: a normal exit, or the limit that stopped it. */
  reason: 'exit' | 'timeout' | 'memory' | 'cpu' | 'output' | 'killed' | 'crashed' | 'unavailable' | 'refused';
  detail?: string;
  /** With `refused` (a sealed request the enclave would not open; the stage did not run). */
  refusal?: 'key-unknown' | 'invalid';
}

export interface StageResult {
  response: Uint8Array;
  log: Uint8Array;
  exit: StageExit;
  /** Signed inside the enclave (COSE_Sign1 EAT), over digests of the bytes the stage really saw. */
  evidence?: Uint8Array;
  /** The metadata the enclave signed, exactly as signed. */
  boundMetadata?: Uint8Array;
}

export interface NativeEvidence {
  format: string;
  bytes: Uint8Array;
}

export interface TeeAdapter {
  readonly backend: string;
  probe(): Promise<ProbeResult>;
  measure(stage: StageImage): Promise<Measurement>;
  create(stage: StageImage, identity: EnclaveIdentity): Promise<EnclaveHandle>;
  run(handle: EnclaveHandle, request: StageRun): Promise<StageResult>;
  attest(handle: EnclaveHandle, binding: Uint8Array): Promise<NativeEvidence>;
  /** The root a verifier must trust for this backend's native evidence, if this host has one. */
  trustAnchor?(): Record<string, unknown> | undefined;
  /** Replaces the backend's software root with a new one, where it has one; returns the new anchor. */
  rotateTrustAnchor?(): Record<string, unknown>;
  /** Tears the enclave down; with `evidence`, first has it sign a final checkpoint closing its chain. */
  destroy(handle: EnclaveHandle, evidence?: EvidenceContext): Promise<{ checkpoint?: Uint8Array }>;
}

export class BackendUnavailableError extends Error {
  constructor(
    readonly backend: string,
    message: string,
  ) {
    super(message);
    this.name = 'BackendUnavailableError';
  }
}
