import { join } from 'node:path';
import { interpreterBinds, type SandboxBind, type SandboxOptions } from '../../runtime/sandbox/index.ts';
import type { EnclaveHandle, StageImage } from '../types.ts';

const MiB = 1024 * 1024;
/** Where the stage image appears inside the sim enclave. */
export const STAGE_ROOT = '/stage';
/** A persistent enclave's process lives long; its CPU budget is this many times the per-request one. */
export const PERSISTENT_CPU_FACTOR = 1000;
/** The shim (a Node process) shares the enclave with the stage; it gets this much memory and CPU on top. */
const SHIM_MEMORY_BYTES = 48 * MiB;
const SHIM_CPU_MS = 1500;
/** Per-request time limits are the host's (it kills the enclave); the sandbox only bounds its life. */
const ENCLAVE_WALL_MS = 7 * 24 * 3600 * 1000;

function command(image: StageImage, memoryMb: number): string[] {
  const entry = `${STAGE_ROOT}/${image.image.entry}`;
  const { args } = image.image;
  switch (image.image.kind) {
    case 'executable':
      return [entry, ...args];
    case 'script':
      if (image.image.interpreter === 'node')
        return [process.execPath, `--max-old-space-size=${memoryMb}`, entry, ...args];
      if (image.image.interpreter === 'python3') return ['/usr/bin/python3', '-I', '-B', entry, ...args];
      return ['/bin/sh', entry, ...args];
    case 'wasm':
      return [process.execPath, '--no-warnings', `${STAGE_ROOT}/.ebcc-wasi-runner.mjs`, entry, ...args];
  }
}

/**
 * The sandbox of one sim enclave: only the stage's own files (read-only) plus what its interpreter
 * needs, no network, an unprivileged uid, seccomp, and the stage's limits. `argv` is the stage's own
 * command; the enclave runs it under the shim.
 */
export function enclaveSandbox(
  image: StageImage,
  handle: EnclaveHandle,
  persistent: boolean,
): SandboxOptions {
  const files = [...new Set([image.image.entry, ...image.image.files])];
  const binds: SandboxBind[] = [
    ...interpreterBinds(),
    ...files.map((file) => ({ host: join(image.rootDir, file), sandbox: `${STAGE_ROOT}/${file}` })),
  ];
  if (image.image.kind === 'wasm') {
    binds.push({
      host: new URL('./wasi-runner.mjs', import.meta.url).pathname,
      sandbox: `${STAGE_ROOT}/.ebcc-wasi-runner.mjs`,
    });
  }
  const { limits } = image;
  return {
    label: `stage-${handle.eid}`,
    argv: command(image, limits.memoryMb),
    binds,
    cwd: STAGE_ROOT,
    env: {
      EBCC_STAGE_MODE: persistent ? 'persistent' : 'oneshot',
      EBCC_STAGE_NAME: image.name,
      EBCC_EID: String(handle.eid),
      PATH: '/usr/bin:/bin',
    },
    limits: {
      memoryBytes: limits.memoryMb * MiB + SHIM_MEMORY_BYTES,
      cpuMs: (persistent ? limits.cpuMs * PERSISTENT_CPU_FACTOR : limits.cpuMs) + SHIM_CPU_MS,
      wallMs: ENCLAVE_WALL_MS,
      maxProcs: 64,
      // The shim frames every answer and enforces the response limit on each; the stream is not capped.
      maxOutputBytes: Number.MAX_SAFE_INTEGER,
    },
  };
}
