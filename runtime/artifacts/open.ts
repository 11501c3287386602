import type { Db } from '../../db/client.ts';
import { blobBytes } from '../../db/queries/invocations.ts';
import type { stageExecutions } from '../../db/schema.ts';
import type { DataKeyring } from '../keys/data-keys.ts';
import {
  ArtifactSealError,
  artifactAad,
  openBytes,
  SEALABLE_ARTIFACTS,
  type SealableArtifact,
} from './sealing.ts';

type ExecutionRow = typeof stageExecutions.$inferSelect;

/** The artifacts of one execution as the tenant sees them (plaintext), and which were sealed at rest. */
export interface OpenedArtifacts {
  request: Buffer | null;
  response: Buffer | null;
  log: Buffer | null;
  sealed: SealableArtifact[];
}

const digestOf = (x: ExecutionRow, artifact: SealableArtifact) =>
  artifact === 'request' ? x.requestDigest : artifact === 'response' ? x.responseDigest : x.logDigest;

/**
 * Reads and, where sealed, decrypts the artifacts of executions for their tenant. Throws
 * `DataKeyShreddedError` when a data key they need was shredded, `ArtifactSealError` when a ciphertext
 * does not open (tampered, or moved from another row).
 */
export async function openArtifacts(
  db: Db,
  keyring: DataKeyring,
  tenantId: string,
  executions: ExecutionRow[],
  /** `raw`: give a ciphertext that does not open as it is (so its digest check fails) instead of throwing. */
  unopenable: 'throw' | 'raw' = 'throw',
): Promise<Map<string, OpenedArtifacts>> {
  const blobs = await blobBytes(
    db,
    executions.flatMap((x) => [x.requestBlob, x.responseBlob].filter((d): d is string => Boolean(d))),
  );
  const keys = new Map<string, Buffer>();
  const opened = new Map<string, OpenedArtifacts>();
  for (const x of executions) {
    const stored: Record<SealableArtifact, Buffer | null> = {
      request: x.requestInline ?? (x.requestBlob ? (blobs.get(x.requestBlob) ?? null) : null),
      response: x.responseInline ?? (x.responseBlob ? (blobs.get(x.responseBlob) ?? null) : null),
      log: x.log,
    };
    const sealed = SEALABLE_ARTIFACTS.filter((a) => x.sealedWith && x.sealed?.includes(a));
    for (const artifact of sealed) {
      const bytes = stored[artifact];
      if (!bytes) continue;
      let key = keys.get(x.sealedWith!);
      if (!key) {
        key = await keyring.open(x.sealedWith!, tenantId);
        keys.set(x.sealedWith!, key);
      }
      try {
        stored[artifact] = openBytes(key, artifactAad(x.id, artifact, digestOf(x, artifact) ?? ''), bytes);
      } catch (error) {
        if (unopenable === 'throw' || !(error instanceof ArtifactSealError)) {
          if (error instanceof ArtifactSealError)
            error.message = `the ${artifact} of stage execution ${x.id}: ${error.message}`;
          throw error;
        }
      }
    }
    opened.set(x.id, { ...stored, sealed });
  }
  return opened;
}
