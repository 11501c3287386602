import type { KeyObject } from 'node:crypto';
import { enclaveBinding, genesisDigest } from './binding.ts';
import { evidenceFormatVerifier } from './formats.ts';
import { parseEvidenceBundle, type BundleEnclave, type EvidenceBundle } from './bundle.ts';
import { verifyCoseSign1 } from './cose.ts';
import { decodeEvidence, evidenceDigest, type DecodedEvidence, type EvidenceKind } from './eat.ts';
import { ed25519PublicKey, keyId, sha256, ueidFor } from './keys.ts';
import { decodeKeystoneReport, verifyKeystoneReport, type KeystoneReport } from './keystone.ts';
import { SOFTWARE_ROOT_KIND, type TrustAnchor, type TrustAnchorKind } from './software-root.ts';

/** EAR (draft-ietf-rats-ear) as JSON: the attestation result `verifyBundle` returns. */
export const EAR_PROFILE = 'tag:github.com,2023:veraison/ear';
export const APPRAISAL_POLICY = 'urn:ebcc:policy:stage-execution:1';
export const VERIFIER_ID = { developer: 'urn:ebcc', build: 'ebcc-evidence/1' } as const;
/** The submod holding bundle-level checks (schema, enclave list). */
export const BUNDLE_SUBMOD = 'bundle';

export type EarStatus = 'affirming' | 'warning' | 'contraindicated';

export interface EarReason {
  /** A stable check name, e.g. `native.signatures`, `artifact.request`, `chain`. */
  check: string;
  ok: boolean;
  detail: string;
  /** A failed check with severity `warning` makes the submod "warning" instead of "contraindicated". */
  severity?: 'warning';
}

/** AR4SI trustworthiness claims, tier values only: 0 no claim, 2 affirming, 32 warning, 96 contraindicated. */
export interface TrustworthinessVector {
  'instance-identity': number;
  executables: number;
  hardware: number;
}

export interface EarSubmod {
  'ear.status': EarStatus;
  'ear.appraisal-policy-id': string;
  'ear.trustworthiness-vector'?: TrustworthinessVector;
  /** The expected nonce (base64url), when the verifier was given one. */
  eat_nonce?: string;
  'ebcc.reasons': EarReason[];
}

export interface EarResult {
  eat_profile: typeof EAR_PROFILE;
  /** Seconds since the epoch at appraisal. */
  iat: number;
  'ear.verifier-id': { developer: string; build: string };
  'ear.status': EarStatus;
  submods: Record<string, EarSubmod>;
}

export interface ReferenceValue {
  /** The stage these measurements apply to; omitted = every stage. */
  stage?: string;
  measurements: { alg: string; value: string | Uint8Array }[];
}

export interface VerifyBundleOptions {
  /**
   * Device public keys trusted as roots of native evidence. A bare key counts as a software root
   * (it can never vouch for hardware protection); pass `{kind: 'keystone-device', devicePublicKey}`
   * for a real device key, or `parseTrustAnchor(file)`.
   */
  trustAnchors: (TrustAnchor | Uint8Array)[];
  /** Trust anchors of registered evidence formats (see formats.ts), as parsed JSON. */
  foreignAnchors?: unknown[];
  /** Accepted measurements; when given, every stage must match one of its entries. */
  referenceValues?: ReferenceValue[];
  /** The nonce the verifier expects in every execution's eat_nonce. */
  nonce?: Uint8Array;
  /** Accept evidence without hardware protection (the sim backend, a software root). */
  allowSim: boolean;
  now?: Date;
  /** Evidence older than this is a warning. */
  maxAgeSeconds?: number;
  /** Tolerated clock skew for iat in the future (default 300 s). */
  clockSkewSeconds?: number;
}

const reason = (check: string, ok: boolean, detail: string, severity?: 'warning'): EarReason =>
  severity && !ok ? { check, ok, detail, severity } : { check, ok, detail };

function statusOf(reasons: EarReason[]): EarStatus {
  if (reasons.some((r) => !r.ok && r.severity !== 'warning')) return 'contraindicated';
  if (reasons.some((r) => !r.ok)) return 'warning';
  return 'affirming';
}

const rank: Record<EarStatus, number> = { affirming: 0, warning: 1, contraindicated: 2 };
const worst = (statuses: EarStatus[]): EarStatus =>
  statuses.reduce<EarStatus>((a, b) => (rank[b] > rank[a] ? b : a), 'affirming');

const hexOf = (value: string | Uint8Array) =>
  typeof value === 'string' ? value.toLowerCase() : Buffer.from(value).toString('hex');
const fromB64 = (s: string) => Buffer.from(s, 'base64');

interface EnclaveContext {
  enclave: BundleEnclave;
  rawKey: Buffer;
  key?: KeyObject;
  nativeBytes: Buffer;
  report?: KeystoneReport;
  anchorKind?: TrustAnchorKind;
  reasons: EarReason[];
  chainReasons: EarReason[];
  /** Entries already opened (decoded and signature-checked), by their base64 text. */
  opened: Map<string, DecodedEvidence | undefined>;
}

function appraiseEnclave(
  enclave: BundleEnclave,
  bundle: EvidenceBundle,
  anchors: TrustAnchor[],
  options: VerifyBundleOptions,
): EnclaveContext {
  const rawKey = Buffer.from(enclave.publicKey, 'hex');
  const nativeBytes = fromB64(enclave.nativeEvidence);
  const ctx: EnclaveContext = {
    enclave,
    rawKey,
    nativeBytes,
    reasons: [],
    chainReasons: [],
    opened: new Map(),
  };
  const r = ctx.reasons;
  try {
    ctx.key = ed25519PublicKey(rawKey);
    r.push(reason('enclave.key', true, 'Ed25519 evidence key'));
  } catch (error) {
    r.push(reason('enclave.key', false, `not an Ed25519 public key: ${(error as Error).message}`));
  }

  if (enclave.nativeFormat !== 'keystone-report') {
    r.push(reason('native.format', false, `native evidence format ${enclave.nativeFormat} is not supported`));
  } else {
    try {
      ctx.report = decodeKeystoneReport(nativeBytes);
      r.push(reason('native.format', true, 'Keystone-format report (1352 bytes)'));
    } catch (error) {
      r.push(reason('native.format', false, `malformed Keystone report: ${(error as Error).message}`));
    }
  }
  const report = ctx.report;
  if (!report) {
    for (const check of [
      'native.trust-anchor',
      'native.signatures',
      'native.binding',
      'measurement.report',
    ]) {
      r.push(reason(check, false, 'native evidence not decodable'));
    }
  } else {
    const anchor = anchors.find((a) => a.devicePublicKey.equals(report.devicePublicKey));
    ctx.anchorKind = anchor?.kind;
    r.push(
      anchor
        ? reason(
            'native.trust-anchor',
            true,
            `device key ${report.devicePublicKey.toString('hex')} is a trust anchor (${anchor.kind})`,
          )
        : reason(
            'native.trust-anchor',
            false,
            `device key ${report.devicePublicKey.toString('hex')} is not a trust anchor`,
          ),
    );
    const signatures = verifyKeystoneReport(report, { trustedDeviceKeys: [report.devicePublicKey] });
    r.push(
      signatures.ok
        ? reason('native.signatures', true, 'device key endorses the SM key; SM key signs the enclave report')
        : reason('native.signatures', false, signatures.reasons.join('; ')),
    );
    let expected: Buffer | undefined;
    try {
      expected = enclaveBinding({
        publicKey: rawKey,
        ...(enclave.encryptionKey ? { encryptionKey: Buffer.from(enclave.encryptionKey, 'hex') } : {}),
        cid: bundle.invocation.cid,
        eid: enclave.eid,
        stage: enclave.stage,
      });
    } catch {
      expected = undefined;
    }
    r.push(
      expected && report.data.equals(expected)
        ? reason(
            'native.binding',
            true,
            'report data = enclaveBinding(publicKey, encryptionKey, cid, eid, stage)',
          )
        : reason('native.binding', false, 'report data does not bind this enclave key, cid, eid and stage'),
    );
    const m = enclave.measurement;
    r.push(
      m.alg.toLowerCase() === 'sha3-512' && report.enclaveHash.toString('hex') === m.value
        ? reason('measurement.report', true, `report enclave hash = ${m.alg}:${m.value.slice(0, 16)}…`)
        : reason(
            'measurement.report',
            false,
            `report enclave hash ${report.enclaveHash.toString('hex')} ≠ ${m.alg}:${m.value}`,
          ),
    );
  }

  if (!options.referenceValues) {
    r.push(reason('measurement.reference', true, 'not appraised: no reference values supplied'));
  } else {
    const applicable = options.referenceValues.filter(
      (ref) => ref.stage === undefined || ref.stage === enclave.stage,
    );
    const m = enclave.measurement;
    const match = applicable.some((ref) =>
      ref.measurements.some((x) => x.alg.toLowerCase() === m.alg.toLowerCase() && hexOf(x.value) === m.value),
    );
    r.push(
      match
        ? reason('measurement.reference', true, `${m.alg}:${m.value.slice(0, 16)}… is a reference value`)
        : reason(
            'measurement.reference',
            false,
            applicable.length === 0
              ? `no reference values for stage ${enclave.stage}`
              : `measurement ${m.alg}:${m.value} is not among the reference values for stage ${enclave.stage}`,
          ),
    );
  }
  return ctx;
}

interface ChainEntry {
  source: 'chain' | 'execution' | 'checkpoint';
  declaredSeq: number;
  b64: string;
  bytes: Buffer;
  decoded?: DecodedEvidence;
}

/** Decode and verify one entry with the enclave key; undefined when either fails. */
function openEntry(b64: string, ctx: EnclaveContext): DecodedEvidence | undefined {
  if (ctx.opened.has(b64)) return ctx.opened.get(b64);
  const opened = openUncached(fromB64(b64), ctx);
  ctx.opened.set(b64, opened);
  return opened;
}

function openUncached(bytes: Buffer, ctx: EnclaveContext): DecodedEvidence | undefined {
  if (!ctx.key) return undefined;
  try {
    const decoded = decodeEvidence(bytes);
    if (!decoded.kid.equals(keyId(ctx.rawKey)) || !decoded.claims.ueid.equals(ueidFor(ctx.rawKey)))
      return undefined;
    return verifyCoseSign1(decoded, ctx.key) ? decoded : undefined;
  } catch {
    return undefined;
  }
}

function identityMismatches(decoded: DecodedEvidence, ctx: EnclaveContext, bundle: EvidenceBundle): string[] {
  const c = decoded.claims;
  const out: string[] = [];
  const same = (name: string, claimed: unknown, expected: unknown) => {
    if (claimed !== expected) out.push(`${name} ${String(claimed)} ≠ ${String(expected)}`);
  };
  same('eid', c.eid, ctx.enclave.eid);
  same('cid', c.cid, bundle.invocation.cid);
  same('stage', c.stage, ctx.enclave.stage);
  same('function', c.function, bundle.invocation.function);
  same('versionDigest', c.versionDigest, bundle.invocation.versionDigest);
  same('backend', c.backend, ctx.enclave.backend);
  return out;
}

function appraiseChain(ctx: EnclaveContext, bundle: EvidenceBundle): void {
  const eid = ctx.enclave.eid;
  const lists: [ChainEntry['source'], { eid: number; seq: number; evidence: string }[]][] = [
    ['chain', bundle.chain],
    ['execution', bundle.executions],
    ['checkpoint', bundle.checkpoints],
  ];
  const problems: string[] = [];
  const checkpointProblems: string[] = [];
  const entries: ChainEntry[] = [];
  for (const [source, list] of lists) {
    let last = 0;
    for (const item of list.filter((x) => x.eid === eid)) {
      if (item.seq <= last) problems.push(`${source} entries are not listed in ascending seq order`);
      last = item.seq;
      entries.push({ source, declaredSeq: item.seq, b64: item.evidence, bytes: fromB64(item.evidence) });
    }
  }
  for (const entry of entries) {
    const where = `${entry.source} seq ${entry.declaredSeq}`;
    entry.decoded = openEntry(entry.b64, ctx);
    const c = entry.decoded?.claims;
    if (!c) {
      (entry.source === 'checkpoint' ? checkpointProblems : problems).push(
        `${where}: not valid evidence signed by the enclave key`,
      );
      continue;
    }
    if (c.seq !== entry.declaredSeq) problems.push(`${where}: the evidence carries seq ${c.seq}`);
    const kind: EvidenceKind = entry.source === 'checkpoint' ? 'checkpoint' : 'execution';
    if (c.kind !== kind) problems.push(`${where}: kind ${c.kind}, expected ${kind}`);
    const mismatches = identityMismatches(entry.decoded!, ctx, bundle);
    if (mismatches.length) problems.push(`${where}: ${mismatches.join(', ')}`);
  }
  const valid = entries
    .filter((e) => e.decoded)
    .sort((a, b) => a.decoded!.claims.seq - b.decoded!.claims.seq);
  let previous: ChainEntry | undefined;
  let expectedSeq = 1;
  for (const entry of valid) {
    const c = entry.decoded!.claims;
    if (c.seq < expectedSeq) problems.push(`seq ${c.seq} appears more than once`);
    else if (c.seq > expectedSeq) {
      problems.push(
        c.seq === expectedSeq + 1
          ? `seq ${expectedSeq} is missing`
          : `seq ${expectedSeq}..${c.seq - 1} are missing`,
      );
    }
    const link = previous ? evidenceDigest(previous.bytes) : genesisDigest(eid, ctx.rawKey);
    if (!c.prev.equals(link)) {
      (c.kind === 'checkpoint' ? checkpointProblems : problems).push(
        previous
          ? `seq ${c.seq}: prev does not link to seq ${previous.decoded!.claims.seq}`
          : `seq ${c.seq}: prev is not the genesis digest`,
      );
    }
    expectedSeq = Math.max(expectedSeq, c.seq + 1);
    previous = entry;
  }
  const checkpoints = entries.filter((e) => e.source === 'checkpoint');
  if (checkpoints.length > 1) checkpointProblems.push('more than one checkpoint');
  const checkpoint = checkpoints[0];
  if (checkpoint?.decoded && valid[valid.length - 1] !== checkpoint) {
    checkpointProblems.push('entries follow the checkpoint that closed the chain');
  }
  const count = valid.length;
  ctx.chainReasons.push(
    problems.length === 0
      ? reason('chain', true, `seq 1..${count} contiguous, every prev links, all signed by the enclave key`)
      : reason('chain', false, problems.join('; ')),
    checkpointProblems.length > 0
      ? reason('chain.checkpoint', false, checkpointProblems.join('; '))
      : reason(
          'chain.checkpoint',
          true,
          checkpoint?.decoded
            ? `closed by checkpoint seq ${checkpoint.decoded.claims.seq}`
            : 'open: no checkpoint (the enclave is live, or its checkpoint is not included)',
        ),
  );
}

function normaliseAnchors(anchors: (TrustAnchor | Uint8Array)[]): TrustAnchor[] {
  return anchors.map((a) =>
    a instanceof Uint8Array
      ? { kind: SOFTWARE_ROOT_KIND, devicePublicKey: Buffer.from(a) }
      : { ...a, devicePublicKey: Buffer.from(a.devicePublicKey) },
  );
}

function vector(reasons: EarReason[], hardwareTier: number, referenceGiven: boolean): TrustworthinessVector {
  const ok = (...checks: string[]) => checks.every((c) => reasons.some((r) => r.check === c && r.ok));
  return {
    'instance-identity': ok(
      'native.trust-anchor',
      'native.signatures',
      'native.binding',
      'evidence.signature',
      'evidence.claims',
    )
      ? 2
      : 96,
    executables: ok('measurement.report', 'measurement.claim', 'measurement.reference')
      ? referenceGiven
        ? 2
        : 0
      : 96,
    hardware: hardwareTier,
  };
}

/**
 * Appraise an evidence bundle (its JSON form, or an already parsed `EvidenceBundle`). Never throws on bad
 * input: every problem is a failed check in the result. One submod per execution, keyed
 * `<stage>#<eid>#<seq>`, plus the `bundle` submod; the top-level status is the worst of them.
 */
export function verifyBundle(input: unknown, options: VerifyBundleOptions): EarResult {
  const now = options.now ?? new Date();
  const nowSeconds = Math.floor(now.getTime() / 1000);
  const policy = options.allowSim ? `${APPRAISAL_POLICY}:allow-sim` : APPRAISAL_POLICY;
  const nonceField = options.nonce ? { eat_nonce: Buffer.from(options.nonce).toString('base64url') } : {};
  const submods: Record<string, EarSubmod> = {};
  const finish = (): EarResult => ({
    eat_profile: EAR_PROFILE,
    iat: nowSeconds,
    'ear.verifier-id': { ...VERIFIER_ID },
    'ear.status': worst(Object.values(submods).map((s) => s['ear.status'])),
    submods,
  });
  const bundleReasons: EarReason[] = [];
  submods[BUNDLE_SUBMOD] = {
    'ear.status': 'affirming',
    'ear.appraisal-policy-id': policy,
    'ebcc.reasons': bundleReasons,
  };
  const closeBundle = () => {
    submods[BUNDLE_SUBMOD]!['ear.status'] = statusOf(bundleReasons);
  };

  let bundle: EvidenceBundle;
  try {
    bundle = parseEvidenceBundle(input);
    bundleReasons.push(reason('bundle.schema', true, 'ebcc-evidence-bundle/1'));
  } catch (error) {
    bundleReasons.push(reason('bundle.schema', false, (error as Error).message));
    closeBundle();
    return finish();
  }

  // Bundles whose enclaves all use a registered evidence format are appraised by its verifier.
  const formats = new Set(bundle.enclaves.map((e) => e.nativeFormat));
  const foreign = formats.size === 1 ? evidenceFormatVerifier([...formats][0]!) : undefined;
  if (foreign) return foreign.verify(bundle, options);

  const anchors = normaliseAnchors(options.trustAnchors);
  const contexts = new Map<number, EnclaveContext>();
  const enclaveProblems: string[] = [];
  for (const enclave of bundle.enclaves) {
    if (contexts.has(enclave.eid)) {
      enclaveProblems.push(`eid ${enclave.eid} is listed twice`);
      continue;
    }
    contexts.set(enclave.eid, appraiseEnclave(enclave, bundle, anchors, options));
  }
  for (const [name, list] of [
    ['execution', bundle.executions],
    ['chain entry', bundle.chain],
    ['checkpoint', bundle.checkpoints],
  ] as const) {
    for (const item of list) {
      if (!contexts.has(item.eid))
        enclaveProblems.push(`${name} eid ${item.eid} seq ${item.seq}: enclave not listed`);
    }
  }
  for (const eid of contexts.keys()) {
    if (!bundle.executions.some((e) => e.eid === eid))
      enclaveProblems.push(`enclave ${eid} has no execution`);
  }
  bundleReasons.push(
    reason('bundle.executions', bundle.executions.length > 0, `${bundle.executions.length} execution(s)`),
    enclaveProblems.length === 0
      ? reason('bundle.enclaves', true, `${contexts.size} enclave(s), each listed once and executed`)
      : reason('bundle.enclaves', false, enclaveProblems.join('; ')),
  );
  closeBundle();
  for (const ctx of contexts.values()) appraiseChain(ctx, bundle);

  const skew = options.clockSkewSeconds ?? 300;
  for (const execution of bundle.executions) {
    const ctx = contexts.get(execution.eid);
    const name = `${ctx?.enclave.stage ?? 'unknown'}#${execution.eid}#${execution.seq}`;
    if (!ctx) continue; // already contraindicated in the bundle submod
    const reasons: EarReason[] = [...ctx.reasons];
    const bytes = fromB64(execution.evidence);
    let decoded: DecodedEvidence | undefined;
    try {
      decoded = decodeEvidence(bytes);
      reasons.push(
        reason('evidence.decode', true, 'COSE_Sign1 / EdDSA, EAT profile ' + decoded.claims.profile),
      );
    } catch (error) {
      reasons.push(reason('evidence.decode', false, (error as Error).message));
    }
    let hardwareTier = 96;
    if (!decoded) {
      for (const check of [
        'evidence.signature',
        'evidence.claims',
        'evidence.native-digest',
        'measurement.claim',
        'hardware',
        'evidence.nonce',
        'evidence.freshness',
        'artifact.request',
        'artifact.response',
        'artifact.log',
        'artifact.metadata',
      ]) {
        reasons.push(reason(check, false, 'evidence not decodable'));
      }
    } else {
      const c = decoded.claims;
      const signed = openEntry(execution.evidence, ctx) !== undefined;
      reasons.push(
        signed
          ? reason('evidence.signature', true, 'EdDSA signature by the enclave key (kid and ueid match)')
          : reason('evidence.signature', false, 'not signed by the enclave key (signature, kid or ueid)'),
      );
      const mismatches = identityMismatches(decoded, ctx, bundle);
      if (c.seq !== execution.seq) mismatches.push(`seq ${c.seq} ≠ ${execution.seq}`);
      if (c.kind !== 'execution') mismatches.push(`kind ${c.kind} ≠ execution`);
      reasons.push(
        mismatches.length === 0
          ? reason('evidence.claims', true, 'eid, cid, stage, function, versionDigest, backend and seq match')
          : reason('evidence.claims', false, mismatches.join(', ')),
      );
      reasons.push(
        c.nativeEvidenceDigest.equals(sha256(ctx.nativeBytes))
          ? reason('evidence.native-digest', true, 'binds the native evidence by SHA-256')
          : reason(
              'evidence.native-digest',
              false,
              'the native evidence digest does not match the native evidence',
            ),
      );
      const m = ctx.enclave.measurement;
      reasons.push(
        c.measurement.alg.toLowerCase() === m.alg.toLowerCase() &&
          c.measurement.value.toString('hex') === m.value
          ? reason('measurement.claim', true, 'the measurements claim equals the enclave measurement')
          : reason(
              'measurement.claim',
              false,
              `claimed ${c.measurement.alg}:${c.measurement.value.toString('hex')} ≠ ${m.alg}:${m.value}`,
            ),
      );
      // Hardware protection: only a device anchor plus a hardware-protected claim counts as hardware.
      const softwareRoot = ctx.anchorKind === SOFTWARE_ROOT_KIND;
      if (softwareRoot && c.hardwareProtected) {
        reasons.push(
          reason('hardware', false, 'claims hardware protection but is rooted in a software root'),
        );
      } else if (ctx.anchorKind === undefined) {
        reasons.push(reason('hardware', false, 'no trusted root: hardware protection not established'));
      } else if (!softwareRoot && c.hardwareProtected) {
        hardwareTier = 2;
        reasons.push(
          reason('hardware', true, `hardware-protected (${ctx.anchorKind}, dbgstat ${c.dbgstat})`),
        );
      } else if (options.allowSim) {
        hardwareTier = 32;
        reasons.push(
          reason(
            'hardware',
            true,
            'not hardware-protected: software root accepted by allowSim (--allow-sim)',
          ),
        );
      } else {
        reasons.push(
          reason(
            'hardware',
            false,
            'not hardware-protected (sim / software root); accepted only with allowSim (--allow-sim)',
          ),
        );
      }
      if (options.nonce) {
        const expected = Buffer.from(options.nonce);
        reasons.push(
          c.nonce?.equals(expected)
            ? reason('evidence.nonce', true, 'eat_nonce equals the expected nonce')
            : reason(
                'evidence.nonce',
                false,
                c.nonce ? 'eat_nonce differs from the expected nonce' : 'no eat_nonce',
              ),
        );
      } else {
        reasons.push(
          reason('evidence.nonce', true, c.nonce ? 'not appraised: no nonce expected' : 'no nonce expected'),
        );
      }
      if (c.iat > nowSeconds + skew) {
        reasons.push(reason('evidence.freshness', false, `iat ${c.iat} is in the future`, 'warning'));
      } else if (options.maxAgeSeconds !== undefined && nowSeconds - c.iat > options.maxAgeSeconds) {
        reasons.push(reason('evidence.freshness', false, `older than ${options.maxAgeSeconds} s`, 'warning'));
      } else {
        reasons.push(reason('evidence.freshness', true, `iat ${c.iat}`));
      }
      const artifacts = [
        ['request', execution.artifacts.request, c.requestDigest],
        ['response', execution.artifacts.response, c.responseDigest],
        ['log', execution.artifacts.log, c.logDigest],
        ['metadata', execution.artifacts.metadata, c.metadataDigest],
      ] as const;
      const withheld = new Set<string>(execution.withheld ?? []);
      for (const [artifact, b64, digest] of artifacts) {
        if (withheld.has(artifact)) {
          reasons.push(
            reason(
              `artifact.${artifact}`,
              false,
              `withheld (its data key was shredded): only the signed digest ${digest?.toString('hex').slice(0, 16) ?? '(none)'}… remains`,
              'warning',
            ),
          );
          continue;
        }
        const actual = sha256(fromB64(b64));
        reasons.push(
          digest?.equals(actual)
            ? reason(`artifact.${artifact}`, true, `SHA-256 ${actual.toString('hex').slice(0, 16)}… matches`)
            : reason(
                `artifact.${artifact}`,
                false,
                `SHA-256 of the ${artifact} does not match the signed digest`,
              ),
        );
      }
    }
    reasons.push(...ctx.chainReasons);
    if (submods[name]) {
      reasons.push(reason('bundle.duplicate', false, `execution ${name} is listed more than once`));
    }
    submods[name] = {
      'ear.status': statusOf(reasons),
      'ear.appraisal-policy-id': policy,
      'ear.trustworthiness-vector': vector(reasons, hardwareTier, options.referenceValues !== undefined),
      ...nonceField,
      'ebcc.reasons': reasons,
    };
  }
  return finish();
}

/** The failed checks of a result, as `submod: check: detail` lines (for CLI output and test messages). */
export function failedChecks(result: EarResult): string[] {
  return Object.entries(result.submods).flatMap(([name, submod]) =>
    submod['ebcc.reasons'].filter((r) => !r.ok).map((r) => `${name}: ${r.check}: ${r.detail}`),
  );
}

export interface EnclaveKeyAppraisal {
  status: EarStatus;
  reasons: EarReason[];
}

/**
 * Appraises the enclave behind an encryption key (from `GET …/stages/:stage/key`): the native evidence
 * is rooted in a trust anchor, its signatures hold, it binds this evidence key AND this encryption key to
 * the enclave's cid, eid and stage, its measurement is the recorded one (and a reference value, when
 * given), and it is hardware-protected or `allowSim` accepts a software root. A client seals to the key
 * only when the status is not `contraindicated`. Never throws on bad input.
 */
export function appraiseEnclaveKey(
  enclave: BundleEnclave,
  cid: string,
  options: Omit<VerifyBundleOptions, 'nonce'>,
): EnclaveKeyAppraisal {
  const anchors = normaliseAnchors(options.trustAnchors);
  const shell = { invocation: { cid } } as EvidenceBundle;
  const ctx = appraiseEnclave(enclave, shell, anchors, options);
  const reasons = [...ctx.reasons];
  reasons.push(
    enclave.encryptionKey
      ? reason(
          'enclave.encryption-key',
          true,
          `X25519 key ${enclave.encryptionKey.slice(0, 16)}… is in the binding`,
        )
      : reason('enclave.encryption-key', false, 'the enclave has no encryption key'),
  );
  if (ctx.anchorKind === undefined) {
    reasons.push(reason('hardware', false, 'no trusted root: hardware protection not established'));
  } else if (ctx.anchorKind !== SOFTWARE_ROOT_KIND) {
    reasons.push(reason('hardware', true, `rooted in a device key (${ctx.anchorKind})`));
  } else {
    reasons.push(
      options.allowSim
        ? reason('hardware', true, 'not hardware-protected: software root accepted by allowSim (--allow-sim)')
        : reason(
            'hardware',
            false,
            'not hardware-protected (sim / software root); accepted only with allowSim',
          ),
    );
  }
  return { status: statusOf(reasons), reasons };
}
