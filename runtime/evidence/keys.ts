import { createHash, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { EvidenceInputError } from './errors.ts';

export interface Ed25519KeyPair {
  privateKey: KeyObject;
  publicKey: KeyObject;
}

export function generateEd25519(): Ed25519KeyPair {
  return generateKeyPairSync('ed25519');
}

/** The raw 32-byte public key of an Ed25519 public or private KeyObject. */
export function rawPublicKey(key: KeyObject): Buffer {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  if (pub.asymmetricKeyType !== 'ed25519') throw new EvidenceInputError('not an Ed25519 key');
  const der = pub.export({ format: 'der', type: 'spki' });
  return Buffer.from(der.subarray(der.length - 32));
}

/** An Ed25519 public KeyObject from its raw 32 bytes (throws EvidenceInputError on a wrong length). */
export function ed25519PublicKey(raw: Uint8Array): KeyObject {
  if (raw.length !== 32) throw new EvidenceInputError(`an Ed25519 public key is 32 bytes, not ${raw.length}`);
  // A JWK imports an order of magnitude faster than an SPKI DER in Node 20 (OpenSSL's decoder chain).
  const x = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('base64url');
  return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x }, format: 'jwk' });
}

export function ed25519Sign(privateKey: KeyObject, message: Uint8Array): Buffer {
  return sign(null, message, privateKey);
}

/** Never throws: a malformed key or signature is simply "not valid". */
export function ed25519Verify(publicKey: KeyObject | Uint8Array, message: Uint8Array, signature: Uint8Array) {
  try {
    if (signature.length !== 64) return false;
    const key = publicKey instanceof Uint8Array ? ed25519PublicKey(publicKey) : publicKey;
    return verify(null, message, key, signature);
  } catch {
    return false;
  }
}

export function sha256(...parts: Uint8Array[]): Buffer {
  const hash = createHash('sha256');
  for (const part of parts) hash.update(part);
  return hash.digest();
}

export function sha512(...parts: Uint8Array[]): Buffer {
  const hash = createHash('sha512');
  for (const part of parts) hash.update(part);
  return hash.digest();
}

export function sha3_512(...parts: Uint8Array[]): Buffer {
  const hash = createHash('sha3-512');
  for (const part of parts) hash.update(part);
  return hash.digest();
}

/** COSE `kid` of an enclave key: the first 16 bytes of SHA-256 over the raw public key. */
export function keyId(rawPublic: Uint8Array): Buffer {
  return sha256(rawPublic).subarray(0, 16);
}

/** EAT UEID (RFC 9711 section 4.2.1): type 0x01 (RAND) then 16 bytes of SHA-256("ebcc-ueid" || key). */
export function ueidFor(rawPublic: Uint8Array): Buffer {
  return Buffer.concat([Buffer.from([0x01]), sha256(Buffer.from('ebcc-ueid'), rawPublic).subarray(0, 16)]);
}
