/**
 * What the sim security monitor (host side of the adapter) and the in-enclave shim say to each other.
 * Frames use the anchor wire format: [u32 length][u32 header length][header JSON][body].
 */

/** Identity and context of one execution, supplied by the host and bound into the signed evidence. */
export interface ExecutionContext {
  backend: string;
  hardwareProtected: boolean;
  function: string;
  versionDigest: string;
  cid: string;
  eid: number;
  stage: string;
  measurement: { alg: string; value: string };
  /** Hex of the caller's nonce bytes, if any. */
  nonce: string | null;
  /** Hex SHA-256 of the enclave's native evidence. */
  nativeEvidenceDigest: string;
}

export type HostToShim =
  | { t: 'run'; context: ExecutionContext; maxResponseBytes: number }
  | { t: 'checkpoint'; context: ExecutionContext };

export interface ShimExit {
  code: number | null;
  signal: string | null;
  reason: 'exit' | 'output' | 'crashed';
  detail?: string;
}

export type ShimToHost =
  | { t: 'hello'; publicKey: string }
  /** Body: response ‖ log ‖ metadata ‖ evidence, with these lengths. */
  | { t: 'result'; seq: number; exit: ShimExit; lengths: [number, number, number, number] }
  /** Body: the checkpoint evidence. */
  | { t: 'checkpoint'; seq: number }
  /** The stage had ended before this request arrived: nothing ran, nothing was signed. */
  | { t: 'unavailable'; exit: ShimExit }
  | { t: 'fatal'; message: string };
