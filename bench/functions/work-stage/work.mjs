// The benchmark stage: about a millisecond of real work per request. It hashes the request followed by
// 1 MiB of data held in the enclave (SHA-256), signs the digest with an Ed25519 key made at start, and
// reports how long that work took inside the process, so the harness can tell work from overhead.
import { createHash, generateKeyPairSync, randomFillSync, sign } from 'node:crypto';
import { readAll, readFrames, writeFrame } from './frames.mjs';

const data = randomFillSync(Buffer.alloc(1024 * 1024));
const { privateKey } = generateKeyPairSync('ed25519');

function handle(request) {
  const started = performance.now();
  const digest = createHash('sha256').update(request).update(data).digest();
  const signature = sign(null, digest, privateKey);
  const workMs = performance.now() - started;
  return Buffer.from(
    JSON.stringify({ digest: digest.toString('hex'), signature: signature.toString('hex'), workMs }),
  );
}

if (process.env.EBCC_STAGE_MODE === 'persistent') {
  for await (const request of readFrames(process.stdin)) writeFrame(process.stdout, handle(request));
} else {
  process.stdout.write(handle(await readAll(process.stdin)));
}
