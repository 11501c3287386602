/**
 * Secrets released only after attestation (docs/security.md, "Key release"). This is the part that runs
 * inside the key broker's enclave (bundled into the sim shim): open a tenant's sealed secret, appraise
 * the requesting enclave's native evidence against the secret's policy, and, only if it matches, seal
 * the secret to that enclave's attested encryption key. The host carries the envelopes and never holds
 * the secret in clear. Imports only node:crypto-based helpers (no zod), so that it bundles small.
 */
import { enclaveBinding } from '../evidence/binding.ts';
import { decodeKeystoneReport, verifyKeystoneReport } from '../evidence/keystone.ts';
import { canonicalJson } from '../util/canonical-json.ts';
import { openRequest, parseSealedRequest, SealError } from '../seal/envelope.ts';
import { setupRecipient, setupSender, type X25519KeyPair } from '../seal/hpke.ts';

export const SECRET_FORMAT = 'ebcc-secret/1';
export const RELEASED_FORMAT = 'ebcc-released-secret/1';
const RELEASE_INFO = Buffer.from('ebcc-key-release/1');

/** Which enclaves may receive a secret: one stage, and the measurements it may have. */
export interface ReleasePolicy {
  stage: string;
  /** Lower-case hex SHA3-512 enclave hashes (the stage's measurement on its backend). */
  measurements: string[];
}

/** The plaintext a tenant seals to the broker (with `policy` also shown in clear, as `public`). */
export interface SecretPlaintext {
  format: typeof SECRET_FORMAT;
  name: string;
  /** base64url of the secret bytes. */
  secret: string;
  policy: ReleasePolicy;
}

/** What the host hands the broker about the enclave that wants the secret (an evidence-bundle enclave). */
export interface Requester {
  cid: string;
  eid: number;
  stage: string;
  /** hex */
  publicKey: string;
  /** hex */
  encryptionKey: string;
  nativeFormat: string;
  /** standard base64 */
  nativeEvidence: string;
  measurement: { alg: string; value: string };
}

export type ReleaseOutcome = { ok: true; name: string; released: Buffer } | { ok: false; reason: string };

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

export function parsePolicy(value: unknown): ReleasePolicy {
  if (
    !isObject(value) ||
    typeof value.stage !== 'string' ||
    !Array.isArray(value.measurements) ||
    !value.measurements.every((m) => typeof m === 'string' && /^[0-9a-f]{128}$/.test(m))
  )
    throw new SealError('invalid', 'a policy is {stage, measurements: [128 hex digits, …]}');
  return { stage: value.stage, measurements: value.measurements as string[] };
}

function releaseAad(name: string, r: Pick<Requester, 'cid' | 'eid' | 'stage' | 'encryptionKey'>): Buffer {
  return Buffer.from(
    canonicalJson({
      format: RELEASED_FORMAT,
      name,
      cid: r.cid,
      eid: r.eid,
      stage: r.stage,
      to: r.encryptionKey,
    }),
  );
}

/** Why the requester may not have the secret, or null when its evidence satisfies the policy. */
export function appraiseRequester(
  requester: Requester,
  policy: ReleasePolicy,
  deviceKey: Uint8Array,
): string | null {
  if (requester.stage !== policy.stage)
    return `the policy releases to stage "${policy.stage}", not "${requester.stage}"`;
  if (requester.nativeFormat !== 'keystone-report')
    return `native evidence format ${requester.nativeFormat} is not appraised`;
  const native = Buffer.from(requester.nativeEvidence, 'base64');
  let report;
  try {
    report = decodeKeystoneReport(native);
  } catch (error) {
    return `the native evidence does not decode: ${(error as Error).message}`;
  }
  const verdict = verifyKeystoneReport(report, { trustedDeviceKeys: [deviceKey] });
  if (!verdict.ok) return `the native evidence does not verify: ${verdict.reasons.join('; ')}`;
  let binding: Buffer;
  try {
    binding = enclaveBinding({
      publicKey: Buffer.from(requester.publicKey, 'hex'),
      encryptionKey: Buffer.from(requester.encryptionKey, 'hex'),
      cid: requester.cid,
      eid: requester.eid,
      stage: requester.stage,
    });
  } catch (error) {
    return `the requester's keys are malformed: ${(error as Error).message}`;
  }
  if (!report.data.equals(binding))
    return 'the native evidence does not bind this encryption key, cid, eid and stage';
  const measured = report.enclaveHash.toString('hex');
  if (!policy.measurements.includes(measured))
    return `measurement sha3-512:${measured} is not one the policy of this secret allows`;
  return null;
}

/** Inside the broker: open the tenant's sealed secret and release it to the requester, or say why not. */
export function release(
  sealedSecret: Uint8Array,
  requester: Requester,
  brokerKey: X25519KeyPair,
  deviceKey: Uint8Array,
): ReleaseOutcome {
  let plaintext: SecretPlaintext;
  try {
    const envelope = parseSealedRequest(sealedSecret);
    if (!envelope) return { ok: false, reason: 'the secret is not a sealed envelope' };
    const opened = openRequest(sealedSecret, envelope, brokerKey);
    const value: unknown = JSON.parse(opened.plaintext.toString('utf8'));
    if (
      !isObject(value) ||
      value.format !== SECRET_FORMAT ||
      typeof value.name !== 'string' ||
      typeof value.secret !== 'string'
    )
      return { ok: false, reason: `the sealed plaintext is not an ${SECRET_FORMAT}` };
    // The policy shown in clear (what the host logs) is checked equal to the sealed one by openRequest.
    if (!opened.public || !('policy' in opened.public))
      return { ok: false, reason: 'the sealed secret does not show its policy' };
    plaintext = { ...(value as unknown as SecretPlaintext), policy: parsePolicy(value.policy) };
  } catch (error) {
    if (error instanceof SealError || error instanceof SyntaxError)
      return { ok: false, reason: `the sealed secret does not open: ${error.message}` };
    throw error;
  }
  const why = appraiseRequester(requester, plaintext.policy, deviceKey);
  if (why) return { ok: false, reason: why };
  const { enc, context } = setupSender(Buffer.from(requester.encryptionKey, 'hex'), { info: RELEASE_INFO });
  const ct = context.seal(Buffer.from(plaintext.secret, 'base64url'), releaseAad(plaintext.name, requester));
  const released = Buffer.from(
    JSON.stringify({
      format: RELEASED_FORMAT,
      name: plaintext.name,
      enc: enc.toString('base64url'),
      ct: ct.toString('base64url'),
    }),
  );
  return { ok: true, name: plaintext.name, released };
}

/** Inside the receiving enclave: open a released secret with the enclave's own key. */
export function openReleased(
  released: Uint8Array,
  self: Pick<Requester, 'cid' | 'eid' | 'stage'>,
  key: X25519KeyPair,
): { name: string; secret: Buffer } {
  const value: unknown = JSON.parse(Buffer.from(released).toString('utf8'));
  if (!isObject(value) || value.format !== RELEASED_FORMAT || typeof value.name !== 'string')
    throw new SealError('invalid', `not an ${RELEASED_FORMAT}`);
  const context = setupRecipient(Buffer.from(String(value.enc), 'base64url'), key, { info: RELEASE_INFO });
  const aad = releaseAad(value.name, { ...self, encryptionKey: key.publicKey.toString('hex') });
  return { name: value.name, secret: context.open(Buffer.from(String(value.ct), 'base64url'), aad) };
}
