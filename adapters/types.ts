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
}

export interface StageRun {
  request: Uint8Array;
  /** Sequence number within the enclave (always 0 for oneshot). */
  seq: number;
  signal?: AbortSignal;
}

export interface StageExit {
  code: number | null;
  signal: string | null;
  /** Why the stage ended: a normal exit, or the limit that stopped it. */
  reason: 'exit' | 'timeout' | 'memory' | 'cpu' | 'output' | 'killed' | 'crashed' | 'unavailable';
  detail?: string;
}

export interface StageResult {
  response: Uint8Array;
  log: Uint8Array;
  exit: StageExit;
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
  destroy(handle: EnclaveHandle): Promise<void>;
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
