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
   * Native evidence the backend produced itself at create, for backends whose executions are signed by
   * another key than `publicKey` (recorded with the enclave; `attest` is then not called).
   */
  native?: NativeEvidence;
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
  /** Time the enclave reports it spent making `evidence` (part of the run's execute time), ms. */
  evidenceMs?: number;
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
  /** The backend's key broker enclave, started on first use (backends that have one). */
  keyBroker?(): Promise<KeyBroker>;
  /** Gives an enclave a secret the broker released to its encryption key; the enclave opens it itself. */
  provisionSecret?(handle: EnclaveHandle, released: Uint8Array): Promise<{ ok: boolean; detail: string }>;
  /**
   * Starts the stage program of an enclave once it is attested and holds its released secrets (a
   * persistent stage's process would otherwise start without them). Backends without it start the
   * stage at create.
   */
  startStage?(handle: EnclaveHandle): Promise<void>;
  /** Tears the enclave down; with `evidence`, first has it sign a final checkpoint closing its chain. */
  destroy(handle: EnclaveHandle, evidence?: EvidenceContext): Promise<{ checkpoint?: Uint8Array }>;
}

/** The enclave that wants a secret, as a key broker appraises it (an evidence-bundle enclave, plus its cid). */
export interface SecretRequester {
  cid: string;
  eid: number;
  stage: string;
  /** hex */
  publicKey: string;
  /** hex */
  encryptionKey: string;
  nativeFormat: string;
  /** standard base64 */
  nativeEvidence: string;
  measurement: Measurement;
}

/**
 * A key broker running in an enclave of this backend (docs/security.md, "Key release"): tenants seal
 * secrets to its attested encryption key, and it releases one only to an enclave whose native evidence
 * matches the secret's policy, sealed to that enclave's key. The host carries ciphertext only.
 */
export interface KeyBroker {
  handle: EnclaveHandle;
  native: NativeEvidence;
  /** The broker enclave's cid (its handle's), which its native evidence binds. */
  cid: string;
  release(
    sealedSecret: Uint8Array,
    requester: SecretRequester,
  ): Promise<{ ok: true; name: string; released: Uint8Array } | { ok: false; reason: string }>;
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
