import { z } from 'zod';
import { EvidenceFormatError } from './errors.ts';

/**
 * The evidence bundle: everything a verifier needs to appraise one invocation offline, and the file
 * `ebcc export` writes. Byte strings are standard base64 (RFC 4648 section 4, padded); keys and
 * measurement values are lower-case hex. See docs/evidence.md.
 */
export const EVIDENCE_BUNDLE_FORMAT = 'ebcc-evidence-bundle/1';

const base64 = z
  .string()
  .regex(/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/, 'standard padded base64');
const hex = z.string().regex(/^(?:[0-9a-f]{2})*$/, 'lower-case hex');
const hexKey = z.string().regex(/^[0-9a-f]{64}$/, '32 bytes of lower-case hex');
const eid = z.number().int().nonnegative();
const seq = z.number().int().positive();

export const bundleMeasurementSchema = z.strictObject({ alg: z.string().min(1), value: hex });

export const bundleEnclaveSchema = z.strictObject({
  eid,
  stage: z.string().min(1),
  backend: z.string().min(1),
  /** Raw Ed25519 evidence key of the enclave; empty for formats whose executions are signed elsewhere. */
  publicKey: hexKey.or(z.literal('')),
  /** Raw X25519 key, when the enclave has one (it is part of the binding). */
  encryptionKey: hexKey.optional(),
  /** Only `keystone-report` is appraised today (sim and Keystone); other formats are reported unsupported. */
  nativeFormat: z.string().min(1),
  nativeEvidence: base64,
  /** The measurement recorded at deploy for the stage on this backend. */
  measurement: bundleMeasurementSchema,
});

export const bundleEntrySchema = z.strictObject({ eid, seq, evidence: base64 });

export const bundleExecutionSchema = z.strictObject({
  eid,
  seq,
  evidence: base64,
  artifacts: z.strictObject({ request: base64, response: base64, log: base64, metadata: base64 }),
  /** Artifacts given empty because they cannot be read (their data key was shredded); only their digests are signed. */
  withheld: z.array(z.enum(['request', 'response', 'log'])).optional(),
});

/** What the bundle holds: the tenant's artifacts in clear, or (after crypto-shredding) digests only. */
export const bundleContentsSchema = z.strictObject({
  artifacts: z.enum(['plaintext', 'withheld']),
  detail: z.string().optional(),
});

export const bundleInvocationSchema = z.looseObject({
  id: z.string().min(1),
  function: z.string().min(1),
  version: z.string().optional(),
  versionDigest: z.string().min(1),
  cid: z.string().min(1),
  /** The nonce the client supplied, if any (hex); a verifier compares against its own expectation. */
  nonce: hex.optional(),
});

export const evidenceBundleSchema = z.strictObject({
  format: z.literal(EVIDENCE_BUNDLE_FORMAT),
  contents: bundleContentsSchema.optional(),
  invocation: bundleInvocationSchema,
  enclaves: z.array(bundleEnclaveSchema),
  executions: z.array(bundleExecutionSchema),
  /** Earlier entries of the same enclaves (evidence only), so that continuity from seq 1 can be checked. */
  chain: z.array(bundleEntrySchema).default([]),
  /** Checkpoints of enclaves that were destroyed; each closes its enclave's chain. */
  checkpoints: z.array(bundleEntrySchema).default([]),
});

export type EvidenceBundle = z.output<typeof evidenceBundleSchema>;
export type EvidenceBundleInput = z.input<typeof evidenceBundleSchema>;
export type BundleEnclave = z.output<typeof bundleEnclaveSchema>;
export type BundleExecution = z.output<typeof bundleExecutionSchema>;
export type BundleEntry = z.output<typeof bundleEntrySchema>;

/** Validate the JSON form of a bundle; throws `EvidenceFormatError` (code `bundle`) listing the issues. */
export function parseEvidenceBundle(json: unknown): EvidenceBundle {
  const result = evidenceBundleSchema.safeParse(json);
  if (!result.success) {
    const issues = result.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`);
    throw new EvidenceFormatError('bundle', `not an evidence bundle: ${issues.slice(0, 5).join('; ')}`);
  }
  return result.data;
}

/** Standard base64, as bundles carry byte strings. */
export function toBase64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
}
