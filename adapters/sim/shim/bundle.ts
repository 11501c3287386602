import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildSync } from 'esbuild';

const ENTRY = fileURLToPath(new URL('./main.ts', import.meta.url));

export interface ShimBundle {
  /** Directory holding `sim-shim.mjs`, to bind read-only into each enclave. */
  dir: string;
  file: string;
  bytes: number;
  sha256: string;
}

let built: ShimBundle | undefined;

/**
 * Bundles the shim and everything it imports into one self-contained file: that file is all EBCC adds
 * inside a sim enclave, so its size is our TCB figure for sim (the Node runtime that runs it aside).
 */
export function shimBundle(cacheDir: string): ShimBundle {
  if (built && existsSync(built.file)) return built;
  const result = buildSync({
    entryPoints: [ENTRY],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    write: false,
    legalComments: 'none',
    // cbor-x's optional native accelerator is not in the enclave; cbor-x falls back to pure JS.
    external: ['cbor-extract'],
    logLevel: 'silent',
  });
  const code = result.outputFiles[0]!.contents;
  const sha256 = createHash('sha256').update(code).digest('hex');
  const dir = join(cacheDir, 'shim', sha256.slice(0, 16));
  const file = join(dir, 'sim-shim.mjs');
  if (!existsSync(file)) {
    mkdirSync(dir, { recursive: true });
    chmodSync(dir, 0o755);
    const staging = `${file}.tmp-${process.pid}`;
    writeFileSync(staging, code, { mode: 0o444 });
    renameSync(staging, file);
  }
  built = { dir, file, bytes: code.length, sha256 };
  return built;
}
