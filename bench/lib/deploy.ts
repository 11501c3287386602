/** Deploys a benchmark function to a gateway by bundle upload, as `ebcc deploy` does. */
import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { packFiles } from '../../runtime/bundle/archive.ts';

async function filesOf(dir: string, root = dir): Promise<Record<string, Buffer>> {
  const files: Record<string, Buffer> = {};
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) Object.assign(files, await filesOf(path, root));
    else if (entry.isFile()) files[relative(root, path)] = await readFile(path);
  }
  return files;
}

/** Packs `dir` with its manifest edited by `edit`, uploads it, and returns the deployed version. */
export async function deployFunction(
  gatewayUrl: string,
  adminToken: string,
  dir: string,
  bundleFile: string,
  edit: (manifest: Record<string, any>) => void = () => undefined,
): Promise<{ name: string; version: string }> {
  const files = await filesOf(dir);
  const manifest = JSON.parse(files['composite.json']!.toString('utf8'));
  edit(manifest);
  files['composite.json'] = Buffer.from(JSON.stringify(manifest, null, 2));
  await packFiles(files, bundleFile);
  const response = await fetch(`${gatewayUrl}/v1/functions`, {
    method: 'POST',
    headers: { 'content-type': 'application/gzip', authorization: `Bearer ${adminToken}` },
    body: await readFile(bundleFile),
  });
  const text = await response.text();
  if (response.status !== 201 && response.status !== 200)
    throw new Error(`deploying ${manifest.name}@${manifest.version} failed: ${response.status} ${text}`);
  return { name: manifest.name, version: manifest.version };
}
