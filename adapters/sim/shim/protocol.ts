import type { Requester } from '../../../runtime/keyrelease/release.ts';

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
  | { t: 'checkpoint'; context: ExecutionContext }
  /** Key broker only. Body: the tenant's sealed secret; the requester is the enclave that wants it. */
  | { t: 'release'; requester: Requester }
  /** Body: a secret the broker released to this enclave's encryption key. */
  | { t: 'secret'; cid: string; eid: number; stage: string }
  /** The enclave is attested and holds its secrets: start the stage program (persistent stages). */
  | { t: 'start' };

export interface ShimExit {
  code: number | null;
  signal: string | null;
  /** `refused`: a sealed request the enclave would not open; the stage did not run. */
  reason: 'exit' | 'output' | 'crashed' | 'refused';
  detail?: string;
  /** With `refused`: `key-unknown` (sealed to another enclave's key) or `invalid`. */
  refusal?: 'key-unknown' | 'invalid';
}

export type ShimToHost =
  /** The enclave's evidence key (Ed25519) and encryption key (X25519), raw, in hex. */
  | { t: 'hello'; publicKey: string; encryptionKey: string }
  /** Body: response ‖ log ‖ metadata ‖ evidence, with these lengths. */
  | {
      t: 'result';
      seq: number;
      exit: ShimExit;
      lengths: [number, number, number, number];
      /** How long the enclave took to hash and sign this execution's evidence. */
      evidenceMs?: number;
    }
  /** Body: the checkpoint evidence. */
  | { t: 'checkpoint'; seq: number }
  /** The stage had ended before this request arrived: nothing ran, nothing was signed. */
  | { t: 'unavailable'; exit: ShimExit }
  | { t: 'fatal'; message: string }
  /** Body (when ok): the released secret, sealed to the requester's key. */
  | { t: 'released'; ok: true; name: string }
  | { t: 'released'; ok: false; reason: string }
  | { t: 'secret-opened'; name: string }
  | { t: 'secret-refused'; reason: string }
  /** The names of the secrets the stage program was started with. */
  | { t: 'started'; secrets: string[] };
