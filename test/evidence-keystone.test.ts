import { createHash, sign, verify } from 'node:crypto';
import { Encoder } from 'cbor-x';
import { describe, expect, it } from 'vitest';
import {
  EvidenceFormatError,
  KEYSTONE_REPORT_SIZE,
  KeystoneReportError,
  SOFTWARE_SM_LABEL,
  createSoftwareRoot,
  decodeKeystoneReport,
  ed25519PublicKey,
  enclaveBinding,
  encodeKeystoneReport,
  exportTrustAnchor,
  generateEd25519,
  genesisDigest,
  normalizeKeystoneReport,
  parseSoftwareRoot,
  parseTrustAnchor,
  rawPublicKey,
  serializeSoftwareRoot,
  signKeystoneReport,
  softwareRootReport,
  verifyKeystoneReport,
} from '../runtime/evidence/index.ts';

const root = createSoftwareRoot(new Date('2026-11-25T00:00:00Z'));
const enclaveHash = createHash('sha3-512').update('an enclave image').digest();
const data = Buffer.alloc(64, 0x5a);

function reportCode(bytes: Uint8Array): string {
  try {
    decodeKeystoneReport(bytes);
    return 'accepted';
  } catch (error) {
    expect(error).toBeInstanceOf(KeystoneReportError);
    return (error as KeystoneReportError).code;
  }
}

describe('Keystone-format reports', () => {
  it('lays out the 1352-byte struct report at the upstream offsets', () => {
    const fields = {
      enclaveHash,
      data,
      enclaveSignature: Buffer.alloc(64, 1),
      smHash: Buffer.alloc(64, 2),
      smPublicKey: Buffer.alloc(32, 3),
      smSignature: Buffer.alloc(64, 4),
      devicePublicKey: Buffer.alloc(32, 5),
    };
    const bytes = encodeKeystoneReport(fields);
    expect(bytes.length).toBe(KEYSTONE_REPORT_SIZE);
    expect(bytes.subarray(0, 64)).toEqual(enclaveHash);
    expect(bytes.readBigUInt64LE(64)).toBe(64n);
    expect(bytes.subarray(72, 136)).toEqual(data);
    expect(bytes.subarray(136, 1096).every((b) => b === 0)).toBe(true);
    expect(bytes.subarray(1096, 1160)).toEqual(fields.enclaveSignature);
    expect(bytes.subarray(1160, 1224)).toEqual(fields.smHash);
    expect(bytes.subarray(1224, 1256)).toEqual(fields.smPublicKey);
    expect(bytes.subarray(1256, 1320)).toEqual(fields.smSignature);
    expect(bytes.subarray(1320, 1352)).toEqual(fields.devicePublicKey);
    expect(decodeKeystoneReport(bytes)).toEqual(fields);
    expect(decodeKeystoneReport(encodeKeystoneReport({ ...fields, data: Buffer.alloc(0) })).data.length).toBe(
      0,
    );
    expect(
      decodeKeystoneReport(encodeKeystoneReport({ ...fields, data: Buffer.alloc(1024, 9) })).data.length,
    ).toBe(1024);
    expect(() => encodeKeystoneReport({ ...fields, data: Buffer.alloc(1025) })).toThrow(TypeError);
    expect(() => encodeKeystoneReport({ ...fields, smPublicKey: Buffer.alloc(31) })).toThrow(TypeError);
  });

  it('decodes strictly: length, data_len and zero padding', () => {
    const good = softwareRootReport(root, enclaveHash, data);
    expect(reportCode(good)).toBe('accepted');
    expect(reportCode(good.subarray(0, 1351))).toBe('length');
    expect(reportCode(Buffer.concat([good, Buffer.alloc(1)]))).toBe('length');
    const long = Buffer.from(good);
    long.writeBigUInt64LE(1025n, 64);
    expect(reportCode(long)).toBe('data-len');
    const huge = Buffer.from(good);
    huge.writeBigUInt64LE(2n ** 63n, 64);
    expect(reportCode(huge)).toBe('data-len');
    const dirty = Buffer.from(good);
    dirty[72 + 64] = 1;
    expect(reportCode(dirty)).toBe('padding');
    // Upstream's SM does not zero the padding: accept it on request, and normalise it away.
    expect(decodeKeystoneReport(dirty, { allowNonZeroPadding: true }).data).toEqual(data);
    expect(normalizeKeystoneReport(dirty)).toEqual(good);
  });

  it('signs what the SM signs and verifies in signing order', () => {
    const report = softwareRootReport(root, enclaveHash, data);
    const decoded = decodeKeystoneReport(report);
    // Independent check of the two signed messages, with node:crypto directly.
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(64n);
    expect(
      verify(
        null,
        Buffer.concat([enclaveHash, len, data]),
        ed25519PublicKey(root.smPublicKey),
        decoded.enclaveSignature,
      ),
    ).toBe(true);
    expect(
      verify(
        null,
        Buffer.concat([decoded.smHash, decoded.smPublicKey]),
        ed25519PublicKey(decoded.devicePublicKey),
        decoded.smSignature,
      ),
    ).toBe(true);
    expect(decoded.smHash).toEqual(createHash('sha3-512').update(SOFTWARE_SM_LABEL).digest());

    const ok = verifyKeystoneReport(report, { trustedDeviceKeys: [root.devicePublicKey] });
    expect(ok).toEqual({
      ok: true,
      reasons: [],
      enclaveHash,
      data,
      devicePublicKey: root.devicePublicKey,
      smHash: root.smHash,
    });
    expect(
      verifyKeystoneReport(report, {
        trustedDeviceKeys: [root.devicePublicKey],
        trustedSmHashes: [root.smHash],
      }).ok,
    ).toBe(true);
    expect(
      verifyKeystoneReport(report, {
        trustedDeviceKeys: [root.devicePublicKey],
        trustedSmHashes: [Buffer.alloc(64)],
      }).reasons,
    ).toEqual(['security monitor hash is not a trusted SM hash']);

    const other = createSoftwareRoot();
    const untrusted = verifyKeystoneReport(report, { trustedDeviceKeys: [other.devicePublicKey] });
    expect(untrusted.ok).toBe(false);
    expect(untrusted.reasons).toEqual(['device public key is not a trusted device key']);

    // A report re-rooted on another device key: the SM endorsement no longer verifies.
    const swapped = Buffer.from(report);
    other.devicePublicKey.copy(swapped, 1320);
    const r1 = verifyKeystoneReport(swapped, { trustedDeviceKeys: [other.devicePublicKey] });
    expect(r1.reasons).toEqual(['sm.signature is not a device-key signature over sm.hash || sm.public_key']);

    // Changed data (a different binding): the enclave signature no longer verifies.
    const rebound = Buffer.from(report);
    rebound[72] = rebound[72]! ^ 1;
    expect(verifyKeystoneReport(rebound, { trustedDeviceKeys: [root.devicePublicKey] }).reasons).toEqual([
      'enclave.signature is not an SM-key signature over enclave.hash || data_len || data',
    ]);
    // A shorter data_len over the same bytes changes the signed message too.
    const shorter = Buffer.from(report);
    shorter.writeBigUInt64LE(63n, 64);
    shorter[72 + 63] = 0;
    expect(verifyKeystoneReport(shorter, { trustedDeviceKeys: [root.devicePublicKey] }).ok).toBe(false);
    // Undecodable input is a failed verification, not an exception.
    expect(verifyKeystoneReport(Buffer.alloc(10), { trustedDeviceKeys: [] }).reasons[0]).toMatch(/^decode: /);
  });

  it('signKeystoneReport takes an explicit SM key (any Keystone-style root)', () => {
    const device = generateEd25519();
    const sm = generateEd25519();
    const smHash = Buffer.alloc(64, 7);
    const smPublicKey = rawPublicKey(sm.publicKey);
    const devicePublicKey = rawPublicKey(device.publicKey);
    const smSignature = sign(null, Buffer.concat([smHash, smPublicKey]), device.privateKey);
    const report = signKeystoneReport({
      enclaveHash,
      data: Buffer.from('short data'),
      smPrivateKey: sm.privateKey,
      smHash,
      smPublicKey,
      smSignature,
      devicePublicKey,
    });
    const result = verifyKeystoneReport(report, { trustedDeviceKeys: [devicePublicKey] });
    expect(result.ok).toBe(true);
    expect(result.data).toEqual(Buffer.from('short data'));
  });
});

describe('software root', () => {
  it('serializes with PKCS#8 PEM private keys and parses back to the same root', () => {
    const json = serializeSoftwareRoot(root);
    expect(json).toContain('-----BEGIN PRIVATE KEY-----');
    const parsed = parseSoftwareRoot(json);
    expect(parsed.devicePublicKey).toEqual(root.devicePublicKey);
    expect(parsed.smPublicKey).toEqual(root.smPublicKey);
    expect(parsed.smHash).toEqual(root.smHash);
    expect(parsed.createdAt).toBe('2026-11-25T00:00:00.000Z');
    // Reports from the parsed root are byte-identical (Ed25519 is deterministic).
    expect(softwareRootReport(parsed, enclaveHash, data)).toEqual(
      softwareRootReport(root, enclaveHash, data),
    );
    const tampered = JSON.parse(json) as Record<string, string>;
    tampered.smSignature = '00'.repeat(64);
    expect(() => parseSoftwareRoot(JSON.stringify(tampered))).toThrow(EvidenceFormatError);
    expect(() => parseSoftwareRoot('{"kind":"nope"}')).toThrow(EvidenceFormatError);
    expect(() => parseSoftwareRoot('not json')).toThrow(EvidenceFormatError);
  });

  it('exports a public trust anchor that parses back', () => {
    const anchor = exportTrustAnchor(root);
    expect(anchor).toEqual({
      kind: 'ebcc-software-root',
      devicePublicKey: root.devicePublicKey.toString('hex'),
      createdAt: '2026-11-25T00:00:00.000Z',
    });
    expect(JSON.stringify(anchor)).not.toContain('PRIVATE');
    expect(parseTrustAnchor(JSON.stringify(anchor))).toEqual({
      kind: 'ebcc-software-root',
      devicePublicKey: root.devicePublicKey,
      createdAt: '2026-11-25T00:00:00.000Z',
    });
    expect(parseTrustAnchor({ kind: 'keystone-device', devicePublicKey: 'aa'.repeat(32) }).kind).toBe(
      'keystone-device',
    );
    expect(() => parseTrustAnchor({ kind: 'other', devicePublicKey: 'aa'.repeat(32) })).toThrow(
      EvidenceFormatError,
    );
  });
});

describe('binding digests', () => {
  const publicKey = Buffer.alloc(32, 0x11);
  const encryptionKey = Buffer.alloc(32, 0x22);

  it('is SHA-512 over the deterministic CBOR array, sized for 64-byte report data', () => {
    const binding = enclaveBinding({ publicKey, cid: 'c_1', eid: 9, stage: 'sign' });
    expect(binding.length).toBe(64);
    // Built by hand: array(6), tstr label, bstr key, null, tstr cid, uint 9, tstr stage.
    const label = Buffer.from('ebcc-enclave-binding/1');
    const cbor = Buffer.concat([
      Buffer.from([0x86, 0x60 | label.length]),
      label,
      Buffer.from([0x58, 32]),
      publicKey,
      Buffer.from([0xf6, 0x63]),
      Buffer.from('c_1'),
      Buffer.from([0x09, 0x64]),
      Buffer.from('sign'),
    ]);
    expect(binding).toEqual(createHash('sha512').update(cbor).digest());
    const withKey = enclaveBinding({ publicKey, encryptionKey, cid: 'c_1', eid: 9, stage: 'sign' });
    const enc = new Encoder({ useRecords: false, tagUint8Array: false });
    expect(withKey).toEqual(
      createHash('sha512')
        .update(enc.encode(['ebcc-enclave-binding/1', publicKey, encryptionKey, 'c_1', 9, 'sign']))
        .digest(),
    );
    for (const change of [
      { eid: 10 },
      { cid: 'c_2' },
      { stage: 'other' },
      { publicKey: Buffer.alloc(32, 0x12) },
    ]) {
      expect(enclaveBinding({ publicKey, cid: 'c_1', eid: 9, stage: 'sign', ...change })).not.toEqual(
        binding,
      );
    }
    expect(() => enclaveBinding({ publicKey: Buffer.alloc(31), cid: 'c', eid: 1, stage: 's' })).toThrow(
      TypeError,
    );
  });

  it('derives the chain genesis from the EID and the enclave key', () => {
    const cbor = Buffer.concat([
      Buffer.from([0x83, 0x6e]),
      Buffer.from('ebcc-genesis/1'),
      Buffer.from([0x18, 200, 0x58, 32]),
      publicKey,
    ]);
    expect(genesisDigest(200, publicKey)).toEqual(createHash('sha256').update(cbor).digest());
  });
});
