import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { repoRoot, tempDir } from './env.ts';

/**
 * The emulated OP-TEE board of scripts/optee/boot.sh (QEMU, TF-A, OP-TEE 4.5, Linux, the EBCC agent), booted
 * for a test file. The first boot on a machine downloads and builds into the cache; later ones reuse it.
 */
export interface Board {
  dir: string;
  /** The agent's Unix socket (EBCC_OPTEE_AGENT). */
  agentSocket: string;
  /** Directory of the built agent and TAs (`<uuid>.ta`). */
  buildDir: string;
  /** Runs a shell command line on the board's console. */
  console(line: string): Promise<void>;
  consoleLog(): string;
  shutdown(): Promise<void>;
}

function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.on('close', (code) =>
      code === 0
        ? resolve(out)
        : reject(new Error(`${cmd} ${args.join(' ')} failed (${code}): ${err.slice(-2000)}`)),
    );
  });
}

export async function bootBoard(timeoutMs: number): Promise<Board> {
  const buildDir = (await run('bash', [join(repoRoot, 'scripts/optee/build.sh')])).trim().split('\n').pop()!;
  const dir = await tempDir('ebcc-board-');
  const proc: ChildProcess = spawn('bash', [join(repoRoot, 'scripts/optee/boot.sh'), dir], {
    stdio: ['ignore', 'ignore', 'pipe'],
    detached: true,
  });
  let stderr = '';
  proc.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const log = () =>
    existsSync(join(dir, 'console.log')) ? readFileSync(join(dir, 'console.log'), 'utf8') : '';
  const deadline = Date.now() + timeoutMs;
  let dead = false;
  void exited.then(() => (dead = true));
  while (!log().includes('ebcc-optee-agent: ready')) {
    if (dead) throw new Error(`the board did not boot: ${stderr.slice(-2000)}\n${log().slice(-2000)}`);
    if (Date.now() > deadline) {
      process.kill(-proc.pid!, 'SIGKILL');
      throw new Error(`the board did not boot within ${timeoutMs} ms:\n${log().slice(-2000)}`);
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  const board: Board = {
    dir,
    buildDir,
    agentSocket: join(dir, 'agent.sock'),
    consoleLog: log,
    console: (line) =>
      new Promise((resolve, reject) => {
        const s = connect(join(dir, 'console.sock'));
        s.once('error', reject);
        s.once('connect', () => s.end(`${line}\n`, () => setTimeout(resolve, 1500)));
      }),
    async shutdown() {
      if (dead) return;
      await board.console('poweroff -f').catch(() => undefined);
      const timer = setTimeout(() => {
        try {
          process.kill(-proc.pid!, 'SIGKILL');
        } catch {
          // already gone
        }
      }, 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
  return board;
}
