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

export function storeBytes(bytes: Uint8Array, blobWrites: Write[]): StoredBytes {
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const digest = sha256Digest(buffer);
  if (buffer.length <= INLINE_LIMIT) return { digest, inline: buffer, blob: null, size: buffer.length };
  blobWrites.push((tx) =>
    tx.insert(blobs).values({ digest, size: buffer.length, data: buffer }).onConflictDoNothing(),
  );
  return { digest, inline: null, blob: digest, size: buffer.length };
}
