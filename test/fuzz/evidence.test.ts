// Fuzzing the evidence decoders and the offline verifier: hostile bytes into the COSE/EAT and Keystone
// report decoders, and mutations of recorded evidence bundles (runtime/evidence/sample.ts) into
// verifyBundle. Every decoder answers or throws its documented error; the verifier never throws, and
// rejects every mutation of signed or digested material with a failed check.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  EvidenceFormatError,
  KeystoneReportError,
  createSampleBundle,
  decodeEvidence,
  decodeKeystoneReport,
  failedChecks,
  verifyBundle,
  verifyEvidenceSignature,
  verifyKeystoneReport,
  type SampleBundle,
} from '../../runtime/evidence/index.ts';
import { fuzz, fuzzTimeout, mutationsOf } from '../helpers/fuzz.ts';

const now = new Date();
const nonce = Buffer.from('fuzzing-nonce-01');
const samples: Record<string, SampleBundle> = {
  sim: createSampleBundle({ nonce, now }),
  keystone: createSampleBundle({ nonce, now, hardware: true }),
};
const sample = samples.sim!;
const evidence = Buffer.from(sample.bundle.executions[0]!.evidence, 'base64');
const report = Buffer.from(sample.bundle.enclaves[0]!.nativeEvidence, 'base64');
const publicKey = Buffer.from(sample.bundle.enclaves[0]!.publicKey, 'hex');

/** Random bytes, mutations of a valid specimen, and a COSE_Sign1 prefix with junk after it. */
function inputs(specimen: Buffer) {
  const prefixed = fc
    .uint8Array({ maxLength: 256 })
    .map((tail) => Buffer.concat([Buffer.from([0xd2, 0x84]), tail]));
  return fc.oneof(
    fc.uint8Array({ maxLength: 2048 }).map((b) => Buffer.from(b)),
    mutationsOf(specimen),
    prefixed,
  );
}

function onlyTyped(fn: () => unknown, type: typeof EvidenceFormatError): void {
  try {
    fn();
  } catch (error) {
    if (!(error instanceof type)) throw error;
  }
}

describe('decoders on hostile bytes', () => {
  it(
    'decodeEvidence returns or throws EvidenceFormatError, and only the original verifies',
    () =>
      fuzz(
        'evidence: COSE/EAT decoder',
        fc.property(inputs(evidence), (bytes) => {
          onlyTyped(() => decodeEvidence(bytes), EvidenceFormatError);
          const valid = verifyEvidenceSignature(bytes, publicKey);
          expect(valid).toBe(Buffer.from(bytes).equals(evidence));
        }),
        500,
      ),
    fuzzTimeout(),
  );

  it(
    'decodeKeystoneReport returns or throws KeystoneReportError; verification never throws',
    () =>
      fuzz(
        'evidence: Keystone report decoder',
        fc.property(inputs(report), (bytes) => {
          onlyTyped(() => decodeKeystoneReport(bytes), KeystoneReportError);
          const result = verifyKeystoneReport(bytes, { trustedDeviceKeys: [sample.root.devicePublicKey] });
          // Only unsigned padding may differ from the original, and strict decoding forbids that.
          if (result.ok) expect(Buffer.from(bytes).equals(report)).toBe(true);
        }),
        500,
      ),
    fuzzTimeout(),
  );

  it(
    'verifyBundle never throws on arbitrary JSON',
    () =>
      fuzz(
        'evidence: verifier on arbitrary JSON',
        fc.property(fc.jsonValue({ maxDepth: 4 }), (json) => {
          const result = verifyBundle(json, { trustAnchors: [sample.trustAnchor], allowSim: true });
          expect(result['ear.status']).toBe('contraindicated');
        }),
        200,
      ),
    fuzzTimeout(),
  );
});

type Json = any;
/** Paths to every string and number in a document, with what kind of field each is. */
function leaves(value: Json, at: (string | number)[] = []): { path: (string | number)[]; value: unknown }[] {
  if (Array.isArray(value)) return value.flatMap((v, i) => leaves(v, [...at, i]));
  if (value && typeof value === 'object')
    return Object.entries(value).flatMap(([k, v]) => leaves(v, [...at, k]));
  return [{ path: at, value }];
}
const getAt = (doc: Json, path: (string | number)[]) => path.reduce((o, k) => o[k], doc);
function setAt(doc: Json, path: (string | number)[], value: unknown): void {
  getAt(doc, path.slice(0, -1))[path.at(-1)!] = value;
}
const isBase64Field = (path: (string | number)[]) =>
  ['evidence', 'nativeEvidence', 'request', 'response', 'log', 'metadata'].includes(String(path.at(-1)));
const isHexField = (path: (string | number)[]) =>
  ['publicKey', 'encryptionKey', 'value', 'nonce'].includes(String(path.at(-1)));

/**
 * Fields a verifier does not bind, by design (docs/evidence.md): editing them must not matter, so they
 * are left out here. `invocation.nonce` is informational: the verifier compares every eat_nonce with
 * the nonce it expects itself, not with the one the bundle claims.
 */
const UNBOUND = new Set(['invocation.id', 'invocation.version', 'invocation.nonce', 'format']);

/** One edit of a recorded bundle, small enough to read in a counterexample; applied by `apply`. */
type Edit =
  | {
      path: (string | number)[];
      bytes: { at: number; xor: number }[] | { cut: number } | { insert: number; junk: string };
    }
  | { path: (string | number)[]; set: unknown }
  | { array: string; op: 'drop' | 'duplicate' | 'move-to-other-enclave'; index: number };

function apply(bundle: Json, edit: Edit): { doc: Json; changed: boolean } {
  const doc = structuredClone(bundle);
  if ('array' in edit) {
    const list = doc[edit.array] as Json[];
    const at = edit.index % list.length;
    if (edit.op === 'drop') list.splice(at, 1);
    else if (edit.op === 'duplicate') list.push(structuredClone(list[at]));
    else {
      // Evidence signed by one enclave presented as another's.
      const other = doc.enclaves.map((e: Json) => e.eid).find((e: number) => e !== list[at].eid);
      if (other === undefined) list.splice(at, 1);
      else list[at].eid = other;
    }
    return { doc, changed: true };
  }
  const before = getAt(bundle, edit.path);
  if ('set' in edit) {
    setAt(doc, edit.path, edit.set);
    return { doc, changed: JSON.stringify(before) !== JSON.stringify(edit.set) };
  }
  const bytes = Buffer.from(before as string, 'base64');
  let out: Buffer;
  if (Array.isArray(edit.bytes)) {
    out = Buffer.from(bytes);
    for (const { at, xor } of edit.bytes) if (out.length) out[at % out.length]! ^= xor;
  } else if ('cut' in edit.bytes) out = bytes.subarray(0, edit.bytes.cut % (bytes.length + 1));
  else {
    const at = edit.bytes.insert % (bytes.length + 1);
    out = Buffer.concat([bytes.subarray(0, at), Buffer.from(edit.bytes.junk, 'hex'), bytes.subarray(at)]);
  }
  setAt(doc, edit.path, out.toString('base64'));
  return { doc, changed: !out.equals(bytes) };
}

/**
 * Edits of signed or digested material, of an identity the bundle claims, or of its entry lists.
 * Dropping a checkpoint is left out: it only says the enclave was not destroyed, which no verifier can
 * tell from the enclave still running.
 */
function boundEdit(bundle: Json): fc.Arbitrary<Edit> {
  const fields = leaves(bundle).filter(({ path }) => !UNBOUND.has(path.join('.')));
  const fieldEdit = fc.constantFrom(...fields).chain(({ path, value }): fc.Arbitrary<Edit> => {
    if (typeof value === 'string' && isBase64Field(path)) {
      return fc
        .oneof(
          fc.array(fc.record({ at: fc.nat(), xor: fc.integer({ min: 1, max: 255 }) }), {
            minLength: 1,
            maxLength: 4,
          }),
          fc.record({ cut: fc.nat() }),
          fc.record({
            insert: fc.nat(),
            junk: fc.uint8Array({ minLength: 1, maxLength: 16 }).map((b) => Buffer.from(b).toString('hex')),
          }),
        )
        .map((bytes) => ({ path, bytes }));
    }
    if (typeof value === 'string' && isHexField(path) && value.length > 0) {
      return fc
        .tuple(fc.nat(value.length - 1), fc.constantFrom(...'0123456789abcdef'))
        .map(([i, c]) => ({ path, set: value.slice(0, i) + c + value.slice(i + 1) }));
    }
    if (typeof value === 'number')
      return fc.oneof(fc.integer({ min: -1, max: 20 }), fc.constant(2 ** 32)).map((n) => ({ path, set: n }));
    return fc
      .oneof(fc.string({ minLength: 1, maxLength: 12 }), fc.constant(`${String(value)}x`))
      .map((v) => ({ path, set: v }));
  });
  const arrays = ['enclaves', 'executions', 'chain', 'checkpoints'].filter((k) => bundle[k].length > 0);
  const arrayEdit = fc
    .record({
      array: fc.constantFrom(...arrays),
      op: fc.constantFrom('drop' as const, 'duplicate' as const, 'move-to-other-enclave' as const),
      index: fc.nat(),
    })
    .filter((e) => !(e.array === 'checkpoints' && e.op === 'drop'));
  return fc.oneof({ weight: 4, arbitrary: fieldEdit }, { weight: 1, arbitrary: arrayEdit });
}

for (const [name, s] of Object.entries(samples)) {
  const options = {
    trustAnchors: [s.trustAnchor],
    referenceValues: s.referenceValues,
    nonce,
    allowSim: true,
    now,
  };
  const original = s.bundle as Json;

  describe(`recorded ${name} evidence bundle under mutation`, () => {
    it('the unmutated bundle verifies (the baseline every mutation is compared with)', () => {
      const result = verifyBundle(structuredClone(original), options);
      expect(failedChecks(result)).toEqual([]);
      expect(result['ear.status']).not.toBe('contraindicated');
    });

    it(
      'every mutation of signed or digested material, or of an identity it claims, fails a check',
      () =>
        fuzz(
          `evidence: ${name} bundle mutations`,
          fc.property(boundEdit(original), (edit) => {
            const { doc, changed } = apply(original, edit);
            if (!changed) return;
            const result = verifyBundle(doc, options);
            expect(result['ear.status']).toBe('contraindicated');
            expect(failedChecks(result).length).toBeGreaterThan(0);
          }),
          300,
        ),
      fuzzTimeout(),
    );

    it(
      'arbitrary structural edits: the verifier answers with a result, never an exception',
      () =>
        fuzz(
          `evidence: ${name} bundle structural edits`,
          fc.property(
            fc.constantFrom(...leaves(original).map((l) => l.path)),
            fc.jsonValue({ maxDepth: 2 }),
            (path, value) => {
              const doc = structuredClone(original);
              setAt(doc, path, value);
              const result = verifyBundle(doc, options);
              expect(['affirming', 'warning', 'contraindicated']).toContain(result['ear.status']);
              if (
                JSON.stringify(getAt(original, path)) !== JSON.stringify(value) &&
                !UNBOUND.has(path.join('.'))
              )
                expect(result['ear.status'], `${path.join('.')} = ${JSON.stringify(value)}`).toBe(
                  'contraindicated',
                );
            },
          ),
          300,
        ),
      fuzzTimeout(),
    );
  });
}
