import fs from 'node:fs';
import path from 'node:path';
import type { SandboxBind } from './types.ts';

/** Mount points the sandbox owns; binds may not target them (or anything under /proc and /dev). */
export const INIT_PATH = '/.ebcc-init';
const RESERVED = ['/proc', '/dev', INIT_PATH];

function isUnder(p: string, dir: string): boolean {
  return dir === '/' ? p.startsWith('/') : p === dir || p.startsWith(dir + '/');
}

/**
 * Read-only binds needed to run `/bin/sh`, `/usr/bin/python3` and node (`process.execPath`)
 * inside the sandbox: /usr plus the merged-/usr top-level links (/bin, /lib, /lib64, /sbin),
 * and node's install prefix if node lives outside /usr (e.g. nvm or /opt).
 * Nothing from /etc is needed by these interpreters.
 */
export function interpreterBinds(): SandboxBind[] {
  const binds: SandboxBind[] = [];
  const add = (p: string): void => {
    if (!binds.some((b) => isUnder(p, b.sandbox)) && fs.existsSync(p)) binds.push({ host: p, sandbox: p });
  };
  add('/usr');
  for (const top of ['/bin', '/lib', '/lib64', '/sbin']) add(top);
  for (const exe of [process.execPath, '/usr/bin/node']) {
    let real: string;
    try {
      real = fs.realpathSync(exe);
    } catch {
      continue;
    }
    const covered = binds.some((b) => {
      try {
        return isUnder(real, fs.realpathSync(b.host));
      } catch {
        return false;
      }
    });
    // <prefix>/bin/node -> bind <prefix> (lib/node_modules, include, ... come along).
    if (!covered) add(path.dirname(path.dirname(real)));
  }
  return binds;
}

export type MountOp =
  | { kind: 'bind'; host: string; sandbox: string; writable: boolean }
  | { kind: 'symlink'; target: string; sandbox: string }
  | { kind: 'proc' | 'dev'; sandbox: string }
  | { kind: 'tmpfs'; sandbox: string; size: number }
  | { kind: 'init'; host: string; sandbox: string };

export function validateSandboxPath(p: string, what: string): string {
  if (!p.startsWith('/')) throw new Error(`${what} must be an absolute path: ${p}`);
  if (p.includes('\0')) throw new Error(`${what} contains NUL`);
  const norm = path.posix.normalize(p);
  const trimmed = norm.length > 1 && norm.endsWith('/') ? norm.slice(0, -1) : norm;
  if (p.split('/').includes('..')) throw new Error(`${what} must not contain "..": ${p}`);
  return trimmed;
}

/**
 * Turn binds into the ordered list of mount operations for bwrap: parents before children,
 * fresh /proc, /dev and a tmpfs /tmp (unless a bind provides /tmp), and merged-/usr links as
 * symlinks rather than duplicate binds.
 */
export function planMounts(
  binds: readonly SandboxBind[],
  tmpBytes: number,
  initHost: string | null,
): MountOp[] {
  const norm = binds.map((b) => {
    if (!b.host.startsWith('/') || b.host.includes('\0'))
      throw new Error(`bind host path must be absolute: ${b.host}`);
    const sandbox = validateSandboxPath(b.sandbox, 'bind sandbox path');
    for (const r of RESERVED)
      if (isUnder(sandbox, r)) throw new Error(`bind target ${sandbox} is reserved by the sandbox`);
    if (!fs.existsSync(b.host)) throw new Error(`bind source does not exist: ${b.host}`);
    return { host: b.host, sandbox, writable: b.writable === true };
  });
  const seen = new Set<string>();
  for (const b of norm) {
    if (seen.has(b.sandbox)) throw new Error(`two binds target ${b.sandbox}`);
    seen.add(b.sandbox);
  }
  const ops: MountOp[] = [];
  for (const b of norm) {
    // /lib -> usr/lib on merged-/usr systems: reproduce the link if its target is bound at the same place.
    if (!b.writable && b.host === b.sandbox && fs.lstatSync(b.host).isSymbolicLink()) {
      const target = fs.readlinkSync(b.host);
      const resolved = fs.realpathSync(b.host);
      const coveredBy = norm.find((o) => o !== b && o.host === o.sandbox && isUnder(resolved, o.sandbox));
      if (coveredBy && !path.isAbsolute(target)) {
        ops.push({ kind: 'symlink', target, sandbox: b.sandbox });
        continue;
      }
    }
    ops.push({ kind: 'bind', ...b });
  }
  ops.push({ kind: 'proc', sandbox: '/proc' }, { kind: 'dev', sandbox: '/dev' });
  if (!seen.has('/tmp')) ops.push({ kind: 'tmpfs', sandbox: '/tmp', size: tmpBytes });
  if (initHost) ops.push({ kind: 'init', host: initHost, sandbox: INIT_PATH });
  const depth = (p: string): number => (p === '/' ? 0 : p.split('/').length - 1);
  // Stable sort: shallower targets first so that deeper mounts are not hidden.
  return ops
    .map((op, i) => ({ op, i }))
    .sort((a, b) => depth(a.op.sandbox) - depth(b.op.sandbox) || a.i - b.i)
    .map((x) => x.op);
}

export function mountArgs(ops: readonly MountOp[]): string[] {
  const out: string[] = [];
  for (const op of ops) {
    switch (op.kind) {
      case 'bind':
        out.push(op.writable ? '--bind' : '--ro-bind', op.host, op.sandbox);
        break;
      case 'symlink':
        out.push('--symlink', op.target, op.sandbox);
        break;
      case 'proc':
        out.push('--proc', op.sandbox);
        break;
      case 'dev':
        out.push('--dev', op.sandbox);
        break;
      case 'tmpfs':
        out.push('--perms', '1777', '--size', String(op.size), '--tmpfs', op.sandbox);
        break;
      case 'init':
        out.push('--ro-bind', op.host, op.sandbox);
        break;
    }
  }
  return out;
}

/**
 * Map a sandbox path to the host path that backs it (through the deepest bind), to check an
 * executable exists before spawning. Returns null when no bind covers it.
 */
export function hostPathFor(ops: readonly MountOp[], sandboxPath: string): string | null {
  let best: { host: string; sandbox: string } | null = null;
  for (const op of ops) {
    if ((op.kind !== 'bind' && op.kind !== 'init') || !isUnder(sandboxPath, op.sandbox)) continue;
    if (!best || op.sandbox.length > best.sandbox.length) best = op;
  }
  if (!best) {
    // Through a merged-/usr symlink such as /bin -> usr/bin.
    for (const op of ops) {
      if (op.kind === 'symlink' && isUnder(sandboxPath, op.sandbox)) {
        const viaLink = path.posix.join(
          path.posix.dirname(op.sandbox),
          op.target,
          sandboxPath.slice(op.sandbox.length),
        );
        return viaLink === sandboxPath ? null : hostPathFor(ops, viaLink);
      }
    }
    return null;
  }
  const rest = sandboxPath.slice(best.sandbox === '/' ? 0 : best.sandbox.length);
  return path.join(best.host, rest);
}
