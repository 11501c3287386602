/**
 * Evidence costs (issue 4's targets): making one execution's evidence for 4 KiB payloads, and checking
 * evidence offline. Each is compared, in the same run, with its floor: the raw SHA-256 and Ed25519
 * operations it cannot avoid.
 */
import { createHash, generateKeyPairSync, sign, verify } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { benchmarkEvidence } from '../runtime/evidence/bench.ts';
import { enclaveBinding } from '../runtime/evidence/binding.ts';
import { EVIDENCE_BUNDLE_FORMAT, toBase64, type EvidenceBundle } from '../runtime/evidence/bundle.ts';
import { EvidenceChain, evidenceDigest } from '../runtime/evidence/eat.ts';
import { generateEd25519, sha3_512 } from '../runtime/evidence/keys.ts';
import {
  createSoftwareRoot,
  softwareRootReport,
  softwareTrustAnchor,
} from '../runtime/evidence/software-root.ts';
import { failedChecks, verifyBundle } from '../runtime/evidence/verify.ts';

export interface EvidenceBenchResult {
  signExecutionUs: { min: number; median: number };
  floorSignUs: { min: number; median: number };
  verifyPerSecond: { min: number; median: number };
  floorVerifyPerSecond: { median: number };
  chainLength: number;
  evidenceBytes: number;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** One persistent enclave's chain of `n` executions with 4 KiB request and response, as a bundle. */
function chainBundle(n: number) {
  const root = createSoftwareRoot();
  const { privateKey } = generateEd25519();
  const eid = 1;
  const chain = new EvidenceChain(privateKey, eid);
  const measurement = { alg: 'sha3-512', value: sha3_512(Buffer.from('bench stage')).toString('hex') };
  const invocation = {
    id: 'inv_bench',
    function: 'bench',
    versionDigest: `sha256:${'cd'.repeat(32)}`,
    cid: 'c_bench',
  };
  const native = softwareRootReport(
    root,
    Buffer.from(measurement.value, 'hex'),
    enclaveBinding({ publicKey: chain.publicKey, cid: invocation.cid, eid, stage: 'work' }),
  );
  const identity = {
    backend: 'sim',
    hardwareProtected: false,
    function: invocation.function,
    versionDigest: invocation.versionDigest,
    cid: invocation.cid,
    stage: 'work',
    measurement,
    nativeEvidenceDigest: evidenceDigest(native),
  };
  const bundle: EvidenceBundle = {
    format: EVIDENCE_BUNDLE_FORMAT,
    invocation,
    enclaves: [
      {
        eid,
        stage: 'work',
        backend: 'sim',
        publicKey: chain.publicKey.toString('hex'),
        nativeFormat: 'keystone-report',
        nativeEvidence: toBase64(native),
        measurement,
      },
    ],
    executions: [],
    chain: [],
    checkpoints: [],
  };
  const request = Buffer.alloc(4096, 1);
  const response = Buffer.alloc(4096, 2);
  for (let i = 1; i <= n; i++) {
    const log = Buffer.from(`request ${i}\n`);
    const metadata = Buffer.from(JSON.stringify({ seq: i }));
    const evidence = chain.execution({ ...identity, request, response, log, metadata });
    if (i < n) bundle.chain.push({ eid, seq: i, evidence: toBase64(evidence) });
    else
      bundle.executions.push({
        eid,
        seq: i,
        evidence: toBase64(evidence),
        artifacts: {
          request: toBase64(request),
          response: toBase64(response),
          log: toBase64(log),
          metadata: toBase64(metadata),
        },
      });
  }
  return { bundle, anchor: softwareTrustAnchor(root) };
}

export async function runEvidenceBench(rounds = 7, chainLength = 2000): Promise<EvidenceBenchResult> {
  const signing = benchmarkEvidence({ requestBytes: 4096, responseBytes: 4096, rounds, iterations: 300 });
  // Floor: hash the same 8 KiB and make one Ed25519 signature, nothing else.
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const payload = Buffer.alloc(8192, 3);
  const floorSign: number[] = [];
  const floorVerify: number[] = [];
  const signature = sign(null, payload.subarray(0, 64), privateKey);
  for (let r = 0; r < rounds; r++) {
    let t = performance.now();
    for (let i = 0; i < 300; i++) sign(null, createHash('sha256').update(payload).digest(), privateKey);
    floorSign.push(((performance.now() - t) * 1000) / 300);
    t = performance.now();
    for (let i = 0; i < 300; i++) verify(null, payload.subarray(0, 64), publicKey, signature);
    floorVerify.push(300 / ((performance.now() - t) / 1000));
  }
  const { bundle, anchor } = chainBundle(chainLength);
  const rates: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const t = performance.now();
    const result = verifyBundle(bundle, { trustAnchors: [anchor], allowSim: true });
    const seconds = (performance.now() - t) / 1000;
    if (result['ear.status'] !== 'affirming') {
      throw new Error(`the benchmark bundle did not verify: ${failedChecks(result).join('; ')}`);
    }
    rates.push(chainLength / seconds);
  }
  return {
    signExecutionUs: { min: signing.signExecution.minUs, median: signing.signExecution.medianUs },
    floorSignUs: { min: Math.min(...floorSign), median: median(floorSign) },
    verifyPerSecond: { min: Math.min(...rates), median: median(rates) },
    floorVerifyPerSecond: { median: median(floorVerify) },
    chainLength,
    evidenceBytes: signing.evidenceBytes,
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const result = await runEvidenceBench();
  console.log(JSON.stringify(result, null, 2));
}

export function printEvidence(r: EvidenceBenchResult, log: (line: string) => void): void {
  log(
    `  signExecution (4 KiB request + 4 KiB response): median ${r.signExecutionUs.median.toFixed(1)} µs, min ${r.signExecutionUs.min.toFixed(1)} µs (floor: SHA-256 of 8 KiB + one Ed25519 signature, median ${r.floorSignUs.median.toFixed(1)} µs)`,
  );
  log(
    `  verify: median ${r.verifyPerSecond.median.toFixed(0)} evidences/s over a ${r.chainLength}-entry chain (floor: bare Ed25519 verifications, ${r.floorVerifyPerSecond.median.toFixed(0)}/s)`,
  );
}
