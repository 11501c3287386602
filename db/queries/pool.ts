import { eq } from 'drizzle-orm';
import type { Db } from '../client.ts';
import { functions, functionVersions } from '../schema.ts';

/** Every function with its active version's id and manifest: what pool upkeep keeps. */
export async function activeVersions(db: Db) {
  return db
    .select({
      functionId: functions.id,
      tenantId: functions.tenantId,
      name: functions.name,
      versionId: functionVersions.id,
      manifest: functionVersions.manifest,
    })
    .from(functions)
    .innerJoin(functionVersions, eq(functionVersions.id, functions.activeVersionId));
}
