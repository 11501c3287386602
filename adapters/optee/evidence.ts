import { createHash, createPublicKey, verify as verifySignature } from 'node:crypto';
import { z } from 'zod';
import type { EvidenceBundle } from '../../runtime/evidence/bundle.ts';
import type { EvidenceFormatVerifier } from '../../runtime/evidence/formats.ts';
import {
  APPRAISAL_POLICY,
  BUNDLE_SUBMOD,
  EAR_PROFILE,
  VERIFIER_ID,
  type EarReason,
  type EarResult,
  type EarStatus,
  type EarSubmod,
  type VerifyBundleOptions,
} from '../../runtime/evidence/verify.ts';
import { uuidBytes } from './agent-client.ts';

/**
 * OP-TEE evidence. Each execution is signed in the secure world: the stage TA hashes the request it got
 * and the response it made, and the attestation TA signs
 *   SHA-256( "ebcc-optee-evidence/1" 0x00 ‖ caller TA UUID ‖ "exec" ‖ seq:u32 ‖ SHA-256(request) ‖
 *            SHA-256(response) ‖ SHA-256(context) )
 * with an ECDSA P-256 key generated in and kept by the secure world, where the caller UUID is the one the TEE
 * reports for the calling TA (not the REE's word). `context` is the canonical JSON the adapter binds (the
 * execution's bound metadata). See docs/backends.md for what this proves and does not.
 */
export const OPTEE_NATIVE_FORMAT = 'ebcc-optee/1';
export const OPTEE_EVIDENCE_FORMAT = 'ebcc-optee-evidence/1';
export const OPTEE_CONTEXT_FORMAT = 'ebcc-optee-context/1';
export const OPTEE_ANCHOR_KIND = 'ebcc-optee-attestation-key';
export const EVIDENCE_LABEL = 'ebcc-optee-evidence/1';

const hex = (n: number) => z.string().regex(new RegExp(`^[0-9a-f]{${n * 2}}$`));
const uuid = z.string().regex(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);

export const opteeEvidenceSchema = z.strictObject({
  format: z.literal(OPTEE_EVIDENCE_FORMAT),
  taUuid: uuid,
  seq: z.number().int().positive(),
  /** ECDSA P-256 signature, r ‖ s. */
  signature: hex(64),
  /** Uncompressed P-256 point of the attestation key. */
  attestationKey: hex(65),
});
export type OpteeEvidence = z.infer<typeof opteeEvidenceSchema>;

export const opteeNativeSchema = z.strictObject({
  format: z.literal(OPTEE_NATIVE_FORMAT),
  taUuid: uuid,
  attestationKey: hex(65),
  board: z.string(),
});

export const opteeContextSchema = z.strictObject({
  format: z.literal(OPTEE_CONTEXT_FORMAT),
  backend: z.string(),
  function: z.string(),
  versionDigest: z.string(),
  cid: z.string(),
  eid: z.number().int(),
  stage: z.string(),
  seq: z.number().int(),
  taUuid: uuid,
  measurement: z.strictObject({ alg: z.string(), value: z.string() }),
  nonce: z.string().nullable(),
  attestationKey: hex(65),
});
export type OpteeContext = z.infer<typeof opteeContextSchema>;

export const opteeAnchorSchema = z.strictObject({
  kind: z.literal(OPTEE_ANCHOR_KIND),
  /** Attestation keys recorded at provisioning (one per board boot on a board without persistent storage). */
  keys: z.array(z.strictObject({ publicKey: hex(65), board: z.string(), provisionedAt: z.string() })),
});
export type OpteeAnchor = z.infer<typeof opteeAnchorSchema>;

const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest();

/** The exact bytes the attestation TA signs (after hashing) for one execution. */
export function executionMessage(
  taUuid: string,
  seq: number,
  request: Uint8Array,
  response: Uint8Array,
  context: Uint8Array,
): Buffer {
  const seqBytes = Buffer.alloc(4);
  seqBytes.writeUInt32BE(seq);
  return Buffer.concat([
    Buffer.from(`${EVIDENCE_LABEL}\0`),
    uuidBytes(taUuid),
    Buffer.from('exec'),
    seqBytes,
    sha256(request),
    sha256(response),
    sha256(context),
  ]);
}

export function p256Key(point: string) {
  const raw = Buffer.from(point, 'hex');
  return createPublicKey({
    key: {
      kty: 'EC',
      crv: 'P-256',
      x: raw.subarray(1, 33).toString('base64url'),
      y: raw.subarray(33, 65).toString('base64url'),
    },
    format: 'jwk',
  });
}

const reason = (check: string, ok: boolean, detail: string): EarReason => ({ check, ok, detail });
const statusOf = (reasons: EarReason[]): EarStatus =>
  reasons.every((r) => r.ok) ? 'affirming' : 'contraindicated';

function parseJson<T>(schema: z.ZodType<T>, bytes: Buffer): T | undefined {
  try {
    return schema.parse(JSON.parse(bytes.toString('utf8')));
  } catch {
    return undefined;
  }
}

/** Appraises a bundle of OP-TEE executions; the result has the same shape as `verifyBundle`'s. */
export function verifyOpteeBundle(bundle: EvidenceBundle, options: VerifyBundleOptions): EarResult {
  const policy = options.allowSim ? `${APPRAISAL_POLICY}:allow-sim` : APPRAISAL_POLICY;
  const now = Math.floor((options.now ?? new Date()).getTime() / 1000);
  const anchors = (options.foreignAnchors ?? []).flatMap((a) => {
    const parsed = opteeAnchorSchema.safeParse(a);
    return parsed.success ? parsed.data.keys.map((k) => k.publicKey) : [];
  });
  const submods: Record<string, EarSubmod> = {};
  const bundleReasons = [
    reason('bundle.schema', true, 'ebcc-evidence-bundle/1'),
    reason('bundle.executions', bundle.executions.length > 0, `${bundle.executions.length} execution(s)`),
  ];
  submods[BUNDLE_SUBMOD] = {
    'ear.status': statusOf(bundleReasons),
    'ear.appraisal-policy-id': policy,
    'ebcc.reasons': bundleReasons,
  };
  for (const execution of bundle.executions) {
    const r: EarReason[] = [];
    const enclave = bundle.enclaves.find((e) => e.eid === execution.eid);
    const artifacts = {
      request: Buffer.from(execution.artifacts.request, 'base64'),
      response: Buffer.from(execution.artifacts.response, 'base64'),
      metadata: Buffer.from(execution.artifacts.metadata, 'base64'),
    };
    const evidence = parseJson(opteeEvidenceSchema, Buffer.from(execution.evidence, 'base64'));
    const native = enclave
      ? parseJson(opteeNativeSchema, Buffer.from(enclave.nativeEvidence, 'base64'))
      : undefined;
    const context = parseJson(opteeContextSchema, artifacts.metadata);
    r.push(
      reason(
        'native.format',
        Boolean(enclave && native),
        native ? OPTEE_NATIVE_FORMAT : 'enclave or its OP-TEE record missing',
      ),
    );
    r.push(
      reason(
        'evidence.format',
        Boolean(evidence),
        evidence ? OPTEE_EVIDENCE_FORMAT : 'not OP-TEE execution evidence',
      ),
    );
    r.push(
      reason(
        'evidence.context',
        Boolean(context),
        context ? OPTEE_CONTEXT_FORMAT : 'the bound metadata is not an OP-TEE context',
      ),
    );
    if (evidence && context && enclave && native) {
      r.push(
        anchors.includes(evidence.attestationKey)
          ? reason(
              'native.trust-anchor',
              true,
              `attestation key ${evidence.attestationKey.slice(0, 16)}… was recorded at provisioning`,
            )
          : reason(
              'native.trust-anchor',
              false,
              `attestation key ${evidence.attestationKey.slice(0, 16)}… is not a trust anchor`,
            ),
      );
      let signed: boolean;
      try {
        const message = executionMessage(
          evidence.taUuid,
          evidence.seq,
          artifacts.request,
          artifacts.response,
          artifacts.metadata,
        );
        signed = verifySignature(
          'sha256',
          message,
          { key: p256Key(evidence.attestationKey), dsaEncoding: 'ieee-p1363' },
          Buffer.from(evidence.signature, 'hex'),
        );
      } catch {
        signed = false;
      }
      r.push(
        signed
          ? reason(
              'evidence.signature',
              true,
              `the secure world signed SHA-256 of this request, response and context for TA ${evidence.taUuid} seq ${evidence.seq}`,
            )
          : reason(
              'evidence.signature',
              false,
              'the signature does not cover these artifacts under this TA identity and attestation key',
            ),
      );
      const mismatches: string[] = [];
      const same = (name: string, a: unknown, b: unknown) => {
        if (a !== b) mismatches.push(`${name} ${String(a)} ≠ ${String(b)}`);
      };
      same('function', context.function, bundle.invocation.function);
      same('versionDigest', context.versionDigest, bundle.invocation.versionDigest);
      same('cid', context.cid, bundle.invocation.cid);
      same('eid', context.eid, execution.eid);
      same('seq', context.seq, execution.seq);
      same('signed seq', evidence.seq, execution.seq);
      same('stage', context.stage, enclave.stage);
      same('backend', context.backend, enclave.backend);
      same('taUuid', context.taUuid, evidence.taUuid);
      same('enclave taUuid', native.taUuid, evidence.taUuid);
      same('attestationKey', context.attestationKey, evidence.attestationKey);
      same(
        'measurement',
        `${context.measurement.alg}:${context.measurement.value}`,
        `${enclave.measurement.alg}:${enclave.measurement.value}`,
      );
      r.push(
        reason(
          'evidence.claims',
          mismatches.length === 0,
          mismatches.length
            ? mismatches.join('; ')
            : 'context matches the invocation, enclave and signed identity',
        ),
      );
      if (options.nonce) {
        const expected = Buffer.from(options.nonce).toString('hex');
        r.push(
          reason(
            'evidence.nonce',
            context.nonce === expected,
            context.nonce === expected ? 'nonce matches' : `nonce ${String(context.nonce)} ≠ ${expected}`,
          ),
        );
      }
      if (options.referenceValues) {
        const accepted = options.referenceValues
          .filter((v) => v.stage === undefined || v.stage === enclave.stage)
          .flatMap((v) => v.measurements)
          .some(
            (m) =>
              m.alg === enclave.measurement.alg &&
              (typeof m.value === 'string' ? m.value.toLowerCase() : Buffer.from(m.value).toString('hex')) ===
                enclave.measurement.value,
          );
        r.push(
          reason(
            'measurement.reference',
            accepted,
            accepted
              ? 'the .ta digest is a reference value'
              : 'the .ta digest is not among the reference values',
          ),
        );
      }
      r.push(
        options.allowSim
          ? reason(
              'hardware',
              true,
              "OP-TEE on an emulated board with the dev kit's public TA signing key: accepted by allowSim (--allow-sim); no hardware protection established",
            )
          : reason(
              'hardware',
              false,
              'OP-TEE evidence from a board whose TA signing key is public and whose secure world is emulated; accepted only with allowSim (--allow-sim)',
            ),
      );
    }
    submods[`${enclave?.stage ?? '?'}#${execution.eid}#${execution.seq}`] = {
      'ear.status': statusOf(r),
      'ear.appraisal-policy-id': policy,
      ...(options.nonce ? { eat_nonce: Buffer.from(options.nonce).toString('base64url') } : {}),
      'ebcc.reasons': r,
    };
  }
  const statuses = Object.values(submods).map((s) => s['ear.status']);
  return {
    eat_profile: EAR_PROFILE,
    iat: now,
    'ear.verifier-id': { ...VERIFIER_ID },
    'ear.status': statuses.includes('contraindicated')
      ? 'contraindicated'
      : statuses.includes('warning')
        ? 'warning'
        : 'affirming',
    submods,
  };
}

export const opteeEvidenceVerifier: EvidenceFormatVerifier = {
  nativeFormat: OPTEE_NATIVE_FORMAT,
  ownsAnchor: (json) => opteeAnchorSchema.safeParse(json).success,
  verify: verifyOpteeBundle,
};
