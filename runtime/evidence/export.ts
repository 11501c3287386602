import type { Db } from '../../db/client.ts';
import { chainEntries, enclavesByEid } from '../../db/queries/evidence.ts';
import { invocationWithExecutions } from '../../db/queries/invocations.ts';
import { openArtifacts, type OpenedArtifacts } from '../artifacts/open.ts';
import type { SealableArtifact } from '../artifacts/sealing.ts';
import { DataKeyShreddedError, type DataKeyring } from '../keys/data-keys.ts';
import { EVIDENCE_BUNDLE_FORMAT, toBase64, type EvidenceBundleInput } from './bundle.ts';
import { decodeEvidence } from './eat.ts';

export class ExportError extends Error {}

/**
 * Builds the self-contained evidence bundle of one invocation from the database: its executions with
 * their artifacts and evidence, the native evidence of their enclaves, the earlier entries of those
 * enclaves' chains, and the checkpoints of destroyed ones. A tenant verifies it offline with nothing else.
 * Artifacts sealed at rest are decrypted for the tenant, and the bundle says so (`contents`); when their
 * data key was shredded they are withheld, and the evidence still verifies over their signed digests.
 */
export async function exportInvocation(
  db: Db,
  invocationId: string,
  tenantId: string,
  keyring: DataKeyring,
): Promise<EvidenceBundleInput | undefined> {
  const found = await invocationWithExecutions(db, invocationId);
  if (!found || found.invocation.tenantId !== tenantId) return undefined;
  const unsigned = found.executions.filter((x) => !x.evidence);
  if (unsigned.length) {
    throw new ExportError(
      `invocation ${invocationId} has ${unsigned.length} stage execution(s) without evidence (backend ${unsigned[0]!.backend})`,
    );
  }
  let opened: Map<string, OpenedArtifacts>;
  let shredded: DataKeyShreddedError | undefined;
  try {
    opened = await openArtifacts(db, keyring, tenantId, found.executions, 'raw');
  } catch (error) {
    if (!(error instanceof DataKeyShreddedError)) throw error;
    shredded = error;
    // Only what was never sealed can still be given; the sealed artifacts are withheld.
    const clear = found.executions.map((x) => ({ ...x, sealedWith: null }));
    opened = await openArtifacts(db, keyring, tenantId, clear);
    for (const x of found.executions) {
      const o = opened.get(x.id)!;
      const sealed = (x.sealedWith ? (x.sealed ?? []) : []) as SealableArtifact[];
      for (const a of sealed) o[a] = null;
      o.sealed = sealed;
    }
  }
  const withheld = (x: { id: string }) => (shredded ? opened.get(x.id)!.sealed : ([] as SealableArtifact[]));
  const b64 = (bytes: Buffer | null) => toBase64(bytes ?? Buffer.alloc(0));
  const sealedAny = [...opened.values()].some((o) => o.sealed.length);
  const eids = [...new Set(found.executions.map((x) => x.eid))];
  const enclaveRows = await enclavesByEid(db, eids);
  const inInvocation = new Set(found.executions.map((x) => x.id));
  const chain = (await chainEntries(db, eids)).filter((e) => !inInvocation.has(e.id));
  const nonces = found.executions.map((x) => (x.metadata as { nonce?: string | null }).nonce).filter(Boolean);
  return {
    format: EVIDENCE_BUNDLE_FORMAT,
    contents: shredded
      ? {
          artifacts: 'withheld',
          detail: `sealed artifacts are withheld: data key ${shredded.keyId} was shredded at ${new Date(shredded.shreddedAt).toISOString()}; only their signed digests remain`,
        }
      : {
          artifacts: 'plaintext',
          detail: sealedAny
            ? 'artifacts sealed at rest were decrypted for their tenant: this file holds them in clear'
            : 'every artifact was stored in clear (public by the manifest)',
        },
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
    executions: found.executions.map((x) => {
      const o = opened.get(x.id)!;
      const gone = withheld(x);
      return {
        eid: x.eid,
        seq: x.seq,
        evidence: toBase64(x.evidence!),
        artifacts: {
          request: b64(o.request),
          response: b64(o.response),
          log: b64(o.log),
          metadata: toBase64(x.boundMetadata ?? Buffer.alloc(0)),
        },
        ...(gone.length ? { withheld: gone } : {}),
      };
    }),
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
