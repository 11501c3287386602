// The confidential stage: it signs the canonical bytes of each order it is given with an Ed25519 key.
// The key is the tenant's when the tenant uploaded one (secret `signing-key`, a 32-byte Ed25519 seed,
// released by EBCC only to an enclave whose measurement the tenant's policy allows, and opened inside
// it); otherwise the stage makes one when the enclave starts, which then exists only inside it.
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign } from 'node:crypto';
import { readAll, readFrames, writeFrame } from './frames.mjs';

// PKCS#8 DER of an Ed25519 private key is this fixed prefix and the 32-byte seed (RFC 8410).
const ED25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

function signingKey() {
  const released = process.env.EBCC_SECRET_SIGNING_KEY;
  if (!released) return { ...generateKeyPairSync('ed25519'), source: 'enclave' };
  const seed = Buffer.from(released, 'base64url');
  if (seed.length !== 32)
    throw new Error(`the signing-key secret is ${seed.length} bytes, not a 32-byte seed`);
  const privateKey = createPrivateKey({
    key: Buffer.concat([ED25519_PKCS8_PREFIX, seed]),
    format: 'der',
    type: 'pkcs8',
  });
  return { privateKey, publicKey: createPublicKey(privateKey), source: 'tenant' };
}

const { privateKey, publicKey, source } = signingKey();
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
      keySource: source,
    }),
  );
}

if (process.env.EBCC_STAGE_MODE === 'persistent') {
  for await (const request of readFrames(process.stdin)) writeFrame(process.stdout, handle(request));
} else {
  process.stdout.write(handle(await readAll(process.stdin)));
}
