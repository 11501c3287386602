import { describe, expect, it } from 'vitest';
import {
  EvidenceChain,
  createSampleBundle,
  createSoftwareRoot,
  decodeEvidence,
  evidenceBundleSchema,
  failedChecks,
  parseEvidenceBundle,
  signCheckpoint,
  softwareTrustAnchor,
  toBase64,
  verifyBundle,
  type EarResult,
  type EvidenceBundle,
  type VerifyBundleOptions,
} from '../runtime/evidence/index.ts';

const now = new Date('2026-11-25T12:00:00Z');
const nonce = Buffer.from('fresh-nonce-0001');
const sample = createSampleBundle({ nonce, now });
const options: VerifyBundleOptions = {
  trustAnchors: [sample.trustAnchor],
  allowSim: true,
  nonce,
  referenceValues: sample.referenceValues,
  now,
};

/** A deep copy through JSON, as a bundle read from an export file. */
const copy = (bundle: EvidenceBundle = sample.bundle): EvidenceBundle => JSON.parse(JSON.stringify(bundle));
const appraise = (bundle: unknown, over: Partial<VerifyBundleOptions> = {}) =>
  verifyBundle(bundle, { ...options, ...over });

function flip(b64: string, index: number): string {
  const bytes = Buffer.from(b64, 'base64');
  bytes[index] = bytes[index]! ^ 0x01;
  return bytes.toString('base64');
}

/** The result is not affirming and one of `checks` failed (the failing check is named). */
function expectRejected(result: EarResult, ...checks: string[]): string[] {
  const failed = failedChecks(result);
  expect(result['ear.status'], 'the bundle was affirmed').not.toBe('affirming');
  const names = new Set(failed.map((line) => line.split(': ')[1]));
  expect(
    checks.some((c) => names.has(c)),
    `expected one of ${checks.join(', ')} to fail; failed: ${[...names].join(', ')}`,
  ).toBe(true);
  return failed;
}

describe('verifyBundle: the attestation result', () => {
  it('affirms a complete sim bundle when sim is allowed, in the EAR shape', () => {
    const result = appraise(copy());
    expect(failedChecks(result)).toEqual([]);
    expect(result['ear.status']).toBe('affirming');
    expect(result.eat_profile).toBe('tag:github.com,2023:veraison/ear');
    expect(result.iat).toBe(Math.floor(now.getTime() / 1000));
    expect(result['ear.verifier-id']).toEqual({ developer: 'urn:ebcc', build: 'ebcc-evidence/1' });
    expect(Object.keys(result.submods).sort()).toEqual(['bundle', 'sign#8#3', 'validate#7#1']);
    const submod = result.submods['sign#8#3']!;
    expect(submod['ear.status']).toBe('affirming');
    expect(submod['ear.appraisal-policy-id']).toBe('urn:ebcc:policy:stage-execution:1:allow-sim');
    expect(submod.eat_nonce).toBe(nonce.toString('base64url'));
    expect(submod['ear.trustworthiness-vector']).toEqual({
      'instance-identity': 2,
      executables: 2,
      hardware: 32,
    });
    const checks = submod['ebcc.reasons'].map((r) => r.check);
    for (const check of [
      'native.trust-anchor',
      'native.signatures',
      'native.binding',
      'measurement.report',
      'measurement.claim',
      'measurement.reference',
      'evidence.signature',
      'evidence.claims',
      'evidence.native-digest',
      'evidence.nonce',
      'hardware',
      'artifact.request',
      'artifact.response',
      'artifact.log',
      'artifact.metadata',
      'chain',
      'chain.checkpoint',
    ]) {
      expect(checks).toContain(check);
    }
    expect(submod['ebcc.reasons'].find((r) => r.check === 'hardware')!.detail).toMatch(/allowSim/);
    expect(
      result.submods['validate#7#1']!['ebcc.reasons'].find((r) => r.check === 'chain.checkpoint')!.detail,
    ).toMatch(/closed by checkpoint seq 2/);
    // The result is plain JSON.
    expect(JSON.parse(JSON.stringify(result))).toEqual(result);
  });

  it('refuses sim evidence without allowSim', () => {
    const result = appraise(copy(), { allowSim: false });
    expect(result['ear.status']).toBe('contraindicated');
    expectRejected(result, 'hardware');
    expect(result.submods['sign#8#3']!['ear.appraisal-policy-id']).toBe('urn:ebcc:policy:stage-execution:1');
  });

  it('affirms hardware-protected evidence under a device anchor without allowSim, never under a software root', () => {
    const hw = createSampleBundle({ nonce, now, hardware: true });
    const result = verifyBundle(hw.bundle, {
      trustAnchors: [hw.trustAnchor],
      allowSim: false,
      nonce,
      referenceValues: hw.referenceValues,
      now,
    });
    expect(failedChecks(result)).toEqual([]);
    expect(result.submods['sign#8#3']!['ear.trustworthiness-vector']!.hardware).toBe(2);
    // The same key presented as a software root (or as a bare key) cannot vouch for hardware.
    for (const anchor of [softwareTrustAnchor(hw.root), hw.root.devicePublicKey]) {
      const downgraded = verifyBundle(hw.bundle, { trustAnchors: [anchor], allowSim: true, nonce, now });
      expectRejected(downgraded, 'hardware');
    }
    // Sim evidence under a device anchor still needs allowSim.
    const simUnderDevice = appraise(copy(), {
      trustAnchors: [{ kind: 'keystone-device', devicePublicKey: sample.root.devicePublicKey }],
      allowSim: false,
    });
    expectRejected(simUnderDevice, 'hardware');
  });

  it('rejects evidence rooted in an untrusted key', () => {
    expectRejected(
      appraise(copy(), { trustAnchors: [softwareTrustAnchor(createSoftwareRoot())] }),
      'native.trust-anchor',
    );
    expectRejected(appraise(copy(), { trustAnchors: [] }), 'native.trust-anchor');
  });

  it('rejects a measurement that is not among the reference values', () => {
    const refs = sample.referenceValues.map((r) =>
      r.stage === 'sign' ? { ...r, measurements: [{ alg: 'sha3-512', value: '00'.repeat(64) }] } : r,
    );
    const failed = expectRejected(appraise(copy(), { referenceValues: refs }), 'measurement.reference');
    expect(failed.every((line) => line.startsWith('sign#8#3'))).toBe(true);
    expectRejected(appraise(copy(), { referenceValues: [] }), 'measurement.reference');
    // Without reference values the measurement is not appraised (and said so).
    const unappraised = appraise(copy(), { referenceValues: undefined });
    expect(unappraised['ear.status']).toBe('affirming');
    expect(unappraised.submods['sign#8#3']!['ear.trustworthiness-vector']!.executables).toBe(0);
    // A bundle whose recorded measurement was edited no longer matches the report nor the claim.
    const edited = copy();
    edited.enclaves[1]!.measurement.value = '11'.repeat(64);
    expectRejected(appraise(edited, { referenceValues: undefined }), 'measurement.report');
    expectRejected(appraise(edited, { referenceValues: undefined }), 'measurement.claim');
  });

  it('checks the nonce, and rejects old evidence replayed against a new nonce', () => {
    expectRejected(appraise(copy(), { nonce: Buffer.from('another-nonce-02') }), 'evidence.nonce');
    // The persistent enclave's earlier execution (another nonce) presented as this invocation's.
    const replayed = copy();
    const earlier = replayed.chain.find((e) => e.eid === 8 && e.seq === 2)!;
    replayed.executions[1]!.evidence = earlier.evidence;
    expectRejected(appraise(replayed), 'evidence.nonce');
    expectRejected(appraise(replayed), 'evidence.claims');
    expectRejected(appraise(replayed), 'chain');
    // Without an expected nonce, it is still not the execution it claims to be.
    expectRejected(appraise(replayed, { nonce: undefined }), 'evidence.claims');
  });

  it('rejects a flipped byte in every artifact of every execution', () => {
    for (const index of [0, 1]) {
      for (const artifact of ['request', 'response', 'log', 'metadata'] as const) {
        const bundle = copy();
        const execution = bundle.executions[index]!;
        execution.artifacts[artifact] = flip(execution.artifacts[artifact], 0);
        const failed = expectRejected(appraise(bundle), `artifact.${artifact}`);
        expect(failed).toHaveLength(1);
      }
    }
  });

  it('rejects a flipped bit anywhere in the evidence', () => {
    const length = Buffer.from(sample.bundle.executions[0]!.evidence, 'base64').length;
    // Every byte of the COSE framing, the kid and the signature; every 5th byte of the claims.
    const positions = Array.from({ length }, (_, i) => i).filter(
      (i) => i < 40 || i >= length - 66 || i % 5 === 0,
    );
    for (const i of positions) {
      const bundle = copy();
      bundle.executions[0]!.evidence = flip(bundle.executions[0]!.evidence, i);
      expectRejected(appraise(bundle), 'evidence.decode', 'evidence.signature');
    }
  });

  it('rejects a flipped bit anywhere in the native report', () => {
    const length = Buffer.from(sample.bundle.enclaves[0]!.nativeEvidence, 'base64').length;
    expect(length).toBe(1352);
    const positions = new Set<number>();
    for (const [start, size] of [
      [0, 64],
      [64, 8],
      [72, 1024],
      [1096, 64],
      [1160, 64],
      [1224, 32],
      [1256, 64],
      [1320, 32],
    ] as const) {
      for (const p of [start, start + 1, start + (size >> 1), start + size - 1]) positions.add(p);
    }
    for (let p = 3; p < length; p += 37) positions.add(p);
    for (const p of positions) {
      const bundle = copy();
      bundle.enclaves[0]!.nativeEvidence = flip(bundle.enclaves[0]!.nativeEvidence, p);
      const result = appraise(bundle);
      expectRejected(result, 'evidence.native-digest');
      expectRejected(
        result,
        'native.format',
        'native.trust-anchor',
        'native.signatures',
        'native.binding',
        'measurement.report',
      );
    }
  });

  it('rejects artifacts swapped between two EIDs', () => {
    const bundle = copy();
    const [a, b] = bundle.executions;
    [a!.artifacts, b!.artifacts] = [b!.artifacts, a!.artifacts];
    const failed = expectRejected(appraise(bundle), 'artifact.request');
    expect(failed.some((l) => l.startsWith('validate#7#1: artifact.request'))).toBe(true);
    expect(failed.some((l) => l.startsWith('sign#8#3: artifact.response'))).toBe(true);
  });

  it('rejects evidence substituted from another enclave', () => {
    const bundle = copy();
    bundle.executions[0]!.evidence = bundle.executions[1]!.evidence;
    expectRejected(appraise(bundle), 'evidence.signature');
  });

  it('rejects a dropped, reordered or substituted chain entry', () => {
    const dropFirst = copy();
    dropFirst.chain = dropFirst.chain.filter((e) => !(e.eid === 8 && e.seq === 1));
    expect(
      failedChecks(expectRejectedResult(appraise(dropFirst), 'chain')).some((l) =>
        /seq 1 is missing/.test(l),
      ),
    ).toBe(true);

    const dropMiddle = copy();
    dropMiddle.chain = dropMiddle.chain.filter((e) => !(e.eid === 8 && e.seq === 2));
    expectRejected(appraise(dropMiddle), 'chain');

    // Evidence bytes swapped between positions: the seq carried no longer matches, nor do the links.
    const swapped = copy();
    const [c1, c2] = swapped.chain;
    [c1!.evidence, c2!.evidence] = [c2!.evidence, c1!.evidence];
    expectRejected(appraise(swapped), 'chain');

    // Entries relisted out of order.
    const relisted = copy();
    relisted.chain.reverse();
    expectRejected(appraise(relisted), 'chain');

    // An entry re-signed by the enclave key with the same seq but other content (a fork) breaks the link.
    const forked = copy();
    const key = sample.keys.get(8)!;
    const original = decodeEvidence(Buffer.from(forked.chain[0]!.evidence, 'base64')).claims;
    const {
      requestDigest: _r,
      responseDigest: _s,
      logDigest: _l,
      metadataDigest: _m,
      ...identity
    } = original;
    const fork = new EvidenceChain(key, 8).execution({
      ...identity,
      nonce: undefined,
      request: Buffer.from('a different request'),
      response: Buffer.alloc(0),
      log: Buffer.alloc(0),
      metadata: Buffer.alloc(0),
    });
    forked.chain[0]!.evidence = toBase64(fork);
    const failed = expectRejected(appraise(forked), 'chain');
    expect(failed.some((l) => /seq 2: prev does not link to seq 1/.test(l))).toBe(true);
  });

  it('treats a checkpoint as closing the chain', () => {
    // A well-formed checkpoint after the current execution closes the persistent enclave's chain.
    const closed = copy();
    const key = sample.keys.get(8)!;
    const last = decodeEvidence(Buffer.from(closed.executions[1]!.evidence, 'base64'));
    const checkpoint = signCheckpoint(
      { ...last.claims, seq: 4, prev: decodeEvidenceDigest(closed.executions[1]!.evidence) },
      key,
    );
    closed.checkpoints.push({ eid: 8, seq: 4, evidence: toBase64(checkpoint) });
    expect(failedChecks(appraise(closed))).toEqual([]);

    // A checkpoint followed by an entry: the chain was closed before that execution.
    const early = copy();
    const second = early.chain.find((e) => e.eid === 8 && e.seq === 2)!;
    const closing = signCheckpoint(
      {
        ...decodeEvidence(Buffer.from(second.evidence, 'base64')).claims,
        seq: 3,
        prev: decodeEvidenceDigest(second.evidence),
      },
      key,
    );
    early.checkpoints.push({ eid: 8, seq: 3, evidence: toBase64(closing) });
    expectRejected(appraise(early), 'chain', 'chain.checkpoint');

    // A tampered checkpoint.
    const tampered = copy();
    tampered.checkpoints[0]!.evidence = flip(tampered.checkpoints[0]!.evidence, 40);
    expectRejected(appraise(tampered), 'chain.checkpoint');
  });

  it('rejects claims that do not match the bundle (cid, function, version)', () => {
    const otherCid = copy();
    otherCid.invocation.cid = 'c_other';
    expectRejected(appraise(otherCid), 'native.binding');
    expectRejected(appraise(otherCid), 'evidence.claims');
    const otherVersion = copy();
    otherVersion.invocation.versionDigest = `sha256:${'00'.repeat(32)}`;
    expectRejected(appraise(otherVersion), 'evidence.claims');
    const otherKey = copy();
    otherKey.enclaves[0]!.publicKey = otherKey.enclaves[1]!.publicKey;
    expectRejected(appraise(otherKey), 'native.binding');
  });

  it('reports bundle-level problems in the bundle submod', () => {
    expectRejected(appraise({ format: 'something-else' }), 'bundle.schema');
    expectRejected(appraise('not even an object'), 'bundle.schema');
    const orphan = copy();
    orphan.enclaves = orphan.enclaves.slice(1);
    expectRejected(appraise(orphan), 'bundle.enclaves');
    const unused = copy();
    unused.executions = unused.executions.slice(1);
    unused.checkpoints = [];
    expectRejected(appraise(unused), 'bundle.enclaves');
    const empty = copy();
    empty.executions = [];
    empty.enclaves = [];
    empty.chain = [];
    empty.checkpoints = [];
    expectRejected(appraise(empty), 'bundle.executions');
  });

  it('warns about stale evidence when a maximum age is set', () => {
    const result = appraise(copy(), { maxAgeSeconds: 60, now: new Date(now.getTime() + 3_600_000) });
    expect(result['ear.status']).toBe('warning');
    expectRejected(result, 'evidence.freshness');
  });

  it('has a zod schema for the JSON form', () => {
    expect(evidenceBundleSchema.parse(copy())).toEqual(sample.bundle);
    const json = copy() as unknown as Record<string, unknown>;
    delete json.chain;
    delete json.checkpoints;
    expect(parseEvidenceBundle(json).chain).toEqual([]);
    const bad = copy();
    bad.enclaves[0]!.publicKey = 'XYZ';
    expect(() => parseEvidenceBundle(bad)).toThrow(/enclaves\.0\.publicKey/);
  });
});

function expectRejectedResult(result: EarResult, check: string): EarResult {
  expectRejected(result, check);
  return result;
}

function decodeEvidenceDigest(b64: string): Buffer {
  return createHashSha256(Buffer.from(b64, 'base64'));
}

import { createHash } from 'node:crypto';
function createHashSha256(bytes: Buffer): Buffer {
  return createHash('sha256').update(bytes).digest();
}
