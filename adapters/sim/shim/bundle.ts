import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdirSync, renameSync, statSync, writeFileSync } from 'node:fs';
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
  /** An execute-only copy of the Node binary that runs the shim (see `executeOnlyRuntime`). */
  runtime: string;
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
  built = { dir, file, bytes: code.length, sha256, runtime: executeOnlyRuntime() };
  return built;
}

/** Host-wide, because it is only a copy of this host's Node binary and holds nothing of any installation. */
const RUNTIME_CACHE = process.env.EBCC_RUNTIME_CACHE ?? '/var/cache/ebcc/runtime';

/**
 * The stage runs as the same uid as the shim, in the same sandbox, so by default it could open
 * /proc/<shim>/mem and read the shim's signing key, or write forged frames to the shim's fds. The kernel
 * refuses both for a non-dumpable process, and a process that executes a binary it cannot read is made
 * non-dumpable (fs/exec.c, would_dump); the shim therefore runs from an execute-only copy of Node.
 */
export function executeOnlyRuntime(source: string = process.execPath): string {
  const stat = statSync(source);
  const key = createHash('sha256')
    .update(`${source}\0${stat.size}\0${stat.mtimeMs}\0${stat.ino}`)
    .digest('hex')
    .slice(0, 16);
  const dir = join(RUNTIME_CACHE, key);
  const file = join(dir, 'node');
  if (existsSync(file)) return file;
  // Sandboxes bind the file as their own uid, so every directory on the way must be traversable.
  mkdirSync(dir, { recursive: true, mode: 0o711 });
  chmodSync(RUNTIME_CACHE, 0o711);
  chmodSync(dir, 0o711);
  const staging = `${file}.tmp-${process.pid}`;
  copyFileSync(source, staging);
  chmodSync(staging, 0o111);
  renameSync(staging, file);
  return file;
}
