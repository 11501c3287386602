import { createHash } from 'node:crypto';
import type { Manifest, StageManifest } from '../manifest/index.ts';
import { canonicalJson } from '../util/canonical-json.ts';

export { canonicalJson };

export const sha256Hex = (data: Uint8Array | string) => createHash('sha256').update(data).digest('hex');
export const sha256Digest = (data: Uint8Array | string) => `sha256:${sha256Hex(data)}`;

export interface DigestedFile {
  path: string;
  mode: number;
  sha256: string;
}

/** What identifies a stage's bytes: everything that shapes its launch, but not its name or pinned values. */
export function stageLaunchConfig(stage: StageManifest) {
  return {
    backend: stage.backend,
    image: stage.image,
    mode: stage.mode,
    limits: stage.limits,
    requestSchema: stage.requestSchema ?? null,
  };
}

export function stageImageFiles(stage: StageManifest): string[] {
  return [...new Set([stage.image.entry, ...stage.image.files])].sort();
}

export function stageImageDigest(stage: StageManifest, files: ReadonlyMap<string, DigestedFile>): string {
  const imageFiles = stageImageFiles(stage).map((path) => {
    const file = files.get(path);
    if (!file) throw new Error(`stage ${stage.name} names missing file ${path}`);
    return { path, mode: file.mode, sha256: file.sha256 };
  });
  return sha256Digest(canonicalJson({ config: stageLaunchConfig(stage), files: imageFiles }));
}

/** The identity of a whole function version: its manifest and every file in the bundle. */
export function versionDigest(manifest: Manifest, files: ReadonlyMap<string, DigestedFile>): string {
  const all = [...files.values()]
    .map(({ path, mode, sha256 }) => ({ path, mode, sha256 }))
    .sort((a, b) => (a.path < b.path ? -1 : 1));
  return sha256Digest(canonicalJson({ manifest, files: all }));
}
