import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { StageImage } from '../../adapters/index.ts';
import type { Db } from '../../db/client.ts';
import { stagesOf, versionById, versionFileBlobs, type VersionRow } from '../../db/queries/functions.ts';
import { parseManifest, type Manifest } from '../manifest/index.ts';
import { materializeVersion } from './cache.ts';

export interface LoadedVersion {
  row: VersionRow;
  manifest: Manifest;
  /** Local, read-only copy of the version's files. */
  rootDir: string;
  stages: StageImage[];
}

/**
 * Everything needed to run a version on this node. Bytes come from libSQL; the local extraction cache
 * is filled on first use, so any node sharing the database can run any version.
 */
export async function loadVersion(
  db: Db,
  home: string,
  versionId: string,
): Promise<LoadedVersion | undefined> {
  const row = await versionById(db, versionId);
  if (!row) return undefined;
  const manifest = parseManifest(row.manifest);
  let rootDir = join(home, 'cache', 'versions', row.versionDigest.replace(/^sha256:/, ''));
  if (!existsSync(rootDir)) {
    const files = await versionFileBlobs(db, versionId);
    rootDir = await materializeVersion(home, row.versionDigest, files);
  }
  const stageRows = new Map((await stagesOf(db, versionId)).map((s) => [s.name, s]));
  const stages = manifest.stages.map((s) => ({
    name: s.name,
    backend: s.backend,
    mode: s.mode,
    image: s.image,
    limits: s.limits,
    rootDir,
    imageDigest: stageRows.get(s.name)!.imageDigest,
  }));
  return { row, manifest, rootDir, stages };
}
