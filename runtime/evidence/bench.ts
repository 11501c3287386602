import { performance } from 'node:perf_hooks';
import { randomBytes } from 'node:crypto';
import { genesisDigest } from './binding.ts';
import { decodeEvidence, signExecution, verifyEvidenceSignature, type ExecutionInput } from './eat.ts';
import { generateEd25519, rawPublicKey, sha256 } from './keys.ts';

/** Per-operation times in µs: the fastest and the median of `rounds` batches (robust to a busy host). */
export interface Timing {
  minUs: number;
  medianUs: number;
}

export interface SigningBenchmark {
  /** Operations per batch, and batches per measurement. */
  iterations: number;
  rounds: number;
  requestBytes: number;
  responseBytes: number;
  /** Mean µs to hash request + response + log + metadata and sign (one `signExecution`). */
  signExecution: Timing;
  /** Mean µs of the hashing alone. */
  hash: Timing;
  /** Mean µs of `decodeEvidence` (strict decode, canonical re-encode check). */
  decode: Timing;
  /** Mean µs of `verifyEvidenceSignature`. */
  verify: Timing;
  evidenceBytes: number;
}

/** Micro-benchmark of per-execution evidence; returns numbers only (callers decide what to print). */
export function benchmarkEvidence(
  options: { iterations?: number; rounds?: number; requestBytes?: number; responseBytes?: number } = {},
): SigningBenchmark {
  const iterations = options.iterations ?? 200;
  const rounds = options.rounds ?? 10;
  const requestBytes = options.requestBytes ?? 4096;
  const responseBytes = options.responseBytes ?? 4096;
  const { privateKey } = generateEd25519();
  const publicKey = rawPublicKey(privateKey);
  const input: ExecutionInput = {
    backend: 'sim',
    hardwareProtected: false,
    function: 'bench',
    versionDigest: `sha256:${'00'.repeat(32)}`,
    cid: 'c_bench',
    eid: 1,
    stage: 'bench',
    measurement: { alg: 'sha3-512', value: randomBytes(64) },
    nativeEvidenceDigest: randomBytes(32),
    seq: 1,
    prev: genesisDigest(1, publicKey),
    nonce: randomBytes(16),
    request: randomBytes(requestBytes),
    response: randomBytes(responseBytes),
    log: Buffer.from('bench log line\n'),
    metadata: Buffer.from('{"bench":true}'),
  };
  const time = (fn: () => void): Timing => {
    for (let i = 0; i < Math.min(200, iterations); i++) fn(); // warm up
    const perOp: number[] = [];
    for (let round = 0; round < rounds; round++) {
      const start = performance.now();
      for (let i = 0; i < iterations; i++) fn();
      perOp.push(((performance.now() - start) * 1000) / iterations);
    }
    perOp.sort((a, b) => a - b);
    const round2 = (x: number) => Math.round(x * 100) / 100;
    return { minUs: round2(perOp[0]!), medianUs: round2(perOp[Math.floor(perOp.length / 2)]!) };
  };
  let evidence = signExecution(input, privateKey);
  const signExecution_ = time(() => {
    evidence = signExecution(input, privateKey);
  });
  const hash = time(() => {
    sha256(input.request!);
    sha256(input.response!);
    sha256(input.log!);
    sha256(input.metadata!);
  });
  const decode = time(() => decodeEvidence(evidence));
  const verify = time(() => verifyEvidenceSignature(evidence, publicKey));
  return {
    iterations,
    rounds,
    requestBytes,
    responseBytes,
    signExecution: signExecution_,
    hash,
    decode,
    verify,
    evidenceBytes: evidence.length,
  };
}
