/**
 * runtime/sandbox: the single place where EBCC spawns untrusted code.
 *
 * See docs/sandbox-notes.md for what it isolates and what it does not.
 */
export type {
  SandboxBind,
  SandboxExit,
  SandboxExitReason,
  SandboxLimits,
  SandboxOptions,
  SandboxProcess,
  SandboxSupport,
} from './types.ts';
export { spawnSandboxed, runSandboxed } from './spawn.ts';
export { sandboxSupport } from './support.ts';
export { interpreterBinds } from './binds.ts';
