import { encodeDeterministic } from './cbor.ts';
import { EvidenceInputError } from './errors.ts';
import { sha256, sha512 } from './keys.ts';

export const ENCLAVE_BINDING_LABEL = 'ebcc-enclave-binding/1';
export const GENESIS_LABEL = 'ebcc-genesis/1';

export interface EnclaveBindingInput {
  /** Raw 32-byte Ed25519 public key of the enclave's evidence key. */
  publicKey: Uint8Array;
  /** Raw 32-byte X25519 public key for encrypting to the enclave, if it has one. */
  encryptionKey?: Uint8Array;
  cid: string;
  eid: number;
  stage: string;
}

function checkEid(eid: number): void {
  if (!Number.isSafeInteger(eid) || eid < 0)
    throw new EvidenceInputError(`eid must be a non-negative integer`);
}

/**
 * The 64 bytes an enclave puts in its native report's data (sized for SGX/TDX report data):
 * SHA-512 over the deterministic CBOR array
 * `["ebcc-enclave-binding/1", publicKey, encryptionKey / null, cid, eid, stage]`.
 */
export function enclaveBinding(input: EnclaveBindingInput): Buffer {
  if (input.publicKey.length !== 32) throw new EvidenceInputError('publicKey must be 32 bytes');
  if (input.encryptionKey !== undefined && input.encryptionKey.length !== 32) {
    throw new EvidenceInputError('encryptionKey must be 32 bytes');
  }
  checkEid(input.eid);
  return sha512(
    encodeDeterministic([
      ENCLAVE_BINDING_LABEL,
      input.publicKey,
      input.encryptionKey ?? null,
      input.cid,
      input.eid,
      input.stage,
    ]),
  );
}

/** `prev` of an enclave's first evidence entry: SHA-256(CBOR ["ebcc-genesis/1", eid, publicKey]). */
export function genesisDigest(eid: number, publicKey: Uint8Array): Buffer {
  if (publicKey.length !== 32) throw new EvidenceInputError('publicKey must be 32 bytes');
  checkEid(eid);
  return sha256(encodeDeterministic([GENESIS_LABEL, eid, publicKey]));
}
