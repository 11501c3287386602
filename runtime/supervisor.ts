import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';

const TINI_CANDIDATES = ['/usr/bin/tini', '/usr/bin/tini-static'];

/**
 * Node cannot make itself a child subreaper, and on these hosts nothing else reaps orphans. So `ebcc
 * serve` runs under `tini -s`: every process the gateway leaves behind (a sandbox monitor whose parent
 * died, say) is re-parented to tini and reaped, and tini exits with the gateway's status.
 *
 * Returns the supervisor's exit code when this process became the supervisor's parent, or null when
 * this process is already supervised (or no tini is installed) and should serve itself.
 */
export async function runUnderSupervisor(): Promise<number | null> {
  if (process.env.EBCC_SUPERVISED === '1') return null;
  const tini = TINI_CANDIDATES.find((p) => existsSync(p));
  if (!tini) {
    process.stderr.write(
      'ebcc: warning: tini is not installed; orphaned sandbox processes will not be reaped\n',
    );
    return null;
  }
  const child = spawn(tini, ['-s', '--', process.execPath, ...process.execArgv, ...process.argv.slice(1)], {
    stdio: 'inherit',
    env: { ...process.env, EBCC_SUPERVISED: '1' },
  });
  // tini forwards these to the gateway alone (no -g): a graceful stop lets in-flight invocations end
  // before the gateway stops its sandboxes itself, which a signal to the whole group would cut short.
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(signal, () => child.kill(signal));
  return new Promise((resolve) =>
    child.once('exit', (code, signal) => resolve(code ?? (signal === 'SIGKILL' ? 137 : 1))),
  );
}
