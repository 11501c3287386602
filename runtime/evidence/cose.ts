import type { KeyObject } from 'node:crypto';
import { asInteger, decodeCbor } from './cbor.ts';
import { EvidenceFormatError } from './errors.ts';
import { ed25519Sign, ed25519Verify } from './keys.ts';

/**
 * COSE_Sign1 (RFC 9052 section 4.2) with EdDSA (alg -8, RFC 9053) and nothing else:
 *
 *   18([ h'A10127' ({1: -8}), {4: kid}, payload, signature ])
 *
 * Built byte by byte so the output is deterministic; decoding is strict and accepts exactly this shape.
 */
export const COSE_SIGN1_TAG = 18;
export const COSE_ALG_EDDSA = -8;
const HEADER_ALG = 1;
const HEADER_CRIT = 2;
const HEADER_KID = 4;

/** The protected header `{1: -8}` as its deterministic CBOR encoding. */
export const PROTECTED_EDDSA = Buffer.from([0xa1, 0x01, 0x27]);
const SIGNATURE1 = Buffer.from([0x6a, ...Buffer.from('Signature1')]);

function bstrHead(length: number): Buffer {
  if (length < 24) return Buffer.from([0x40 | length]);
  if (length < 0x100) return Buffer.from([0x58, length]);
  if (length < 0x10000) return Buffer.from([0x59, length >> 8, length & 0xff]);
  const head = Buffer.alloc(5);
  head[0] = 0x5a;
  head.writeUInt32BE(length, 1);
  return head;
}

/** Sig_structure = ["Signature1", body_protected, external_aad = h'', payload]. */
export function sigStructure(protectedBytes: Uint8Array, payload: Uint8Array): Buffer {
  return Buffer.concat([
    Buffer.from([0x84]),
    SIGNATURE1,
    bstrHead(protectedBytes.length),
    protectedBytes,
    Buffer.from([0x40]),
    bstrHead(payload.length),
    payload,
  ]);
}

function assemble(
  protectedBytes: Uint8Array,
  kid: Uint8Array,
  payload: Uint8Array,
  signature: Uint8Array,
): Buffer {
  return Buffer.concat([
    Buffer.from([0xc0 | COSE_SIGN1_TAG, 0x84]),
    bstrHead(protectedBytes.length),
    protectedBytes,
    Buffer.from([0xa1, HEADER_KID]),
    bstrHead(kid.length),
    kid,
    bstrHead(payload.length),
    payload,
    bstrHead(signature.length),
    signature,
  ]);
}

/** Sign `payload` as a tagged COSE_Sign1 with EdDSA and the given `kid` (unprotected header 4). */
export function coseSign1(payload: Uint8Array, privateKey: KeyObject, kid: Uint8Array): Buffer {
  const signature = ed25519Sign(privateKey, sigStructure(PROTECTED_EDDSA, payload));
  return assemble(PROTECTED_EDDSA, kid, payload, signature);
}

export interface CoseSign1 {
  /** The protected header bucket as its bstr contents (always `A10127`). */
  protected: Buffer;
  kid: Buffer;
  payload: Buffer;
  signature: Buffer;
}

function fail(code: string, message: string): never {
  throw new EvidenceFormatError(code, message);
}

function asBytes(value: unknown): Buffer | undefined {
  return value instanceof Uint8Array ? Buffer.from(value) : undefined;
}

/**
 * Strictly decode a tagged COSE_Sign1: tag 18, alg EdDSA in the protected bucket and nothing else
 * there (any `crit` is refused), only a 16-byte `kid` unprotected, an attached payload, a 64-byte
 * signature, and byte-for-byte the deterministic encoding. Throws `EvidenceFormatError`.
 */
export function decodeCoseSign1(bytes: Uint8Array): CoseSign1 {
  if (!(bytes instanceof Uint8Array) || bytes.length < 2) fail('structure', 'not a COSE_Sign1: too short');
  if (bytes[0] !== (0xc0 | COSE_SIGN1_TAG)) fail('tag', 'not a tagged COSE_Sign1 (CBOR tag 18)');
  const item = decodeCbor(bytes.subarray(1), 'COSE_Sign1');
  if (!Array.isArray(item) || item.length !== 4) fail('structure', 'a COSE_Sign1 is an array of four items');
  const [protectedRaw, unprotected, payloadRaw, signatureRaw] = item as unknown[];

  const protectedBytes = asBytes(protectedRaw) ?? fail('structure', 'the protected header is not a bstr');
  if (protectedBytes.length === 0) fail('alg', 'no protected header: alg must be protected');
  const protectedMap = decodeCbor(protectedBytes, 'protected header');
  if (!(protectedMap instanceof Map)) fail('structure', 'the protected header is not a map');
  let alg: number | undefined;
  for (const [label, value] of protectedMap) {
    const key = asInteger(label);
    if (key === HEADER_CRIT) fail('crit', 'critical header parameters (crit) are not supported');
    if (key !== HEADER_ALG) fail('header', `unexpected protected header parameter ${String(label)}`);
    alg = asInteger(value);
    if (alg !== COSE_ALG_EDDSA) fail('alg', `alg ${String(value)} is not EdDSA (-8)`);
  }
  if (alg === undefined) fail('alg', 'the protected header has no alg');

  if (!(unprotected instanceof Map)) fail('structure', 'the unprotected header is not a map');
  let kid: Buffer | undefined;
  for (const [label, value] of unprotected) {
    const key = asInteger(label);
    if (key === HEADER_CRIT) fail('crit', 'crit must not appear in the unprotected header');
    if (key === HEADER_ALG) fail('alg', 'alg must be in the protected header only');
    if (key !== HEADER_KID) fail('header', `unexpected unprotected header parameter ${String(label)}`);
    kid = asBytes(value);
    if (!kid || kid.length !== 16) fail('kid', 'kid must be a 16-byte bstr');
  }
  if (!kid) fail('kid', 'no kid');

  const payload = asBytes(payloadRaw) ?? fail('payload', 'detached or non-bstr payloads are not supported');
  const signature = asBytes(signatureRaw) ?? fail('signature', 'the signature is not a bstr');
  if (signature.length !== 64) fail('signature', 'an Ed25519 signature is 64 bytes');

  if (!assemble(protectedBytes, kid, payload, signature).equals(bytes)) {
    fail('non-canonical', 'the COSE_Sign1 is not in deterministic encoding');
  }
  return { protected: protectedBytes, kid, payload, signature };
}

/** Verify the EdDSA signature of a decoded COSE_Sign1 (does not check the kid). */
export function verifyCoseSign1(message: CoseSign1, publicKey: KeyObject | Uint8Array): boolean {
  return ed25519Verify(publicKey, sigStructure(message.protected, message.payload), message.signature);
}
