import type { Db } from '../../db/client.ts';
import { chainEntries, enclavesByEid } from '../../db/queries/evidence.ts';
import { blobBytes, invocationWithExecutions } from '../../db/queries/invocations.ts';
import { EVIDENCE_BUNDLE_FORMAT, toBase64, type EvidenceBundleInput } from './bundle.ts';
import { decodeEvidence } from './eat.ts';

export class ExportError extends Error {}

/**
 * Builds the self-contained evidence bundle of one invocation from the database: its executions with
 * their artifacts and evidence, the native evidence of their enclaves, the earlier entries of those
 * enclaves' chains, and the checkpoints of destroyed ones. A tenant verifies it offline with nothing else.
 */
export async function exportInvocation(
  db: Db,
  invocationId: string,
  tenantId: string,
): Promise<EvidenceBundleInput | undefined> {
  const found = await invocationWithExecutions(db, invocationId);
  if (!found || found.invocation.tenantId !== tenantId) return undefined;
  const unsigned = found.executions.filter((x) => !x.evidence);
  if (unsigned.length) {
    throw new ExportError(
      `invocation ${invocationId} has ${unsigned.length} stage execution(s) without evidence (backend ${unsigned[0]!.backend})`,
    );
  }
  const blobs = await blobBytes(
    db,
    found.executions.flatMap((x) => [x.requestBlob, x.responseBlob].filter((d): d is string => Boolean(d))),
  );
  const bytes = (inline: Buffer | null, blob: string | null) =>
    inline ?? (blob ? blobs.get(blob) : undefined) ?? Buffer.alloc(0);
  const eids = [...new Set(found.executions.map((x) => x.eid))];
  const enclaveRows = await enclavesByEid(db, eids);
  const inInvocation = new Set(found.executions.map((x) => x.id));
  const chain = (await chainEntries(db, eids)).filter((e) => !inInvocation.has(e.id));
  const nonces = found.executions.map((x) => (x.metadata as { nonce?: string | null }).nonce).filter(Boolean);
  return {
    format: EVIDENCE_BUNDLE_FORMAT,
    invocation: {
      id: found.invocation.id,
      function: found.functionName,
      version: found.version,
      versionDigest: found.versionDigest,
      cid: found.invocation.cid ?? '',
      ...(nonces[0] ? { nonce: String(nonces[0]) } : {}),
    },
    enclaves: enclaveRows.map((e) => ({
      eid: e.eid,
      stage: e.stage,
      backend: e.backend,
      publicKey: (e.publicKey ?? Buffer.alloc(0)).toString('hex'),
      ...(e.encryptionKey ? { encryptionKey: e.encryptionKey.toString('hex') } : {}),
      nativeFormat: e.nativeFormat ?? 'none',
      nativeEvidence: toBase64(e.nativeEvidence ?? Buffer.alloc(0)),
      measurement: { alg: e.measurementAlg, value: e.measurement },
    })),
    executions: found.executions.map((x) => ({
      eid: x.eid,
      seq: x.seq,
      evidence: toBase64(x.evidence!),
      artifacts: {
        request: toBase64(bytes(x.requestInline, x.requestBlob)),
        response: toBase64(bytes(x.responseInline, x.responseBlob)),
        log: toBase64(x.log ?? Buffer.alloc(0)),
        metadata: toBase64(x.boundMetadata ?? Buffer.alloc(0)),
      },
    })),
    chain: chain.map((e) => ({ eid: e.eid, seq: e.seq, evidence: toBase64(e.evidence!) })),
    checkpoints: enclaveRows
      .filter((e) => e.finalCheckpoint)
      .map((e) => ({
        eid: e.eid,
        seq: decodeEvidence(e.finalCheckpoint!).claims.seq,
        evidence: toBase64(e.finalCheckpoint!),
      })),
  };
}
