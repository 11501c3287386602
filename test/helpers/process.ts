import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from './env.ts';

export interface ServerProcess {
  /** The `ebcc serve` process: the parent of the tini supervisor, which runs the gateway. */
  child: ChildProcess;
  /** The gateway itself (under tini), the process a crash test kills. */
  gatewayPid: number;
  url: string;
  /** Its EBCC_HOME. */
  home: string;
  output: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/**
 * Runs `ebcc serve` as a real node process (not a tsx wrapper), so that a SIGKILL kills the server
 * itself.
 */
export async function spawnServer(home: string, env: Record<string, string> = {}): Promise<ServerProcess> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', join(repoRoot, 'runtime', 'cli', 'entry.ts'), 'serve', '--port', '0'],
    {
      cwd: repoRoot,
      env: { ...process.env, EBCC_HOME: home, EBCC_LOG_LEVEL: 'warn', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d));
  child.stderr!.on('data', (d: Buffer) => (out += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const [url, gatewayPid] = await new Promise<[string, number]>((resolve, reject) => {
    // Starting takes seconds of module loading (tsx), many more on a loaded 2-core machine.
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${out}`)), 240_000);
    const onData = () => {
      const match = /listening on (\S+) \(pid (\d+)\)/.exec(out);
      if (match) {
        clearTimeout(timer);
        resolve([match[1]!, Number(match[2])]);
      }
    };
    child.stdout!.on('data', onData);
    void exited.then(() => reject(new Error(`server exited early:\n${out}`)));
  });
  return { child, gatewayPid, url, home, output: () => out, exited };
}

/** Runs the `ebcc` CLI as a separate process and collects its output and exit code. */
export function runEbcc(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(repoRoot, 'bin', 'ebcc.js'), ...args], {
      cwd: repoRoot,
      env: { ...process.env, EBCC_LOG_LEVEL: 'warn', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d));
    child.stderr.on('data', (d: Buffer) => (stderr += d));
    child.once('exit', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/** Host processes whose real uid is in [base, base + count): one test file's sandboxes, with their command lines. */
export function processesOfUids(base: number, count: number): { pid: number; cmd: string }[] {
  const found: { pid: number; cmd: string }[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const uid = Number(/^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${name}/status`, 'utf8'))![1]);
      if (uid < base || uid >= base + count) continue;
      found.push({
        pid: Number(name),
        cmd: readFileSync(`/proc/${name}/cmdline`, 'utf8').replaceAll('\0', ' '),
      });
    } catch {
      // Gone while we looked.
    }
  }
  return found;
}
