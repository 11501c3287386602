import { asc, eq, inArray, isNotNull, sql } from 'drizzle-orm';
import type { Db } from '../client.ts';
import { blobs, functions, functionVersions, invocations, stageExecutions } from '../schema.ts';

export async function invocationWithExecutions(db: Db, id: string) {
  const invocation = await db
    .select({
      invocation: invocations,
      functionName: functions.name,
      version: functionVersions.version,
      versionDigest: functionVersions.versionDigest,
    })
    .from(invocations)
    .innerJoin(functions, eq(functions.id, invocations.functionId))
    .innerJoin(functionVersions, eq(functionVersions.id, invocations.versionId))
    .where(eq(invocations.id, id))
    .get();
  if (!invocation) return undefined;
  const executions = await db
    .select()
    .from(stageExecutions)
    .where(eq(stageExecutions.invocationId, id))
    .orderBy(asc(stageExecutions.createdAt), asc(stageExecutions.id));
  return { ...invocation, executions };
}

export async function blobBytes(db: Db, digests: string[]): Promise<Map<string, Buffer>> {
  if (!digests.length) return new Map();
  const rows = await db
    .select({ digest: blobs.digest, data: blobs.data })
    .from(blobs)
    .where(inArray(blobs.digest, digests));
  return new Map(rows.map((r) => [r.digest, r.data]));
}

/** One row per active version that declares a custom HTTP route. */
export async function customRoutes(db: Db) {
  const route = sql<string>`json_extract(${functionVersions.manifest}, '$.triggers.http.route')`;
  return db
    .select({ name: functions.name, route })
    .from(functions)
    .innerJoin(functionVersions, eq(functionVersions.id, functions.activeVersionId))
    .where(isNotNull(route));
}
