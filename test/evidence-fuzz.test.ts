import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  EvidenceFormatError,
  KeystoneReportError,
  createSampleBundle,
  decodeEvidence,
  decodeKeystoneReport,
  verifyBundle,
  verifyEvidenceSignature,
  verifyKeystoneReport,
} from '../runtime/evidence/index.ts';

const sample = createSampleBundle({ nonce: Buffer.from('fuzzing-nonce-01') });
const evidence = Buffer.from(sample.bundle.executions[0]!.evidence, 'base64');
const report = Buffer.from(sample.bundle.enclaves[0]!.nativeEvidence, 'base64');
const publicKey = Buffer.from(sample.bundle.enclaves[0]!.publicKey, 'hex');

/** Random bytes, and mutations (flips, truncations, splices) of a valid specimen. */
function inputs(specimen: Buffer) {
  const mutated = fc
    .array(fc.tuple(fc.nat(specimen.length - 1), fc.integer({ min: 1, max: 255 })), {
      minLength: 1,
      maxLength: 4,
    })
    .map((edits) => {
      const copy = Buffer.from(specimen);
      for (const [at, xor] of edits) copy[at] = copy[at]! ^ xor;
      return copy;
    });
  const truncated = fc.nat(specimen.length).map((n) => specimen.subarray(0, n));
  const spliced = fc
    .tuple(fc.nat(specimen.length), fc.uint8Array({ maxLength: 64 }))
    .map(([at, junk]) => Buffer.concat([specimen.subarray(0, at), junk, specimen.subarray(at)]));
  const prefixed = fc
    .uint8Array({ maxLength: 256 })
    .map((tail) => Buffer.concat([Buffer.from([0xd2, 0x84]), tail]));
  return fc.oneof(fc.uint8Array({ maxLength: 2048 }), mutated, truncated, spliced, prefixed);
}

function onlyTyped(fn: () => unknown, type: typeof EvidenceFormatError): void {
  try {
    fn();
  } catch (error) {
    if (!(error instanceof type)) throw error;
  }
}

describe('decoders on hostile bytes', () => {
  it('decodeEvidence returns or throws EvidenceFormatError, and only the original verifies', () => {
    fc.assert(
      fc.property(inputs(evidence), (bytes) => {
        onlyTyped(() => decodeEvidence(bytes), EvidenceFormatError);
        const valid = verifyEvidenceSignature(bytes, publicKey);
        expect(valid).toBe(Buffer.from(bytes).equals(evidence));
      }),
      { numRuns: 500, seed: 4242 },
    );
  });

  it('decodeKeystoneReport returns or throws KeystoneReportError; verification never throws', () => {
    fc.assert(
      fc.property(inputs(report), (bytes) => {
        onlyTyped(() => decodeKeystoneReport(bytes), KeystoneReportError);
        const result = verifyKeystoneReport(bytes, { trustedDeviceKeys: [sample.root.devicePublicKey] });
        if (result.ok) {
          // Only unsigned padding may differ from the original, and strict decoding forbids that.
          expect(Buffer.from(bytes).equals(report)).toBe(true);
        }
      }),
      { numRuns: 500, seed: 4243 },
    );
  });

  it('verifyBundle never throws on arbitrary JSON', () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 4 }), (json) => {
        const result = verifyBundle(json, { trustAnchors: [sample.trustAnchor], allowSim: true });
        expect(result['ear.status']).toBe('contraindicated');
      }),
      { numRuns: 200, seed: 4244 },
    );
  });
});
