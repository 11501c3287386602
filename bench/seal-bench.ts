/**
 * Sealing costs (issue 5's target: sealing adds at most 200 µs per 4 KiB invocation). Measured in the
 * benchmark process, interleaved round by round: what EBCC's code in the enclave adds to one invocation
 * with a sealed 4 KiB request and a 4 KiB response (open the request, make the plaintext digests, seal
 * the response and the log), what the client adds (seal the request, open the response), and, for
 * reference, one seal + open with @hpke/core (WebCrypto) on the same payload.
 */
import { performance } from 'node:perf_hooks';
import { Aes128Gcm, CipherSuite, HkdfSha256 } from '@hpke/core';
import { DhkemX25519HkdfSha256 } from '@hpke/dhkem-x25519';
import {
  openReply,
  openRequest,
  parseSealedRequest,
  plaintextDigest,
  sealReplies,
  sealRequest,
} from '../runtime/seal/envelope.ts';
import { generateX25519 } from '../runtime/seal/hpke.ts';

export interface SealBenchResult {
  enclaveUs: { min: number; median: number };
  clientUs: { min: number; median: number };
  totalUs: { min: number; median: number };
  hpkeCoreUs: { median: number };
  requestEnvelopeBytes: number;
  responseEnvelopeBytes: number;
  rounds: number;
  perRound: number;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export async function runSealBench(rounds: number, perRound = 300): Promise<SealBenchResult> {
  const enclaveKey = generateX25519();
  const request = Buffer.from(JSON.stringify({ payload: 'r'.repeat(4096 - 16) }));
  const response = Buffer.alloc(4096, 0x61);
  const log = Buffer.from('signed order 42\n');
  const suite = new CipherSuite({
    kem: new DhkemX25519HkdfSha256(),
    kdf: new HkdfSha256(),
    aead: new Aes128Gcm(),
  });
  const coreKey = await suite.kem.generateKeyPair();

  const enclave: number[] = [];
  const client: number[] = [];
  const total: number[] = [];
  const core: number[] = [];
  let requestEnvelopeBytes = 0;
  let responseEnvelopeBytes = 0;
  for (let round = 0; round < rounds + 1; round++) {
    let enclaveNs = 0;
    let clientNs = 0;
    for (let i = 0; i < perRound; i++) {
      const t0 = performance.now();
      const exchange = sealRequest(enclaveKey.publicKey, request);
      const t1 = performance.now();
      // Inside the enclave: what the shim does for a sealed request, around the stage.
      const envelope = parseSealedRequest(exchange.envelope)!;
      const opened = openRequest(exchange.envelope, envelope, enclaveKey);
      plaintextDigest(opened.digestKey, opened.plaintext);
      plaintextDigest(opened.digestKey, response);
      plaintextDigest(opened.digestKey, log);
      const sealedResponse = sealReplies(response, log, opened.responseKey, opened.requestDigest).response;
      const t2 = performance.now();
      const back = openReply(sealedResponse, exchange);
      const t3 = performance.now();
      if (back.length !== response.length) throw new Error('the sealed response did not round-trip');
      clientNs += t1 - t0 + (t3 - t2);
      enclaveNs += t2 - t1;
      requestEnvelopeBytes = exchange.envelope.length;
      responseEnvelopeBytes = sealedResponse.length;
    }
    const t4 = performance.now();
    const coreRounds = Math.max(10, Math.floor(perRound / 20));
    for (let i = 0; i < coreRounds; i++) {
      const sender = await suite.createSenderContext({ recipientPublicKey: coreKey.publicKey });
      const ct = await sender.seal(request);
      const recipient = await suite.createRecipientContext({ recipientKey: coreKey, enc: sender.enc });
      await recipient.open(ct);
    }
    const coreUs = ((performance.now() - t4) / coreRounds) * 1000;
    if (round === 0) continue; // warm-up
    enclave.push((enclaveNs / perRound) * 1000);
    client.push((clientNs / perRound) * 1000);
    total.push(((enclaveNs + clientNs) / perRound) * 1000);
    core.push(coreUs);
  }
  const stat = (xs: number[]) => ({ min: Math.min(...xs), median: median(xs) });
  return {
    enclaveUs: stat(enclave),
    clientUs: stat(client),
    totalUs: stat(total),
    hpkeCoreUs: { median: median(core) },
    requestEnvelopeBytes,
    responseEnvelopeBytes,
    rounds,
    perRound,
  };
}

export function printSeal(r: SealBenchResult, log: (line: string) => void): void {
  log(
    `  enclave side ${r.enclaveUs.median.toFixed(1)} µs median (min ${r.enclaveUs.min.toFixed(1)}), client side ${r.clientUs.median.toFixed(1)} µs, both ${r.totalUs.median.toFixed(1)} µs; @hpke/core seal+open ${r.hpkeCoreUs.median.toFixed(0)} µs`,
  );
}
