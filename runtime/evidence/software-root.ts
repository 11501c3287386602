import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { z } from 'zod';
import { EvidenceFormatError } from './errors.ts';
import { keystoneSmMessage, signKeystoneReport } from './keystone.ts';
import {
  ed25519Sign,
  ed25519Verify,
  generateEd25519,
  rawPublicKey,
  sha3_512,
  type Ed25519KeyPair,
} from './keys.ts';

/**
 * A per-install software stand-in for a Keystone device: a device key (the "manufacturer" root), an SM
 * key endorsed by it, and a fixed SM hash. The sim backend signs Keystone-format reports with it. It
 * protects nothing against the host's root user, who can read the private keys; evidence rooted in it is
 * marked as not hardware-protected and a verifier accepts it only when told to (`allowSim`).
 */
export const SOFTWARE_SM_LABEL = 'ebcc-sim-security-monitor/1';
export const SOFTWARE_ROOT_KIND = 'ebcc-software-root';

export interface SoftwareRoot {
  deviceKey: Ed25519KeyPair;
  smKey: Ed25519KeyPair;
  /** Raw 32-byte device public key: the trust anchor. */
  devicePublicKey: Buffer;
  /** Raw 32-byte SM public key. */
  smPublicKey: Buffer;
  /** SHA3-512 of `SOFTWARE_SM_LABEL`. */
  smHash: Buffer;
  /** Device-key signature over `smHash || smPublicKey`. */
  smSignature: Buffer;
  /** ISO 8601. */
  createdAt: string;
}

export function softwareSmHash(): Buffer {
  return sha3_512(Buffer.from(SOFTWARE_SM_LABEL));
}

function assemble(
  deviceKey: Ed25519KeyPair,
  smKey: Ed25519KeyPair,
  createdAt: string,
  smHash = softwareSmHash(),
) {
  const devicePublicKey = rawPublicKey(deviceKey.publicKey);
  const smPublicKey = rawPublicKey(smKey.publicKey);
  const smSignature = ed25519Sign(deviceKey.privateKey, keystoneSmMessage(smHash, smPublicKey));
  return { deviceKey, smKey, devicePublicKey, smPublicKey, smHash, smSignature, createdAt };
}

export function createSoftwareRoot(now: Date = new Date()): SoftwareRoot {
  return assemble(generateEd25519(), generateEd25519(), now.toISOString());
}

const serializedSchema = z.strictObject({
  kind: z.literal('ebcc-software-root-secret/1'),
  createdAt: z.string(),
  devicePrivateKey: z.string(),
  smPrivateKey: z.string(),
  smHash: z.string().regex(/^[0-9a-f]{128}$/),
  smSignature: z.string().regex(/^[0-9a-f]{128}$/),
});

/** JSON holding the private keys as PKCS#8 PEM: store it readable by root only (mode 0600). */
export function serializeSoftwareRoot(root: SoftwareRoot): string {
  const pem = (key: KeyObject) => key.export({ format: 'pem', type: 'pkcs8' }).toString();
  return JSON.stringify(
    {
      kind: 'ebcc-software-root-secret/1',
      createdAt: root.createdAt,
      devicePrivateKey: pem(root.deviceKey.privateKey),
      smPrivateKey: pem(root.smKey.privateKey),
      smHash: root.smHash.toString('hex'),
      smSignature: root.smSignature.toString('hex'),
    },
    null,
    2,
  );
}

/** Parse `serializeSoftwareRoot` output; checks the keys are Ed25519 and the SM endorsement verifies. */
export function parseSoftwareRoot(json: string): SoftwareRoot {
  let parsed: z.infer<typeof serializedSchema>;
  try {
    parsed = serializedSchema.parse(JSON.parse(json));
  } catch (error) {
    throw new EvidenceFormatError(
      'software-root',
      `not a serialized software root: ${(error as Error).message}`,
    );
  }
  const pair = (pem: string): Ed25519KeyPair => {
    let privateKey: KeyObject;
    try {
      privateKey = createPrivateKey({ key: pem, format: 'pem' });
    } catch (error) {
      throw new EvidenceFormatError('software-root', `unreadable private key: ${(error as Error).message}`);
    }
    if (privateKey.asymmetricKeyType !== 'ed25519') {
      throw new EvidenceFormatError('software-root', 'software root keys must be Ed25519');
    }
    return { privateKey, publicKey: createPublicKey(privateKey) };
  };
  const deviceKey = pair(parsed.devicePrivateKey);
  const smKey = pair(parsed.smPrivateKey);
  const smHash = Buffer.from(parsed.smHash, 'hex');
  const smSignature = Buffer.from(parsed.smSignature, 'hex');
  const devicePublicKey = rawPublicKey(deviceKey.publicKey);
  const smPublicKey = rawPublicKey(smKey.publicKey);
  if (!ed25519Verify(devicePublicKey, keystoneSmMessage(smHash, smPublicKey), smSignature)) {
    throw new EvidenceFormatError('software-root', 'the SM endorsement does not verify with the device key');
  }
  return { deviceKey, smKey, devicePublicKey, smPublicKey, smHash, smSignature, createdAt: parsed.createdAt };
}

/** A Keystone-format report for an enclave, signed by the software root's SM key. */
export function softwareRootReport(root: SoftwareRoot, enclaveHash: Uint8Array, data: Uint8Array): Buffer {
  return signKeystoneReport({
    enclaveHash,
    data,
    smPrivateKey: root.smKey.privateKey,
    smHash: root.smHash,
    smPublicKey: root.smPublicKey,
    smSignature: root.smSignature,
    devicePublicKey: root.devicePublicKey,
  });
}

export type TrustAnchorKind = typeof SOFTWARE_ROOT_KIND | 'keystone-device';

/** A key a verifier trusts as the root of Keystone-format native evidence, and what kind of root it is. */
export interface TrustAnchor {
  kind: TrustAnchorKind;
  /** Raw 32-byte Ed25519 device public key. */
  devicePublicKey: Buffer;
  createdAt?: string;
}

const trustAnchorSchema = z.strictObject({
  kind: z.enum([SOFTWARE_ROOT_KIND, 'keystone-device']),
  devicePublicKey: z.string().regex(/^[0-9a-f]{64}$/),
  createdAt: z.string().optional(),
});

/** The JSON form of a trust anchor (a `type`, so it is a plain JSON record). */
export type TrustAnchorJson = {
  kind: TrustAnchorKind;
  /** Lower-case hex of the raw 32-byte Ed25519 device public key. */
  devicePublicKey: string;
  createdAt?: string;
};

/** The public half to hand to verifiers: `{kind: 'ebcc-software-root', devicePublicKey: hex, createdAt}`. */
export function exportTrustAnchor(root: SoftwareRoot): TrustAnchorJson {
  return {
    kind: SOFTWARE_ROOT_KIND,
    devicePublicKey: root.devicePublicKey.toString('hex'),
    createdAt: root.createdAt,
  };
}

/** Parse a trust-anchor file (JSON text or value: `exportTrustAnchor` output, or `{kind: 'keystone-device', devicePublicKey}`). */
export function parseTrustAnchor(json: unknown): TrustAnchor {
  let parsed: z.infer<typeof trustAnchorSchema>;
  try {
    parsed = trustAnchorSchema.parse(typeof json === 'string' ? JSON.parse(json) : json);
  } catch (error) {
    throw new EvidenceFormatError('trust-anchor', `not a trust anchor: ${(error as Error).message}`);
  }
  return {
    kind: parsed.kind,
    devicePublicKey: Buffer.from(parsed.devicePublicKey, 'hex'),
    ...(parsed.createdAt === undefined ? {} : { createdAt: parsed.createdAt }),
  };
}

/** The anchor for a software root, without a JSON round trip. */
export function softwareTrustAnchor(root: SoftwareRoot): TrustAnchor {
  return { kind: SOFTWARE_ROOT_KIND, devicePublicKey: root.devicePublicKey, createdAt: root.createdAt };
}
