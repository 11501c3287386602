import { and, asc, eq, gt, inArray, sql } from 'drizzle-orm';
import type { Db } from '../client.ts';
import { batches, batchItems, functions, functionVersions } from '../schema.ts';

export type BatchRow = typeof batches.$inferSelect;
export type BatchItemRow = typeof batchItems.$inferSelect;
export type NewBatchItem = typeof batchItems.$inferInsert;
export type ItemStatus = BatchItemRow['status'];

const INSERT_CHUNK = 200;

/** Records a batch and all its items in one transaction: either the whole batch exists or none of it. */
export async function insertBatch(db: Db, batch: typeof batches.$inferInsert, items: NewBatchItem[]) {
  await db.transaction(async (tx) => {
    await tx.insert(batches).values(batch);
    for (let i = 0; i < items.length; i += INSERT_CHUNK)
      await tx.insert(batchItems).values(items.slice(i, i + INSERT_CHUNK));
  });
}

export async function batchById(db: Db, id: string): Promise<BatchRow | undefined> {
  return db.query.batches.findFirst({ where: eq(batches.id, id) });
}

export async function itemById(db: Db, id: string): Promise<BatchItemRow | undefined> {
  return db.query.batchItems.findFirst({ where: eq(batchItems.id, id) });
}

export async function batchCounts(db: Db, batchId: string): Promise<Record<ItemStatus, number>> {
  const rows = await db
    .select({ status: batchItems.status, n: sql<number>`count(*)` })
    .from(batchItems)
    .where(eq(batchItems.batchId, batchId))
    .groupBy(batchItems.status);
  const counts: Record<ItemStatus, number> = { queued: 0, succeeded: 0, failed: 0, dead: 0 };
  for (const row of rows) counts[row.status] = Number(row.n);
  return counts;
}

/** Items of a batch in submission order, after sequence number `after`, optionally of some statuses. */
export async function batchItemsPage(
  db: Db,
  batchId: string,
  options: { after: number; limit: number; statuses?: ItemStatus[] },
): Promise<BatchItemRow[]> {
  return db
    .select()
    .from(batchItems)
    .where(
      and(
        eq(batchItems.batchId, batchId),
        gt(batchItems.seq, options.after),
        options.statuses ? inArray(batchItems.status, options.statuses) : undefined,
      ),
    )
    .orderBy(asc(batchItems.seq))
    .limit(options.limit);
}

/** Ids of unfinished items, in id order after `after`: what a lost Redis must be given again. */
export async function queuedItemIds(db: Db, after: string, limit: number): Promise<string[]> {
  const rows = await db
    .select({ id: batchItems.id })
    .from(batchItems)
    .where(and(eq(batchItems.status, 'queued'), gt(batchItems.id, after)))
    .orderBy(asc(batchItems.id))
    .limit(limit);
  return rows.map((r) => r.id);
}

/**
 * Puts dead (and, when asked, failed) items of a batch back in the queue state with a fresh attempt
 * count; returns their ids, to be enqueued again.
 */
export async function requeueItems(
  db: Db,
  batchId: string,
  statuses: ItemStatus[],
  itemId?: string,
): Promise<string[]> {
  const rows = await db
    .update(batchItems)
    .set({ status: 'queued', attempts: 0, error: null, finishedAt: null })
    .where(
      and(
        eq(batchItems.batchId, batchId),
        inArray(batchItems.status, statuses),
        itemId ? eq(batchItems.id, itemId) : undefined,
      ),
    )
    .returning({ id: batchItems.id });
  return rows.map((r) => r.id);
}

/** Dead items of a function (whatever brought them: batch, queue or cron), oldest first, after `after`. */
export async function deadItems(
  db: Db,
  functionId: string,
  after: string,
  limit: number,
): Promise<BatchItemRow[]> {
  return db
    .select()
    .from(batchItems)
    .where(
      and(eq(batchItems.functionId, functionId), eq(batchItems.status, 'dead'), gt(batchItems.id, after)),
    )
    .orderBy(asc(batchItems.id))
    .limit(limit);
}

/** Puts every dead item of a function back in the queue state; returns their ids, to be enqueued again. */
export async function requeueDead(db: Db, functionId: string): Promise<string[]> {
  const rows = await db
    .update(batchItems)
    .set({ status: 'queued', attempts: 0, error: null, finishedAt: null })
    .where(and(eq(batchItems.functionId, functionId), eq(batchItems.status, 'dead')))
    .returning({ id: batchItems.id });
  return rows.map((r) => r.id);
}

/** Every function with an active version, and that version's manifest (for triggers). */
export async function activeVersions(db: Db) {
  return db
    .select({
      tenantId: functions.tenantId,
      functionId: functions.id,
      name: functions.name,
      versionId: functionVersions.id,
      manifest: functionVersions.manifest,
    })
    .from(functions)
    .innerJoin(functionVersions, eq(functionVersions.id, functions.activeVersionId));
}
