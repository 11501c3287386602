import type { Db } from '../../db/client.ts';
import {
  deleteFunctionRows,
  findFunction,
  findVersion,
  setActiveVersion,
  versionById,
  versionsWithStages,
  type FunctionRow,
} from '../../db/queries/functions.ts';
import { conflict, notFound, Problem } from '../problem.ts';
import { summarizeStage } from './deploy.ts';

/** A function as its tenant sees it; another tenant's function does not exist for them. */
export async function ownedFunction(db: Db, tenantId: string, name: string): Promise<FunctionRow> {
  const fn = await findFunction(db, name);
  if (!fn || fn.tenantId !== tenantId) throw notFound(`function "${name}"`);
  return fn;
}

export async function describeFunction(db: Db, fn: FunctionRow) {
  const versions = await versionsWithStages(db, fn.id);
  return {
    name: fn.name,
    activeVersion: versions.find((v) => v.version.id === fn.activeVersionId)?.version.version ?? null,
    createdAt: fn.createdAt,
    updatedAt: fn.updatedAt,
    versions: versions.map(({ version, stages }) => ({
      version: version.version,
      active: version.id === fn.activeVersionId,
      versionDigest: version.versionDigest,
      bundleDigest: version.bundleDigest,
      createdAt: version.createdAt,
      stages: stages.map(summarizeStage),
    })),
  };
}

/**
 * Moves the active-version pointer: to `version` when given, otherwise to the version deployed just
 * before the active one.
 */
export async function rollback(db: Db, fn: FunctionRow, version?: string) {
  let targetId: string;
  if (version) {
    const target = await findVersion(db, fn.id, version);
    if (!target) throw notFound(`version "${version}" of function "${fn.name}"`);
    targetId = target.id;
  } else {
    const versions = await versionsWithStages(db, fn.id);
    const activeIndex = versions.findIndex((v) => v.version.id === fn.activeVersionId);
    const previous = versions[activeIndex + 1];
    if (activeIndex < 0 || !previous) {
      throw conflict(
        'no-previous-version',
        `function "${fn.name}" has no version older than the active one to roll back to`,
      );
    }
    targetId = previous.version.id;
  }
  await setActiveVersion(db, fn.id, targetId);
  const active = await versionById(db, targetId);
  return { function: fn.name, activeVersion: active!.version, versionDigest: active!.versionDigest };
}

/**
 * Deletes a function with all its versions. Refused while it has live instances, unless forced; then
 * `stopInstances` first stops and deletes every instance of it (and destroys their enclaves).
 */
export async function deleteFunction(
  db: Db,
  fn: FunctionRow,
  force: boolean,
  pool: {
    /** How many live instances of the function an operator created on this node. */
    operatorInstances: (functionId: string) => number;
    /** Drains and deletes this node's instances of the function; `done` once the rows are gone. */
    drain: (fn: FunctionRow) => Promise<{ done: () => void }>;
  },
): Promise<void> {
  // The pool's instances are the function's own and go with it; instances an operator made are theirs.
  const held = pool.operatorInstances(fn.id);
  if (held > 0 && !force) {
    throw new Problem(
      409,
      'function-has-instances',
      'Conflict',
      `function "${fn.name}" has ${held} instance(s) created by an operator; delete them or delete with force`,
      { operatorInstances: held },
    );
  }
  const drained = await pool.drain(fn);
  try {
    await deleteFunctionRows(db, fn.id);
  } finally {
    drained.done();
  }
}
