import { and, eq, inArray, isNotNull, lt, ne, sql } from 'drizzle-orm';
import type { Db } from '../../db/client.ts';
import {
  blobs,
  enclaves,
  functions,
  functionVersions,
  invocations,
  stageExecutions,
  versionFiles,
} from '../../db/schema.ts';

const DAY_MS = 86_400_000;

export interface SweepOptions {
  /** The clock: what counts as expired is decided against this (tests inject it). */
  now: number;
  /** Invocations (or chains) per transaction. */
  batchSize?: number;
  /** At most this many batches per policy and per phase in one sweep; the next sweep goes on. */
  maxBatches?: number;
}

export interface SweepResult {
  /** Invocation records deleted. */
  invocations: number;
  /** Stage executions whose artifacts were deleted (their evidence kept while their chain lives on). */
  pruned: number;
  /** Closed enclave chains deleted whole (enclave record, checkpoint and every entry). */
  chains: number;
  /** Blobs that only expired artifacts referred to. */
  blobs: number;
  batches: number;
}

/**
 * Retention: deletes what functions' policies (`retention.days` of the active version) let expire, in
 * bounded batches, one transaction each.
 *
 * Evidence chains are kept whole or deleted whole. An expired invocation's record goes, and so do its
 * stage executions' artifacts (request, response, log, blobs), but each execution's evidence entry (its
 * signed digests, metadata and seq) stays as a tombstone while its enclave's chain may still be
 * appraised: later invocations on the same enclave prove continuity from seq 1 through it. Once an
 * enclave is destroyed (its chain closed by its checkpoint) and every one of its entries is a
 * tombstone, the whole chain goes: entries, enclave record and checkpoint.
 */
export async function sweepExpired(db: Db, options: SweepOptions): Promise<SweepResult> {
  const batchSize = options.batchSize ?? 200;
  const maxBatches = options.maxBatches ?? 50;
  const result: SweepResult = { invocations: 0, pruned: 0, chains: 0, blobs: 0, batches: 0 };
  const days = sql<number | null>`json_extract(${functionVersions.manifest}, '$.retention.days')`;
  const policies = await db
    .select({ functionId: functions.id, days })
    .from(functions)
    .innerJoin(functionVersions, eq(functionVersions.id, functions.activeVersionId))
    .where(isNotNull(days));

  for (const policy of policies) {
    const cutoff = options.now - Number(policy.days) * DAY_MS;
    for (let batch = 0; batch < maxBatches; batch++) {
      const expired = await db
        .select({ id: invocations.id })
        .from(invocations)
        .where(
          and(
            eq(invocations.functionId, policy.functionId),
            lt(invocations.startedAt, cutoff),
            ne(invocations.status, 'running'),
          ),
        )
        .limit(batchSize);
      if (!expired.length) break;
      const ids = expired.map((r) => r.id);
      await db.transaction(async (tx) => {
        const executions = await tx
          .select({ requestBlob: stageExecutions.requestBlob, responseBlob: stageExecutions.responseBlob })
          .from(stageExecutions)
          .where(inArray(stageExecutions.invocationId, ids));
        const pruned = await tx
          .update(stageExecutions)
          .set({
            requestInline: null,
            requestBlob: null,
            responseInline: null,
            responseBlob: null,
            log: null,
            prunedAt: options.now,
          })
          .where(inArray(stageExecutions.invocationId, ids))
          .returning({ id: stageExecutions.id });
        await tx.delete(invocations).where(inArray(invocations.id, ids));
        const candidates = [
          ...new Set(
            executions.flatMap((x) => [x.requestBlob, x.responseBlob]).filter((d): d is string => !!d),
          ),
        ];
        let removed = 0;
        if (candidates.length) {
          // A blob goes only if nothing else refers to it: no artifact, version file or bundle.
          const deleted = await tx
            .delete(blobs)
            .where(
              and(
                inArray(blobs.digest, candidates),
                sql`not exists (select 1 from ${stageExecutions} where ${stageExecutions.requestBlob} = ${blobs.digest} or ${stageExecutions.responseBlob} = ${blobs.digest})`,
                sql`not exists (select 1 from ${versionFiles} where ${versionFiles.blobDigest} = ${blobs.digest})`,
                sql`not exists (select 1 from ${functionVersions} where ${functionVersions.bundleDigest} = ${blobs.digest})`,
              ),
            )
            .returning({ digest: blobs.digest });
          removed = deleted.length;
        }
        result.invocations += ids.length;
        result.pruned += pruned.length;
        result.blobs += removed;
      });
      result.batches++;
      if (expired.length < batchSize) break;
    }
  }

  for (let batch = 0; batch < maxBatches; batch++) {
    // Closed chains made only of tombstones.
    const closed = await db
      .select({ eid: enclaves.eid })
      .from(enclaves)
      .where(
        and(
          isNotNull(enclaves.destroyedAt),
          sql`exists (select 1 from ${stageExecutions} where ${stageExecutions.eid} = ${enclaves.eid})`,
          sql`not exists (select 1 from ${stageExecutions} where ${stageExecutions.eid} = ${enclaves.eid} and ${stageExecutions.prunedAt} is null)`,
        ),
      )
      .limit(batchSize);
    if (!closed.length) break;
    const eids = closed.map((r) => r.eid);
    await db.transaction(async (tx) => {
      await tx.delete(stageExecutions).where(inArray(stageExecutions.eid, eids));
      await tx.delete(enclaves).where(inArray(enclaves.eid, eids));
    });
    result.chains += eids.length;
    result.batches++;
    if (closed.length < batchSize) break;
  }
  return result;
}
