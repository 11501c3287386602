import { execFile } from 'node:child_process';
import { interpreterBinds } from './binds.ts';
import { cgroupSupport } from './cgroup.ts';
import { runSandboxed } from './spawn.ts';
import { hostTools } from './tools.ts';
import type { SandboxSupport } from './types.ts';

let cached: Promise<SandboxSupport> | undefined;

function bwrapVersion(path: string): Promise<string | null> {
  return new Promise((resolve) => {
    execFile(path, ['--version'], { timeout: 5000 }, (err, stdout) => resolve(err ? null : stdout.trim()));
  });
}

/**
 * What isolation this host actually provides. Runs one trivial sandbox to prove that
 * unprivileged user namespaces, bwrap and the seccomp filter work together. Cached.
 */
export function sandboxSupport(): Promise<SandboxSupport> {
  cached ??= (async (): Promise<SandboxSupport> => {
    const tools = hostTools();
    const cg = cgroupSupport();
    const notes: string[] = [];
    const version = tools.bwrap ? await bwrapVersion(tools.bwrap) : null;
    if (!version) notes.push('bwrap not found or not runnable (install Debian package "bubblewrap")');
    else notes.push(version);
    if (!tools.setpriv) notes.push('setpriv not found (Debian package "util-linux")');
    if (!tools.bash) notes.push('bash not found');
    if (!tools.init)
      notes.push('no tini-static (Debian package "tini"): the workload runs as pid 1 of its namespace');
    let userns = false;
    let seccomp = false;
    if (version && tools.setpriv && tools.bash) {
      const r = await runSandboxed({
        argv: ['/bin/sh', '-c', 'grep -E "^(Seccomp|NoNewPrivs):" /proc/self/status'],
        binds: interpreterBinds(),
        limits: { memoryBytes: 64 << 20, cpuMs: 2000, wallMs: 5000, maxProcs: 8, maxOutputBytes: 4096 },
        label: 'probe',
      });
      userns = r.exit.reason === 'exit' && r.exit.code === 0;
      seccomp = /Seccomp:\s*2/.test(r.stdout.toString());
      if (!userns)
        notes.push(`probe sandbox failed: ${r.exit.reason} ${r.exit.detail ?? r.stderr.toString().trim()}`);
    }
    notes.push(
      `cgroup memory=${cg.memory} pids=${cg.pids} cpuacct=${cg.cpuacct}` +
        (cg.detail ? ` (${cg.detail})` : ''),
    );
    return {
      bwrap: version !== null,
      userns,
      cgroupMemory: cg.memory,
      cgroupPids: cg.pids,
      cgroupCpu: cg.cpuacct,
      init: tools.init,
      seccomp,
      detail: notes.join('; '),
    };
  })();
  return cached;
}
