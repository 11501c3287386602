import { blobs } from '../../db/schema.ts';
import { sha256Digest } from '../registry/digest.ts';
import type { Write } from './group-commit.ts';

/** Artifacts up to this size live in their row; larger ones become content-addressed blobs. */
export const INLINE_LIMIT = 64 * 1024;
/** A stage's log (stderr) is kept up to this many bytes. */
export const LOG_LIMIT = 64 * 1024;

export interface StoredBytes {
  digest: string;
  inline: Buffer | null;
  blob: string | null;
  size: number;
}

/**
 * Stores an artifact inline or as a blob. `digest` and `size` are always the plaintext's (the evidence
 * signs those); with `seal`, the stored bytes are its ciphertext, and a blob is addressed by the
 * ciphertext's own digest (each sealing is unique, so sealed blobs are never shared).
 */
export function storeBytes(
  bytes: Uint8Array,
  blobWrites: Write[],
  seal?: (digest: string, plaintext: Buffer) => Buffer,
): StoredBytes {
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const digest = sha256Digest(buffer);
  const stored = seal ? seal(digest, buffer) : buffer;
  if (stored.length <= INLINE_LIMIT) return { digest, inline: stored, blob: null, size: buffer.length };
  const blobDigest = seal ? sha256Digest(stored) : digest;
  blobWrites.push((tx) =>
    tx.insert(blobs).values({ digest: blobDigest, size: stored.length, data: stored }).onConflictDoNothing(),
  );
  return { digest, inline: null, blob: blobDigest, size: buffer.length };
}
