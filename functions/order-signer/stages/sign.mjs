// The confidential stage: it makes its Ed25519 key when the enclave starts, so the key exists only
// inside the enclave, and signs the canonical bytes of each order it is given.
import { createHash, generateKeyPairSync, sign } from 'node:crypto';
import { readAll, readFrames, writeFrame } from './frames.mjs';

const { privateKey, publicKey } = generateKeyPairSync('ed25519');
const publicKeyHex = publicKey.export({ format: 'der', type: 'spki' }).subarray(-32).toString('hex');

function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value && typeof value === 'object') {
    return `{${Object.keys(value)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(value);
}

function handle(request) {
  const order = JSON.parse(request.toString('utf8'));
  const message = Buffer.from(canonical(order));
  const signature = sign(null, message, privateKey).toString('hex');
  process.stderr.write(`signed order ${order.orderId}\n`);
  return Buffer.from(
    JSON.stringify({
      alg: 'Ed25519',
      digest: createHash('sha256').update(message).digest('hex'),
      signature,
      publicKey: publicKeyHex,
    }),
  );
}

if (process.env.EBCC_STAGE_MODE === 'persistent') {
  for await (const request of readFrames(process.stdin)) writeFrame(process.stdout, handle(request));
} else {
  process.stdout.write(handle(await readAll(process.stdin)));
}
