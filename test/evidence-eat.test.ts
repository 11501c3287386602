import { createHash } from 'node:crypto';
import { Algorithms, Headers, Sign1 } from '@auth0/cose';
import { Decoder, Encoder } from 'cbor-x';
import { describe, expect, it } from 'vitest';
import {
  CLAIM,
  EAT_PROFILE,
  EvidenceChain,
  EvidenceFormatError,
  EvidenceInputError,
  MEASUREMENT_CONTENT_FORMAT,
  PROTECTED_EDDSA,
  decodeEvidence,
  evidenceDigest,
  generateEd25519,
  genesisDigest,
  keyId,
  rawPublicKey,
  sha256,
  signCheckpoint,
  signExecution,
  ueidFor,
  verifyEvidenceSignature,
  type ExecutionInput,
} from '../runtime/evidence/index.ts';

const plain = new Decoder({ useRecords: false, mapsAsObjects: false });
const anyEncoder = new Encoder({ useRecords: false, mapsAsObjects: false, tagUint8Array: false });

function fixture() {
  const { privateKey, publicKey } = generateEd25519();
  const raw = rawPublicKey(publicKey);
  const input: ExecutionInput = {
    backend: 'sim',
    hardwareProtected: false,
    function: 'order-signer',
    versionDigest: `sha256:${'cd'.repeat(32)}`,
    cid: 'c_01',
    eid: 42,
    stage: 'sign',
    measurement: { alg: 'sha3-512', value: 'ee'.repeat(64) },
    nativeEvidenceDigest: sha256(Buffer.from('native')),
    seq: 1,
    prev: genesisDigest(42, raw),
    iat: 1_800_000_000,
    nonce: Buffer.from('nonce-0123456789'),
    request: Buffer.from('{"orderId":"o-1"}'),
    response: Buffer.from('{"signature":"..."}'),
    log: Buffer.from('signed o-1\n'),
    metadata: Buffer.from('{"eid":42,"seq":1}'),
  };
  return { privateKey, publicKey, raw, input };
}

/** Rewrap a payload with our own COSE framing but an arbitrary (signed) payload. */
function resign(
  payload: Buffer,
  privateKey: Parameters<typeof signExecution>[1],
  raw: Buffer,
): Promise<Buffer> {
  return Sign1.sign(
    [[Headers.Algorithm, Algorithms.EdDSA]],
    [[Headers.KeyID, keyId(raw)]],
    payload,
    privateKey,
  ).then((s) => Buffer.from(s.encode()));
}

describe('per-execution evidence (EAT in COSE_Sign1)', () => {
  it('round-trips every claim with readable names', () => {
    const { privateKey, raw, input } = fixture();
    const bytes = signExecution(input, privateKey);
    const decoded = decodeEvidence(bytes);
    expect(decoded.claims).toEqual({
      profile: EAT_PROFILE,
      iat: 1_800_000_000,
      nonce: Buffer.from('nonce-0123456789'),
      ueid: ueidFor(raw),
      dbgstat: 0,
      measurement: { alg: 'sha3-512', value: Buffer.from('ee'.repeat(64), 'hex') },
      backend: 'sim',
      hardwareProtected: false,
      function: 'order-signer',
      versionDigest: `sha256:${'cd'.repeat(32)}`,
      cid: 'c_01',
      eid: 42,
      stage: 'sign',
      seq: 1,
      prev: genesisDigest(42, raw),
      requestDigest: sha256(input.request!),
      responseDigest: sha256(input.response!),
      logDigest: sha256(input.log!),
      metadataDigest: sha256(input.metadata!),
      nativeEvidenceDigest: sha256(Buffer.from('native')),
      kind: 'execution',
    });
    expect(decoded.kid).toEqual(createHash('sha256').update(raw).digest().subarray(0, 16));
    expect(decoded.claims.ueid[0]).toBe(0x01);
    expect(decoded.protected).toEqual(PROTECTED_EDDSA);
    expect(verifyEvidenceSignature(bytes, raw)).toBe(true);
    expect(verifyEvidenceSignature(bytes, generateEd25519().publicKey)).toBe(false);
    expect(evidenceDigest(bytes)).toEqual(sha256(bytes));
  });

  it('accepts precomputed artifact digests and yields the same bytes', () => {
    const { privateKey, input } = fixture();
    const fromBytes = signExecution(input, privateKey);
    const { request, response, log, metadata, ...rest } = input;
    const fromDigests = signExecution(
      {
        ...rest,
        requestDigest: sha256(request!),
        responseDigest: sha256(response!),
        logDigest: sha256(log!),
        metadataDigest: sha256(metadata!),
      },
      privateKey,
    );
    expect(fromDigests).toEqual(fromBytes); // Ed25519 is deterministic
    expect(() => signExecution({ ...input, requestDigest: sha256(request!) }, privateKey)).toThrow(
      EvidenceInputError,
    );
    expect(() => signExecution({ ...rest, response, log, metadata }, privateKey)).toThrow(EvidenceInputError);
    expect(() => signExecution({ ...input, nonce: Buffer.alloc(4) }, privateKey)).toThrow(EvidenceInputError);
    expect(() => signExecution({ ...input, seq: 0 }, privateKey)).toThrow(EvidenceInputError);
  });

  it('encodes the claims as deterministic CBOR with canonically ordered integer keys', () => {
    const { privateKey, input } = fixture();
    const { payload } = decodeEvidence(signExecution(input, privateKey));
    const map = plain.decode(payload) as Map<number, unknown>;
    const keys = [...map.keys()];
    expect(keys).toEqual([6, 10, 256, 263, 265, 273, ...Array.from({ length: 15 }, (_, i) => -75000 - i)]);
    // Independent check of RFC 8949 4.2.1: keys sorted bytewise by their encodings, shortest heads.
    const encodedKeys = keys.map((k) => anyEncoder.encode(k));
    for (let i = 1; i < encodedKeys.length; i++) {
      expect(Buffer.compare(encodedKeys[i - 1]!, encodedKeys[i]!)).toBe(-1);
    }
    expect(payload.subarray(0, 3)).toEqual(Buffer.from([0xb5, 0x06, 0x1a])); // map(21), 6: uint32
    expect(map.get(CLAIM.profile)).toBe(EAT_PROFILE);
    const measurements = map.get(CLAIM.measurements) as [number, Uint8Array][];
    expect(measurements[0]![0]).toBe(MEASUREMENT_CONTENT_FORMAT);
    expect(plain.decode(measurements[0]![1])).toEqual(['sha3-512', Buffer.from('ee'.repeat(64), 'hex')]);
  });

  it('interoperates with @auth0/cose: it verifies our COSE_Sign1 and produces identical bytes', async () => {
    const { privateKey, publicKey, raw, input } = fixture();
    const ours = signExecution(input, privateKey);
    const theirs = Sign1.decode(ours);
    expect(theirs.alg).toBe(-8);
    expect(Buffer.from(theirs.kid!)).toEqual(keyId(raw));
    await expect(theirs.verify(publicKey)).resolves.toBeUndefined();
    await expect(theirs.verify(generateEd25519().publicKey)).rejects.toThrow();
    // Their signer over our payload: byte-identical (deterministic Ed25519 and encoding) and accepted by us.
    const payload = decodeEvidence(ours).payload;
    const signedByThem = await resign(payload, privateKey, raw);
    expect(signedByThem.equals(ours)).toBe(true);
    expect(verifyEvidenceSignature(signedByThem, raw)).toBe(true);
  });

  it('rejects wrong tags, algorithms, critical headers and non-deterministic encodings', async () => {
    const { privateKey, raw, input } = fixture();
    const ours = signExecution(input, privateKey);
    const code = (bytes: Uint8Array) => {
      try {
        decodeEvidence(bytes);
      } catch (error) {
        expect(error).toBeInstanceOf(EvidenceFormatError);
        return (error as EvidenceFormatError).code;
      }
      return 'accepted';
    };
    expect(code(ours)).toBe('accepted');
    expect(code(ours.subarray(1))).toBe('tag'); // untagged
    expect(code(Buffer.concat([Buffer.from([0xd1]), ours.subarray(1)]))).toBe('tag'); // COSE_Mac0 tag 17
    expect(code(Buffer.concat([ours, Buffer.from([0x00])]))).toBe('cbor'); // trailing bytes
    const payload = decodeEvidence(ours).payload;
    const es256 = await Sign1.sign(
      [[Headers.Algorithm, Algorithms.ES256]],
      [[Headers.KeyID, keyId(raw)]],
      payload,
      privateKey,
    )
      .then((s) => Buffer.from(s.encode()))
      .catch(() => undefined);
    // @auth0/cose refuses to sign ES256 with an Ed25519 key; build the header by hand instead.
    const withProtected = (prot: Buffer) => {
      const framed = anyEncoder.encode([prot, new Map([[4, keyId(raw)]]), payload, Buffer.alloc(64)]);
      return Buffer.concat([Buffer.from([0xd2]), framed]);
    };
    expect(es256 === undefined || code(es256) === 'alg').toBe(true);
    const header = (...entries: [number, unknown][]) =>
      withProtected(anyEncoder.encode(new Map<number, unknown>(entries)));
    expect(code(header([1, -7]))).toBe('alg');
    expect(code(header([1, -8], [2, [99]]))).toBe('crit');
    expect(code(header([1, -8], [3, 'application/cbor']))).toBe('header');
    expect(code(withProtected(Buffer.alloc(0)))).toBe('alg');
    // Unprotected extras and detached payloads.
    const framed = (unprot: Map<number, unknown>, body: unknown = payload) =>
      Buffer.concat([
        Buffer.from([0xd2]),
        anyEncoder.encode([PROTECTED_EDDSA, unprot, body, Buffer.alloc(64)]),
      ]);
    expect(
      code(
        framed(
          new Map<number, unknown>([
            [4, keyId(raw)],
            [5, Buffer.alloc(12)],
          ]),
        ),
      ),
    ).toBe('header');
    expect(code(framed(new Map([[4, Buffer.alloc(8)]])))).toBe('kid');
    expect(code(framed(new Map([[4, keyId(raw)]]), null))).toBe('payload');
    // A claims map in non-canonical key order (same content) is refused.
    const claims = plain.decode(payload) as Map<number, unknown>;
    const reversed = Buffer.from(anyEncoder.encode(new Map([...claims.entries()].reverse())));
    expect(code(await resign(reversed, privateKey, raw))).toBe('non-canonical');
    // An unknown claim and a missing claim.
    const extra = Buffer.from(anyEncoder.encode(new Map([...claims.entries(), [-75999, 'x']])));
    expect(code(await resign(extra, privateKey, raw))).toBe('claims');
    const missing = new Map(claims);
    missing.delete(CLAIM.prev);
    expect(code(await resign(Buffer.from(anyEncoder.encode(missing)), privateKey, raw))).toBe('claims');
    // An integer written with a longer head than necessary.
    const longIat = Buffer.from(payload);
    expect(longIat.subarray(1, 3)).toEqual(Buffer.from([0x06, 0x1a]));
    const padded = Buffer.concat([
      payload.subarray(0, 2),
      Buffer.from([0x1b, 0, 0, 0, 0]),
      payload.subarray(3, 7),
      payload.subarray(7),
    ]);
    expect(code(await resign(padded, privateKey, raw))).toBe('non-canonical');
  });

  it('links a chain: genesis, prev digests, and a checkpoint that closes it', () => {
    const { privateKey, raw, input } = fixture();
    const { seq: _seq, prev: _prev, eid: _eid, ...rest } = input;
    const chain = new EvidenceChain(privateKey, 42);
    expect(chain.prev).toEqual(genesisDigest(42, raw));
    const first = chain.execution(rest);
    const second = chain.execution({ ...rest, nonce: undefined });
    const checkpoint = chain.checkpoint(rest);
    expect(decodeEvidence(first).claims.seq).toBe(1);
    expect(decodeEvidence(second).claims.prev).toEqual(sha256(first));
    const cp = decodeEvidence(checkpoint).claims;
    expect(cp).toMatchObject({ kind: 'checkpoint', seq: 3, prev: sha256(second) });
    expect(cp.requestDigest).toBeUndefined();
    expect(cp.nonce).toBeUndefined();
    expect(() => chain.execution(rest)).toThrow(EvidenceInputError);
    // signCheckpoint directly gives the same bytes.
    const direct = signCheckpoint({ ...rest, eid: 42, seq: 3, prev: sha256(second) }, privateKey);
    expect(direct).toEqual(checkpoint);
    // Resuming from the last entry continues the numbering.
    const resumed = new EvidenceChain(privateKey, 42, { lastSeq: 2, lastEvidence: second });
    expect(resumed.seq).toBe(3);
    expect(resumed.prev).toEqual(sha256(second));
  });

  it('marks hardware evidence with dbgstat disabled-permanently', () => {
    const { privateKey, input } = fixture();
    const claims = decodeEvidence(
      signExecution({ ...input, hardwareProtected: true, backend: 'keystone' }, privateKey),
    ).claims;
    expect(claims.dbgstat).toBe(3);
    expect(claims.hardwareProtected).toBe(true);
  });
});
