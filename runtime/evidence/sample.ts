import type { KeyObject } from 'node:crypto';
import { enclaveBinding } from './binding.ts';
import { EVIDENCE_BUNDLE_FORMAT, toBase64, type EvidenceBundle } from './bundle.ts';
import { EvidenceChain, evidenceDigest } from './eat.ts';
import { generateEd25519, sha3_512 } from './keys.ts';
import {
  createSoftwareRoot,
  softwareRootReport,
  softwareTrustAnchor,
  type SoftwareRoot,
  type TrustAnchor,
} from './software-root.ts';
import type { ReferenceValue } from './verify.ts';

/**
 * A complete, validly signed evidence bundle built in memory, for tests, demos and `ebcc verify`
 * fixtures: one oneshot enclave (one execution, then its checkpoint) and one persistent enclave whose
 * two earlier executions are in `chain` and whose third is this invocation's.
 */
export interface SampleBundle {
  bundle: EvidenceBundle;
  root: SoftwareRoot;
  trustAnchor: TrustAnchor;
  referenceValues: ReferenceValue[];
  /** Enclave private keys by EID (to sign extra, e.g. forged or replayed, entries in tests). */
  keys: Map<number, KeyObject>;
  nonce: Buffer | undefined;
}

export interface SampleOptions {
  root?: SoftwareRoot;
  /** Put this eat_nonce in this invocation's executions. */
  nonce?: Uint8Array;
  now?: Date;
  /**
   * Pretend the root is a real Keystone device: backend `keystone`, hardware-protected claims, and a
   * `keystone-device` trust anchor (to exercise the hardware path of the verifier without hardware).
   */
  hardware?: boolean;
}

export function createSampleBundle(options: SampleOptions = {}): SampleBundle {
  const root = options.root ?? createSoftwareRoot(options.now);
  const iat = Math.floor((options.now ?? new Date()).getTime() / 1000);
  const invocation = {
    id: 'inv_sample',
    function: 'order-signer',
    version: '1.0.0',
    versionDigest: `sha256:${'ab'.repeat(32)}`,
    cid: 'c_sample',
    ...(options.nonce ? { nonce: Buffer.from(options.nonce).toString('hex') } : {}),
  };
  const bundle: EvidenceBundle = {
    format: EVIDENCE_BUNDLE_FORMAT,
    invocation,
    enclaves: [],
    executions: [],
    chain: [],
    checkpoints: [],
  };
  const backend = options.hardware ? 'keystone' : 'sim';
  const keys = new Map<number, KeyObject>();
  const referenceValues: ReferenceValue[] = [];
  const plan = [
    { eid: 7, stage: 'validate', earlier: 0, checkpoint: true },
    { eid: 8, stage: 'sign', earlier: 2, checkpoint: false },
  ];
  for (const { eid, stage, earlier, checkpoint } of plan) {
    const { privateKey } = generateEd25519();
    keys.set(eid, privateKey);
    const chain = new EvidenceChain(privateKey, eid);
    const measurement = {
      alg: 'sha3-512',
      value: sha3_512(Buffer.from(`stage image ${stage}`)).toString('hex'),
    };
    referenceValues.push({ stage, measurements: [measurement] });
    const native = softwareRootReport(
      root,
      Buffer.from(measurement.value, 'hex'),
      enclaveBinding({ publicKey: chain.publicKey, cid: invocation.cid, eid, stage }),
    );
    bundle.enclaves.push({
      eid,
      stage,
      backend,
      publicKey: chain.publicKey.toString('hex'),
      nativeFormat: 'keystone-report',
      nativeEvidence: toBase64(native),
      measurement,
    });
    const identity = {
      backend,
      hardwareProtected: options.hardware === true,
      function: invocation.function,
      versionDigest: invocation.versionDigest,
      cid: invocation.cid,
      stage,
      measurement,
      nativeEvidenceDigest: evidenceDigest(native),
      iat,
    };
    const run = (n: number, nonce?: Uint8Array) => {
      const request = Buffer.from(JSON.stringify({ stage, n, body: 'x'.repeat(64) }));
      const response = Buffer.from(JSON.stringify({ ok: true, stage, n }));
      const log = Buffer.from(`${stage} handled request ${n}\n`);
      const metadata = Buffer.from(JSON.stringify({ eid, seq: chain.seq, stage }));
      const evidence = chain.execution({ ...identity, nonce, request, response, log, metadata });
      return { eid, seq: chain.seq - 1, evidence, request, response, log, metadata };
    };
    for (let n = 1; n <= earlier; n++) {
      const entry = run(n, Buffer.from(`earlier-nonce-${n}`));
      bundle.chain.push({ eid, seq: entry.seq, evidence: toBase64(entry.evidence) });
    }
    const current = run(earlier + 1, options.nonce);
    bundle.executions.push({
      eid,
      seq: current.seq,
      evidence: toBase64(current.evidence),
      artifacts: {
        request: toBase64(current.request),
        response: toBase64(current.response),
        log: toBase64(current.log),
        metadata: toBase64(current.metadata),
      },
    });
    if (checkpoint) {
      const seq = chain.seq;
      bundle.checkpoints.push({ eid, seq, evidence: toBase64(chain.checkpoint(identity)) });
    }
  }
  return {
    bundle,
    root,
    trustAnchor: options.hardware
      ? { kind: 'keystone-device', devicePublicKey: root.devicePublicKey }
      : softwareTrustAnchor(root),
    referenceValues,
    keys,
    nonce: options.nonce ? Buffer.from(options.nonce) : undefined,
  };
}
