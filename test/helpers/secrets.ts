import { createPrivateKey } from 'node:crypto';
import { SECRET_FORMAT } from '../../runtime/keyrelease/release.ts';
import { SEALED_CONTENT_TYPE, sealRequest } from '../../runtime/seal/envelope.ts';
import { api } from './env.ts';

/**
 * Uploads a secret as a tenant does: sealed to the key broker's key (taken from the gateway here; a
 * tenant verifies its evidence first, as test/key-release.test.ts does), showing its policy in clear.
 */
export async function putSecret(
  url: string,
  token: string,
  fn: string,
  name: string,
  secret: Buffer,
  policy: { stage: string; measurements: string[] },
): Promise<{ status: number; body: Record<string, unknown> }> {
  const broker = (await api(url, token, 'GET', '/v1/key-release/key')).body;
  const plaintext = { format: SECRET_FORMAT, name, secret: secret.toString('base64url'), policy };
  const { envelope } = sealRequest(
    Buffer.from(broker.enclave.encryptionKey, 'hex'),
    Buffer.from(JSON.stringify(plaintext)),
    { public: { policy } },
  );
  const response = await fetch(`${url}/v1/functions/${fn}/secrets/${name}`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${token}`, 'content-type': SEALED_CONTENT_TYPE },
    body: new Uint8Array(envelope),
  });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

/** The Ed25519 private key of a 32-byte seed (PKCS#8 DER is a fixed prefix and the seed, RFC 8410). */
export const ed25519FromSeed = (seed: Buffer) =>
  createPrivateKey({
    key: Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), seed]),
    format: 'der',
    type: 'pkcs8',
  });
