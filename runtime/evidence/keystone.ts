import type { KeyObject } from 'node:crypto';
import { EvidenceInputError, KeystoneReportError } from './errors.ts';
import { ed25519Sign, ed25519Verify } from './keys.ts';

/**
 * The Keystone attestation report (`struct report` in keystone sm/src/enclave.h): 1352 bytes,
 * little-endian, `enclave_report` (hash, data_len, data[1024], signature) then `sm_report` (hash,
 * public_key, signature) then the device public key. See docs/evidence.md.
 */
export const KEYSTONE_REPORT_SIZE = 1352;
export const KEYSTONE_DATA_MAX = 1024;

const OFF = {
  enclaveHash: 0,
  dataLen: 64,
  data: 72,
  enclaveSignature: 1096,
  smHash: 1160,
  smPublicKey: 1224,
  smSignature: 1256,
  devicePublicKey: 1320,
} as const;

export interface KeystoneReport {
  /** SHA3-512 enclave hash (64 bytes). */
  enclaveHash: Buffer;
  /** The caller data, exactly `data_len` bytes (at most 1024). */
  data: Buffer;
  /** Ed25519 by the SM key over `enclaveHash || data_len (u64 LE) || data`. */
  enclaveSignature: Buffer;
  /** SHA3-512 of the security monitor image (64 bytes). */
  smHash: Buffer;
  /** SM Ed25519 public key (32 bytes). */
  smPublicKey: Buffer;
  /** Ed25519 by the device key over `smHash || smPublicKey`. */
  smSignature: Buffer;
  /** Device root Ed25519 public key (32 bytes). */
  devicePublicKey: Buffer;
}

function expectLength(name: string, value: Uint8Array, length: number): void {
  if (!(value instanceof Uint8Array) || value.length !== length) {
    throw new EvidenceInputError(`${name} must be ${length} bytes`);
  }
}

/** Lay the fields out as the 1352-byte report; the unused part of `data` is zero. */
export function encodeKeystoneReport(report: KeystoneReport): Buffer {
  expectLength('enclaveHash', report.enclaveHash, 64);
  if (!(report.data instanceof Uint8Array) || report.data.length > KEYSTONE_DATA_MAX) {
    throw new EvidenceInputError(`data must be at most ${KEYSTONE_DATA_MAX} bytes`);
  }
  expectLength('enclaveSignature', report.enclaveSignature, 64);
  expectLength('smHash', report.smHash, 64);
  expectLength('smPublicKey', report.smPublicKey, 32);
  expectLength('smSignature', report.smSignature, 64);
  expectLength('devicePublicKey', report.devicePublicKey, 32);
  const out = Buffer.alloc(KEYSTONE_REPORT_SIZE);
  out.set(report.enclaveHash, OFF.enclaveHash);
  out.writeBigUInt64LE(BigInt(report.data.length), OFF.dataLen);
  out.set(report.data, OFF.data);
  out.set(report.enclaveSignature, OFF.enclaveSignature);
  out.set(report.smHash, OFF.smHash);
  out.set(report.smPublicKey, OFF.smPublicKey);
  out.set(report.smSignature, OFF.smSignature);
  out.set(report.devicePublicKey, OFF.devicePublicKey);
  return out;
}

export interface DecodeKeystoneOptions {
  /**
   * Upstream's SM builds the report in an uninitialised stack variable, so the bytes of `data` past
   * `data_len` (which no signature covers) may be garbage on real hardware. EBCC's own reports are zero
   * padded and decoding is strict by default; set this to accept (and ignore) non-zero padding.
   */
  allowNonZeroPadding?: boolean;
}

/** Strict decode: exactly 1352 bytes, data_len <= 1024, zero padding after the data. */
export function decodeKeystoneReport(bytes: Uint8Array, options: DecodeKeystoneOptions = {}): KeystoneReport {
  if (!(bytes instanceof Uint8Array)) throw new KeystoneReportError('type', 'a report is a byte array');
  if (bytes.length !== KEYSTONE_REPORT_SIZE) {
    throw new KeystoneReportError(
      'length',
      `a Keystone report is ${KEYSTONE_REPORT_SIZE} bytes, not ${bytes.length}`,
    );
  }
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const dataLen = buf.readBigUInt64LE(OFF.dataLen);
  if (dataLen > BigInt(KEYSTONE_DATA_MAX)) {
    throw new KeystoneReportError('data-len', `data_len ${dataLen} exceeds ${KEYSTONE_DATA_MAX}`);
  }
  const len = Number(dataLen);
  if (!options.allowNonZeroPadding) {
    for (let i = OFF.data + len; i < OFF.enclaveSignature; i++) {
      if (buf[i] !== 0) throw new KeystoneReportError('padding', `non-zero padding at offset ${i}`);
    }
  }
  const take = (offset: number, length: number) => Buffer.from(buf.subarray(offset, offset + length));
  return {
    enclaveHash: take(OFF.enclaveHash, 64),
    data: take(OFF.data, len),
    enclaveSignature: take(OFF.enclaveSignature, 64),
    smHash: take(OFF.smHash, 64),
    smPublicKey: take(OFF.smPublicKey, 32),
    smSignature: take(OFF.smSignature, 64),
    devicePublicKey: take(OFF.devicePublicKey, 32),
  };
}

/** Zero the unsigned padding of a (hardware) report so that its bytes are canonical. */
export function normalizeKeystoneReport(bytes: Uint8Array): Buffer {
  return encodeKeystoneReport(decodeKeystoneReport(bytes, { allowNonZeroPadding: true }));
}

/** The bytes the SM signs: `hash || data_len (u64 LE) || data[..data_len]` (a prefix of enclave_report). */
export function keystoneEnclaveMessage(enclaveHash: Uint8Array, data: Uint8Array): Buffer {
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(data.length));
  return Buffer.concat([enclaveHash, len, data]);
}

/** The bytes the device key signs (the boot ROM's endorsement of the SM): `sm.hash || sm.public_key`. */
export function keystoneSmMessage(smHash: Uint8Array, smPublicKey: Uint8Array): Buffer {
  return Buffer.concat([smHash, smPublicKey]);
}

export interface SignKeystoneInput {
  enclaveHash: Uint8Array;
  data: Uint8Array;
  smPrivateKey: KeyObject;
  smHash: Uint8Array;
  smPublicKey: Uint8Array;
  smSignature: Uint8Array;
  devicePublicKey: Uint8Array;
}

/** What the SM's `attest_enclave` does: sign the enclave part with the SM key and assemble the report. */
export function signKeystoneReport(input: SignKeystoneInput): Buffer {
  expectLength('enclaveHash', input.enclaveHash, 64);
  if (input.data.length > KEYSTONE_DATA_MAX) {
    throw new EvidenceInputError(`data must be at most ${KEYSTONE_DATA_MAX} bytes`);
  }
  const enclaveSignature = ed25519Sign(
    input.smPrivateKey,
    keystoneEnclaveMessage(input.enclaveHash, input.data),
  );
  return encodeKeystoneReport({
    enclaveHash: Buffer.from(input.enclaveHash),
    data: Buffer.from(input.data),
    enclaveSignature,
    smHash: Buffer.from(input.smHash),
    smPublicKey: Buffer.from(input.smPublicKey),
    smSignature: Buffer.from(input.smSignature),
    devicePublicKey: Buffer.from(input.devicePublicKey),
  });
}

export interface VerifyKeystoneOptions {
  /** Raw 32-byte device public keys the verifier trusts. */
  trustedDeviceKeys: Uint8Array[];
  /** If given, `sm.hash` must be one of these (upstream's `Report::verify` pins the SM hash too). */
  trustedSmHashes?: Uint8Array[];
  allowNonZeroPadding?: boolean;
}

export interface KeystoneVerification {
  ok: boolean;
  /** One line per failed check; empty when `ok`. */
  reasons: string[];
  /** Present whenever the report decoded, even if a check failed. */
  enclaveHash?: Buffer;
  data?: Buffer;
  devicePublicKey?: Buffer;
  smHash?: Buffer;
}

/**
 * Verify in signing order: the device key is trusted, the device key signed `sm.hash || sm.public_key`,
 * the SM key signed `enclave.hash || data_len || data`. Never throws on bad input.
 */
export function verifyKeystoneReport(
  report: Uint8Array | KeystoneReport,
  options: VerifyKeystoneOptions,
): KeystoneVerification {
  let decoded: KeystoneReport;
  try {
    decoded =
      report instanceof Uint8Array
        ? decodeKeystoneReport(report, { allowNonZeroPadding: options.allowNonZeroPadding })
        : decodeKeystoneReport(encodeKeystoneReport(report));
  } catch (error) {
    return { ok: false, reasons: [`decode: ${(error as Error).message}`] };
  }
  const reasons: string[] = [];
  const trusted = options.trustedDeviceKeys.some((key) => Buffer.from(key).equals(decoded.devicePublicKey));
  if (!trusted) reasons.push('device public key is not a trusted device key');
  if (
    options.trustedSmHashes &&
    !options.trustedSmHashes.some((h) => Buffer.from(h).equals(decoded.smHash))
  ) {
    reasons.push('security monitor hash is not a trusted SM hash');
  }
  if (
    !ed25519Verify(
      decoded.devicePublicKey,
      keystoneSmMessage(decoded.smHash, decoded.smPublicKey),
      decoded.smSignature,
    )
  ) {
    reasons.push('sm.signature is not a device-key signature over sm.hash || sm.public_key');
  }
  if (
    !ed25519Verify(
      decoded.smPublicKey,
      keystoneEnclaveMessage(decoded.enclaveHash, decoded.data),
      decoded.enclaveSignature,
    )
  ) {
    reasons.push('enclave.signature is not an SM-key signature over enclave.hash || data_len || data');
  }
  return {
    ok: reasons.length === 0,
    reasons,
    enclaveHash: decoded.enclaveHash,
    data: decoded.data,
    devicePublicKey: decoded.devicePublicKey,
    smHash: decoded.smHash,
  };
}
