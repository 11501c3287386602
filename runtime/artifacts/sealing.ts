import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import type { DataKey } from '../keys/data-keys.ts';

/** The artifacts of a stage execution that can be sealed at rest. Metadata and evidence never are. */
export const SEALABLE_ARTIFACTS = ['request', 'response', 'log'] as const;
export type SealableArtifact = (typeof SEALABLE_ARTIFACTS)[number];

/** How a stage's artifacts are stored: which are sealed, and how to get the tenant's data key. */
export interface ArtifactSealing {
  artifacts: ReadonlySet<SealableArtifact>;
  dataKey(): Promise<DataKey>;
}

export class ArtifactSealError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ArtifactSealError';
  }
}

const VERSION = 1;
const IV_BYTES = 12;
const TAG_BYTES = 16;

/**
 * The associated data of a sealed artifact: the execution, which artifact, and its plaintext digest.
 * A ciphertext moved to another row, or to another artifact of the same row, does not open.
 */
export function artifactAad(executionId: string, artifact: SealableArtifact, digest: string): Buffer {
  return Buffer.from(`ebcc-artifact/1\0${executionId}\0${artifact}\0${digest}`);
}

/** AES-256-GCM: version byte, 96-bit random IV, ciphertext, 128-bit tag. */
export function sealBytes(key: Buffer, aad: Buffer, plaintext: Buffer): Buffer {
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(aad);
  const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return Buffer.concat([Buffer.of(VERSION), iv, body, cipher.getAuthTag()]);
}

export function openBytes(key: Buffer, aad: Buffer, sealed: Buffer): Buffer {
  if (sealed.length < 1 + IV_BYTES + TAG_BYTES || sealed[0] !== VERSION)
    throw new ArtifactSealError('not a sealed artifact');
  const decipher = createDecipheriv('aes-256-gcm', key, sealed.subarray(1, 1 + IV_BYTES));
  decipher.setAAD(aad);
  decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
  try {
    return Buffer.concat([
      decipher.update(sealed.subarray(1 + IV_BYTES, sealed.length - TAG_BYTES)),
      decipher.final(),
    ]);
  } catch {
    throw new ArtifactSealError('the sealed artifact does not open (wrong key, row or artifact)');
  }
}

/** A sealer for one execution, as `storeBytes` takes it. */
export function artifactSealer(key: Buffer, executionId: string, artifact: SealableArtifact) {
  return (digest: string, plaintext: Buffer) =>
    sealBytes(key, artifactAad(executionId, artifact, digest), plaintext);
}
