import { and, asc, desc, eq, inArray, notInArray, sql } from 'drizzle-orm';
import type { Db } from '../client.ts';
import { blobs, functions, functionVersions, instances, stages, versionFiles } from '../schema.ts';

export type FunctionRow = typeof functions.$inferSelect;
export type VersionRow = typeof functionVersions.$inferSelect;
export type StageRow = typeof stages.$inferSelect;

export async function findFunction(db: Db, name: string): Promise<FunctionRow | undefined> {
  return db.query.functions.findFirst({ where: eq(functions.name, name) });
}

export async function findVersion(
  db: Db,
  functionId: string,
  version: string,
): Promise<VersionRow | undefined> {
  return db.query.functionVersions.findFirst({
    where: and(eq(functionVersions.functionId, functionId), eq(functionVersions.version, version)),
  });
}

export async function versionById(db: Db, id: string): Promise<VersionRow | undefined> {
  return db.query.functionVersions.findFirst({ where: eq(functionVersions.id, id) });
}

export async function listFunctions(db: Db, tenantId: string) {
  return db
    .select({
      name: functions.name,
      activeVersion: functionVersions.version,
      versionDigest: functionVersions.versionDigest,
      createdAt: functions.createdAt,
      updatedAt: functions.updatedAt,
      versions: sql<number>`(select count(*) from ${functionVersions} v where v.function_id = ${functions.id})`,
    })
    .from(functions)
    .leftJoin(functionVersions, eq(functionVersions.id, functions.activeVersionId))
    .where(eq(functions.tenantId, tenantId))
    .orderBy(asc(functions.name));
}

export async function versionsWithStages(db: Db, functionId: string) {
  const versions = await db
    .select()
    .from(functionVersions)
    .where(eq(functionVersions.functionId, functionId))
    .orderBy(desc(functionVersions.createdAt), desc(functionVersions.id));
  const stageRows = versions.length
    ? await db
        .select()
        .from(stages)
        .where(
          inArray(
            stages.versionId,
            versions.map((v) => v.id),
          ),
        )
    : [];
  return versions.map((v) => ({ version: v, stages: stageRows.filter((s) => s.versionId === v.id) }));
}

export async function stagesOf(db: Db, versionId: string): Promise<StageRow[]> {
  return db.select().from(stages).where(eq(stages.versionId, versionId)).orderBy(asc(stages.name));
}

export async function versionFileBlobs(db: Db, versionId: string) {
  return db
    .select({ path: versionFiles.path, mode: versionFiles.mode, data: blobs.data })
    .from(versionFiles)
    .innerJoin(blobs, eq(blobs.digest, versionFiles.blobDigest))
    .where(eq(versionFiles.versionId, versionId));
}

export interface NewVersion {
  functionId: string;
  tenantId: string;
  functionName: string;
  isNewFunction: boolean;
  version: typeof functionVersions.$inferInsert;
  files: { path: string; mode: number; size: number; sha256: string; data: Buffer }[];
  stages: (typeof stages.$inferInsert)[];
}

/** Writes a whole version, its blobs and its stages, and makes it active: all of it or none. */
export async function insertVersion(
  db: Db,
  v: NewVersion,
  beforeCommit: () => void = () => {},
): Promise<void> {
  await db.transaction(async (tx) => {
    if (v.isNewFunction) {
      await tx.insert(functions).values({ id: v.functionId, tenantId: v.tenantId, name: v.functionName });
    }
    for (const file of v.files) {
      await tx
        .insert(blobs)
        .values({ digest: `sha256:${file.sha256}`, size: file.size, data: file.data })
        .onConflictDoNothing();
    }
    await tx.insert(functionVersions).values(v.version);
    if (v.files.length) {
      await tx.insert(versionFiles).values(
        v.files.map((f) => ({
          versionId: v.version.id,
          path: f.path,
          mode: f.mode,
          size: f.size,
          blobDigest: `sha256:${f.sha256}`,
        })),
      );
    }
    await tx.insert(stages).values(v.stages);
    await tx
      .update(functions)
      .set({ activeVersionId: v.version.id, updatedAt: Date.now() })
      .where(eq(functions.id, v.functionId));
    beforeCommit();
  });
}

export async function setActiveVersion(db: Db, functionId: string, versionId: string): Promise<void> {
  await db
    .update(functions)
    .set({ activeVersionId: versionId, updatedAt: Date.now() })
    .where(eq(functions.id, functionId));
}

/** Removes a function, its versions and instance records, and every blob nothing else refers to. */
export async function deleteFunctionRows(db: Db, functionId: string): Promise<void> {
  await db.transaction(async (tx) => {
    const owned = tx
      .select({ digest: versionFiles.blobDigest })
      .from(versionFiles)
      .innerJoin(functionVersions, eq(functionVersions.id, versionFiles.versionId))
      .where(eq(functionVersions.functionId, functionId));
    const ownedDigests = (await owned).map((r) => r.digest);
    await tx.delete(instances).where(eq(instances.functionId, functionId));
    await tx.delete(functions).where(eq(functions.id, functionId));
    if (ownedDigests.length) {
      await tx
        .delete(blobs)
        .where(
          and(
            inArray(blobs.digest, ownedDigests),
            notInArray(blobs.digest, tx.select({ d: versionFiles.blobDigest }).from(versionFiles)),
          ),
        );
    }
  });
}
