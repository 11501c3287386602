import { getAdapter, BackendUnavailableError, type StageImage } from '../../adapters/index.ts';
import type { Db } from '../../db/client.ts';
import {
  findFunction,
  findVersion,
  insertVersion,
  stagesOf,
  type StageRow,
} from '../../db/queries/functions.ts';
import { readBundleArchive, BundleArchiveError, type BundleFile } from '../bundle/archive.ts';
import { crashPoint } from '../faults.ts';
import { newId } from '../ids.ts';
import {
  ManifestError,
  MANIFEST_FILE,
  parseManifestText,
  referencedFiles,
  type Manifest,
} from '../manifest/index.ts';
import { Problem, conflict, unprocessable } from '../problem.ts';
import { materializeVersion } from './cache.ts';
import { stageImageDigest, stageLaunchConfig, versionDigest } from './digest.ts';

export interface DeployInput {
  db: Db;
  home: string;
  tenantId: string;
  archivePath: string;
  bundleDigest: string;
}

export interface StageSummary {
  name: string;
  backend: string;
  mode: string;
  imageDigest: string;
  measurement: { alg: string; value: string } | null;
  measurementNote: string | null;
}

export interface DeployResult {
  created: boolean;
  function: string;
  version: string;
  versionDigest: string;
  bundleDigest: string;
  stages: StageSummary[];
}

export const summarizeStage = (s: StageRow): StageSummary => ({
  name: s.name,
  backend: s.backend,
  mode: s.mode,
  imageDigest: s.imageDigest,
  measurement: s.measurement && s.measurementAlg ? { alg: s.measurementAlg, value: s.measurement } : null,
  measurementNote: s.measurementNote,
});

async function readBundle(archivePath: string): Promise<Map<string, BundleFile>> {
  try {
    return (await readBundleArchive(archivePath)).files;
  } catch (error) {
    if (error instanceof BundleArchiveError) {
      throw new Problem(422, 'bundle-invalid', 'Invalid bundle', error.message, { entry: error.entry });
    }
    throw error;
  }
}

function checkManifestFiles(manifest: Manifest, files: Map<string, BundleFile>): void {
  for (const { path, field } of referencedFiles(manifest)) {
    if (!files.has(path)) {
      throw unprocessable('bundle-missing-file', `${field} names "${path}", which is not in the bundle`, {
        field,
        entry: path,
      });
    }
  }
  manifest.stages.forEach((stage, i) => {
    const entry = files.get(stage.image.entry);
    if (stage.image.kind === 'executable' && entry && !(entry.mode & 0o111)) {
      throw unprocessable(
        'bundle-not-executable',
        `stages[${i}].image.entry "${stage.image.entry}" is not executable`,
        {
          field: `stages[${i}].image.entry`,
          entry: stage.image.entry,
        },
      );
    }
  });
}

/**
 * Deploys one uploaded archive. Everything is checked and measured before a single row is written, and
 * the version is written in one transaction, so a crash leaves the whole version or nothing.
 */
export async function deployBundle(input: DeployInput): Promise<DeployResult> {
  const { db, tenantId } = input;
  const files = await readBundle(input.archivePath);
  const manifestFile = files.get(MANIFEST_FILE);
  if (!manifestFile) {
    throw unprocessable('bundle-missing-manifest', `the bundle has no ${MANIFEST_FILE} at its root`, {
      entry: MANIFEST_FILE,
    });
  }
  let manifest: Manifest;
  try {
    manifest = parseManifestText(manifestFile.data.toString('utf8'));
  } catch (error) {
    if (error instanceof ManifestError) {
      throw unprocessable('manifest-invalid', error.message, { issues: error.issues });
    }
    throw error;
  }
  checkManifestFiles(manifest, files);

  const existing = await findFunction(db, manifest.name);
  if (existing && existing.tenantId !== tenantId) {
    throw conflict('function-name-taken', `the function name "${manifest.name}" is not available`);
  }
  if (existing) {
    const prior = await findVersion(db, existing.id, manifest.version);
    if (prior) {
      if (prior.bundleDigest !== input.bundleDigest) {
        throw conflict(
          'version-immutable',
          `${manifest.name}@${manifest.version} already exists with different content; versions are immutable, deploy a new version`,
        );
      }
      return {
        created: false,
        function: manifest.name,
        version: manifest.version,
        versionDigest: prior.versionDigest,
        bundleDigest: prior.bundleDigest,
        stages: (await stagesOf(db, prior.id)).map(summarizeStage),
      };
    }
  }

  const digest = versionDigest(manifest, files);
  const rootDir = await materializeVersion(input.home, digest, files.values());
  const stageRows: (typeof import('../../db/schema.ts').stages.$inferInsert)[] = [];
  const versionId = newId('ver');
  for (const [i, stage] of manifest.stages.entries()) {
    const imageDigest = stageImageDigest(stage, files);
    const pinned = stage.reference;
    if (pinned?.imageDigest && pinned.imageDigest !== imageDigest) {
      throw unprocessable(
        'measurement-mismatch',
        `stages[${i}] "${stage.name}": image digest ${imageDigest} does not match the pinned ${pinned.imageDigest}`,
        { field: `stages[${i}].reference.imageDigest` },
      );
    }
    const image: StageImage = { ...stage, rootDir, imageDigest };
    let measurement: { alg: string; value: string } | null = null;
    let note: string | null = null;
    try {
      measurement = await getAdapter(stage.backend).measure(image);
    } catch (error) {
      if (!(error instanceof BackendUnavailableError)) throw error;
      note = error.message;
    }
    if (pinned?.measurement) {
      if (!measurement) {
        throw unprocessable(
          'measurement-unavailable',
          `stages[${i}] "${stage.name}": cannot check the pinned measurement: ${note}`,
          { field: `stages[${i}].reference.measurement` },
        );
      }
      if (pinned.measurement.alg !== measurement.alg || pinned.measurement.value !== measurement.value) {
        throw unprocessable(
          'measurement-mismatch',
          `stages[${i}] "${stage.name}": measurement ${measurement.alg}:${measurement.value} does not match the pinned ${pinned.measurement.alg}:${pinned.measurement.value}`,
          { field: `stages[${i}].reference.measurement` },
        );
      }
    }
    stageRows.push({
      versionId,
      name: stage.name,
      backend: stage.backend,
      mode: stage.mode,
      imageDigest,
      measurementAlg: measurement?.alg ?? null,
      measurement: measurement?.value ?? null,
      measurementNote: note,
      config: { ...stageLaunchConfig(stage), reference: stage.reference ?? null },
    });
  }

  const functionId = existing?.id ?? newId('fn');
  try {
    await insertVersion(
      db,
      {
        functionId,
        tenantId,
        functionName: manifest.name,
        isNewFunction: !existing,
        version: {
          id: versionId,
          functionId,
          version: manifest.version,
          bundleDigest: input.bundleDigest,
          versionDigest: digest,
          manifest: manifest as unknown as Record<string, unknown>,
        },
        files: [...files.values()].map((f) => ({
          path: f.path,
          mode: f.mode,
          size: f.data.length,
          sha256: f.sha256,
          data: f.data,
        })),
        stages: stageRows,
      },
      () => crashPoint('deploy:before-commit'),
    );
  } catch (error) {
    // A concurrent deploy of the same name or version won the race; report it as the conflict it is.
    if (
      /UNIQUE constraint failed/.test(
        String((error as Error).message) + String((error as { cause?: Error }).cause?.message),
      )
    ) {
      throw conflict(
        'deploy-conflict',
        `${manifest.name}@${manifest.version} was deployed concurrently; retry`,
      );
    }
    throw error;
  }
  return {
    created: true,
    function: manifest.name,
    version: manifest.version,
    versionDigest: digest,
    bundleDigest: input.bundleDigest,
    stages: stageRows.map((s) =>
      summarizeStage({
        ...s,
        measurementAlg: s.measurementAlg ?? null,
        measurement: s.measurement ?? null,
        measurementNote: s.measurementNote ?? null,
      } as StageRow),
    ),
  };
}
