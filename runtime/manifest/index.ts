import { z } from 'zod';
import { manifestSchema, type Manifest } from './schema.ts';

export * from './schema.ts';

export class ManifestError extends Error {
  constructor(
    message: string,
    readonly issues: { path: string; message: string }[],
  ) {
    super(message);
    this.name = 'ManifestError';
  }
}

export function formatPath(path: readonly PropertyKey[]): string {
  return path.reduce<string>(
    (out, key) => (typeof key === 'number' ? `${out}[${key}]` : out ? `${out}.${String(key)}` : String(key)),
    '',
  );
}

/** Validates a manifest, naming every offending field. */
export function parseManifest(input: unknown): Manifest {
  const result = manifestSchema.safeParse(input);
  if (result.success) return result.data;
  const issues = result.error.issues.map((issue) => ({
    path: formatPath(issue.path) || '(root)',
    message:
      issue.code === 'unrecognized_keys' ? `unknown field(s): ${issue.keys.join(', ')}` : issue.message,
  }));
  throw new ManifestError(
    `invalid composite.json: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`,
    issues,
  );
}

export function parseManifestText(text: string): Manifest {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new ManifestError(`composite.json is not valid JSON: ${(error as Error).message}`, [
      { path: '(root)', message: 'not valid JSON' },
    ]);
  }
  return parseManifest(json);
}

/** Every bundle file a manifest names, with where it is named. */
export function referencedFiles(manifest: Manifest): { path: string; field: string }[] {
  const out = [{ path: manifest.anchor.entry, field: 'anchor.entry' }];
  manifest.stages.forEach((stage, i) => {
    out.push({ path: stage.image.entry, field: `stages[${i}].image.entry` });
    stage.image.files.forEach((file, j) => out.push({ path: file, field: `stages[${i}].image.files[${j}]` }));
  });
  return out;
}

export function manifestJsonSchema(): Record<string, unknown> {
  return z.toJSONSchema(manifestSchema, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
}
