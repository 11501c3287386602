import { and, asc, eq, inArray, isNull, ne } from 'drizzle-orm';
import type { Db } from '../client.ts';
import { enclaves, functions, functionVersions, instances } from '../schema.ts';

export type InstanceRow = typeof instances.$inferSelect;
export type InstanceStatus = InstanceRow['status'];

/** Instances with the name and version of what they run. */
function instancesWithVersion(db: Db) {
  return db
    .select({
      instance: instances,
      functionName: functions.name,
      version: functionVersions.version,
      versionDigest: functionVersions.versionDigest,
    })
    .from(instances)
    .innerJoin(functions, eq(functions.id, instances.functionId))
    .innerJoin(functionVersions, eq(functionVersions.id, instances.versionId));
}

export async function instanceRow(db: Db, cid: string) {
  return instancesWithVersion(db).where(eq(instances.cid, cid)).get();
}

export async function listInstances(db: Db, tenantId: string, functionId?: string) {
  return instancesWithVersion(db)
    .where(
      and(eq(instances.tenantId, tenantId), functionId ? eq(instances.functionId, functionId) : undefined),
    )
    .orderBy(asc(instances.createdAt));
}

export async function enclavesOf(db: Db, cid: string) {
  return db.select().from(enclaves).where(eq(enclaves.cid, cid)).orderBy(asc(enclaves.eid));
}

export async function unstoppedOnHost(db: Db, hostId: string) {
  return db
    .select()
    .from(instances)
    .where(and(eq(instances.hostId, hostId), ne(instances.status, 'stopped')));
}

export async function markEnclavesDestroyed(db: Db, cids: string[]): Promise<void> {
  if (!cids.length) return;
  await db
    .update(enclaves)
    .set({ destroyedAt: Date.now() })
    .where(and(inArray(enclaves.cid, cids), isNull(enclaves.destroyedAt)));
}
