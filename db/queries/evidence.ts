import { and, asc, inArray, isNotNull } from 'drizzle-orm';
import type { Db } from '../client.ts';
import { enclaves, stageExecutions } from '../schema.ts';

export async function enclavesByEid(db: Db, eids: number[]) {
  if (!eids.length) return [];
  return db.select().from(enclaves).where(inArray(enclaves.eid, eids)).orderBy(asc(enclaves.eid));
}

/** Every signed entry of these enclaves' chains (evidence only). */
export async function chainEntries(db: Db, eids: number[]) {
  if (!eids.length) return [];
  return db
    .select({
      id: stageExecutions.id,
      eid: stageExecutions.eid,
      seq: stageExecutions.seq,
      evidence: stageExecutions.evidence,
    })
    .from(stageExecutions)
    .where(and(inArray(stageExecutions.eid, eids), isNotNull(stageExecutions.evidence)))
    .orderBy(asc(stageExecutions.eid), asc(stageExecutions.seq));
}
