/**
 * spawnSandboxed(): run untrusted code under bubblewrap, as its own host uid, with seccomp,
 * rlimits and (where writable) cgroup v1 limits.
 *
 * Process chain (each arrow is an exec unless noted):
 *
 *   node --spawn--> bash (root, empty env): closes stray fds, joins the sandbox cgroups, sets rlimits
 *        --> setpriv --reuid=N --regid=N --clear-groups --pdeathsig SIGKILL
 *        --> bwrap (uid N, "monitor"; reads its options from a pipe: `--args FD`)
 *            --clone(new user/pid/mnt/net/ipc/uts/cgroup ns)--> pid 1 = tini-static (--as-pid-1)
 *                --fork--> workload (argv)
 *
 * Why this shape:
 * - The monitor waits for its direct child (pid 1), so nothing is left for the host's pid 1
 *   to reap (in this container nothing reaps orphans; bwrap's own pid-1 helper is left as a
 *   zombie when the monitor exits first).
 * - When pid 1 of the sandbox exits, the kernel kills every other process in the pid
 *   namespace: orphans (`sh -c 'sleep 100 &'`) cannot outlive the workload.
 * - Killing the sandbox = SIGKILL to its pid 1 (plus everything in its cgroups); the monitor
 *   then reports and exits and Node reaps it.
 * - Options (including env values) travel through a pipe, not argv, so they are not visible
 *   in /proc/<pid>/cmdline; the root-run bash never sees the caller's env (BASH_ENV etc.).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import { PassThrough, Writable, type Duplex, type Readable } from 'node:stream';
import { hostPathFor, mountArgs, planMounts, validateSandboxPath, INIT_PATH } from './binds.ts';
import { cgroupSupport, createSandboxCgroup, type SandboxCgroup } from './cgroup.ts';
import { compileSeccompFilter } from './seccomp.ts';
import { hostTools } from './tools.ts';
import type { SandboxExit, SandboxExitReason, SandboxOptions, SandboxProcess } from './types.ts';
import { allocateUid, processesOfUid, readStatus, releaseUid } from './uid.ts';

const DEFAULT_TMP_BYTES = 16 * 1024 * 1024;
const STDERR_HEAD_BYTES = 2048;
const CPU_POLL_MS = 50;
const KILL_ESCALATE_MS = 2000;
const STREAM_DRAIN_MS = 2000;

/**
 * Runs as root with an empty environment. Positional parameters:
 *   uid gid keep-fds nproc cpu-soft cpu-hard as-kib n-cgroups [cgroup.procs...] setpriv bwrap-args...
 */
const WRAPPER = [
  'uid=$1 gid=$2 keep=" $3 " nproc=$4 cpus=$5 cpuh=$6 as=$7 ncg=$8',
  'shift 8',
  'for f in /proc/$$/fd/*; do',
  '  n=${f##*/}',
  '  case "$keep" in *" $n "*) continue ;; esac',
  '  if [[ -e /proc/$$/fd/$n ]]; then exec {n}>&-; fi',
  'done',
  'while (( ncg > 0 )); do',
  '  echo $$ > "$1" || { echo "ebcc-sandbox: cannot join cgroup $1" >&2; exit 125; }',
  '  shift; ncg=$((ncg - 1))',
  'done',
  'ulimit -c 0 && ulimit -t "$cpuh" && ulimit -S -t "$cpus" && ulimit -u "$nproc" ||',
  '  { echo "ebcc-sandbox: setrlimit failed" >&2; exit 125; }',
  'if [[ $as != unlimited ]]; then ulimit -v "$as" || { echo "ebcc-sandbox: RLIMIT_AS failed" >&2; exit 125; }; fi',
  'setpriv=$1; shift',
  'exec "$setpriv" --reuid="$uid" --regid="$gid" --clear-groups --pdeathsig SIGKILL -- "$@"',
].join('\n');

interface Live {
  kill(): void;
}
const live = new Set<Live>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Synchronous last resort when the runtime exits with sandboxes still running
  // (bwrap's --die-with-parent covers a crash of the runtime).
  process.once('exit', () => {
    for (const l of live) l.kill();
  });
}

let seccompFilter: Buffer | undefined;

function signalName(n: number): string | null {
  for (const [name, num] of Object.entries(os.constants.signals)) if (num === n) return name;
  return null;
}

function checkLimits(opts: SandboxOptions): void {
  const l = opts.limits;
  const pos = (v: number, name: string): void => {
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new Error(`limits.${name} must be > 0`);
  };
  pos(l.memoryBytes, 'memoryBytes');
  pos(l.cpuMs, 'cpuMs');
  pos(l.wallMs, 'wallMs');
  pos(l.maxOutputBytes, 'maxOutputBytes');
  if (!Number.isInteger(l.maxProcs) || l.maxProcs < 1)
    throw new Error('limits.maxProcs must be an integer >= 1');
  if (l.addressSpaceBytes !== undefined && (!Number.isFinite(l.addressSpaceBytes) || l.addressSpaceBytes < 0))
    throw new Error('limits.addressSpaceBytes must be >= 0');
  if (l.tmpBytes !== undefined) pos(l.tmpBytes, 'tmpBytes');
}

/** Options validated and turned into everything the launch needs. Throws on bad input. */
function prepare(opts: SandboxOptions): { bwrapOptions: string[]; command: string[] } {
  const tools = hostTools();
  if (!tools.bwrap) throw new Error('bubblewrap (bwrap) is not installed');
  if (!tools.setpriv) throw new Error('setpriv (util-linux) is not installed');
  if (!tools.bash) throw new Error('bash is not installed');
  if (process.getuid?.() !== 0)
    throw new Error('the sandbox launcher must run as root (it switches to per-sandbox uids)');
  if (!Array.isArray(opts.argv) || opts.argv.length === 0) throw new Error('argv must not be empty');
  for (const a of opts.argv)
    if (typeof a !== 'string' || a.includes('\0'))
      throw new Error('argv entries must be strings without NUL');
  const exe = validateSandboxPath(opts.argv[0]!, 'argv[0]');
  checkLimits(opts);
  const extra = opts.extraFds ?? 0;
  if (!Number.isInteger(extra) || extra < 0 || extra > 16)
    throw new Error('extraFds must be an integer in 0..16');

  const ops = planMounts(opts.binds, opts.limits.tmpBytes ?? DEFAULT_TMP_BYTES, tools.init);
  const hostExe = hostPathFor(ops, exe);
  if (!hostExe) throw new Error(`${exe} is not inside any bind`);
  let st: fs.Stats;
  try {
    st = fs.statSync(hostExe);
  } catch {
    throw new Error(`${exe} does not exist (host path ${hostExe})`);
  }
  if (!st.isFile() || (st.mode & 0o111) === 0) throw new Error(`${exe} is not an executable file`);

  const b: string[] = [
    '--unshare-all',
    '--unshare-user',
    '--disable-userns',
    '--die-with-parent',
    '--new-session',
    '--as-pid-1',
    '--cap-drop',
    'ALL',
    '--hostname',
    'sandbox',
    '--clearenv',
  ];
  for (const [k, v] of Object.entries(opts.env ?? {})) {
    if (!k || /[=\0]/.test(k) || typeof v !== 'string' || v.includes('\0'))
      throw new Error(`invalid env entry ${k}`);
    b.push('--setenv', k, v);
  }
  b.push(...mountArgs(ops), '--remount-ro', '/dev');
  if (!ops.some((o) => o.sandbox === '/')) b.push('--remount-ro', '/');
  b.push('--chdir', validateSandboxPath(opts.cwd ?? '/', 'cwd'));
  const command = tools.init ? [INIT_PATH, '--', ...opts.argv] : [...opts.argv];
  return { bwrapOptions: b, command };
}

/** A SandboxProcess that never started. */
function failedProcess(detail: string): SandboxProcess {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  stdout.end();
  stderr.end();
  const exit: SandboxExit = {
    code: null,
    signal: null,
    reason: 'spawn-failed',
    detail,
    usage: { wallMs: 0 },
  };
  return {
    pid: undefined,
    uid: -1,
    stdin: new Writable({ write: (_c, _e, cb) => cb() }),
    stdout,
    stderr,
    extraFds: [],
    cgroups: [],
    sandboxPid: Promise.resolve(null),
    kill: () => {},
    oomKills: () => 0,
    exited: Promise.resolve(exit),
  };
}

export function spawnSandboxed(opts: SandboxOptions): SandboxProcess {
  let prepared: ReturnType<typeof prepare>;
  try {
    prepared = prepare(opts);
    seccompFilter ??= compileSeccompFilter();
  } catch (e) {
    return failedProcess((e as Error).message);
  }
  const tools = hostTools();
  const { limits } = opts;
  const started = Date.now();
  const label = opts.label ?? 'sandbox';
  let uid: number;
  try {
    uid = allocateUid();
  } catch (e) {
    return failedProcess((e as Error).message);
  }
  const overhead = tools.init ? 2 : 1; // bwrap monitor (+ init), both running as the sandbox uid
  const maxTasks = limits.maxProcs + overhead;
  const cgroup: SandboxCgroup = createSandboxCgroup(
    label,
    { memoryBytes: Math.floor(limits.memoryBytes), maxTasks },
    opts.cgroups !== false,
  );
  const cpuSoft = Math.max(1, Math.ceil(limits.cpuMs / 1000));
  const asBytes =
    limits.addressSpaceBytes !== undefined
      ? limits.addressSpaceBytes
      : cgroup.has('memory')
        ? 0
        : limits.memoryBytes;
  const asKiB = asBytes > 0 ? String(Math.ceil(asBytes / 1024)) : 'unlimited';

  const nExtra = opts.extraFds ?? 0;
  const argsFd = 3 + nExtra;
  const seccompFd = 4 + nExtra;
  const statusFd = 5 + nExtra;
  const bwrapOptions = [
    ...prepared.bwrapOptions,
    '--seccomp',
    String(seccompFd),
    '--json-status-fd',
    String(statusFd),
  ];
  const keep = [
    0,
    1,
    2,
    ...Array.from({ length: nExtra }, (_, i) => 3 + i),
    argsFd,
    seccompFd,
    statusFd,
  ].join(' ');
  const procsFiles = cgroup.procsFiles();

  let child: ChildProcess;
  try {
    child = spawn(
      tools.bash!,
      [
        // --norc: bash reads ~/.bashrc when stdin is a socket ("rshd" heuristic), even for -c.
        '--norc',
        '--noprofile',
        '-c',
        WRAPPER,
        'ebcc-sandbox',
        String(uid),
        String(uid),
        keep,
        String(maxTasks),
        String(cpuSoft),
        String(cpuSoft + 1),
        asKiB,
        String(procsFiles.length),
        ...procsFiles,
        tools.setpriv!,
        tools.bwrap!,
        '--args',
        String(argsFd),
        '--',
        ...prepared.command,
      ],
      { env: {}, cwd: '/', stdio: Array.from({ length: 6 + nExtra }, () => 'pipe' as const) },
    );
  } catch (e) {
    void cgroup.remove();
    releaseUid(uid);
    return failedProcess(`spawn failed: ${(e as Error).message}`);
  }

  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const extraFds = Array.from({ length: nExtra }, (_, i) => child.stdio[3 + i] as Duplex);
  for (const s of extraFds) s.on('error', () => {});
  const stdin = child.stdin!;
  stdin.on('error', () => {}); // EPIPE when the workload does not read its input

  // Feed bwrap its options and the seccomp program, then close our ends.
  const argsSock = child.stdio[argsFd] as Duplex;
  const seccompSock = child.stdio[seccompFd] as Duplex;
  const statusSock = child.stdio[statusFd] as Duplex;
  for (const s of [argsSock, seccompSock, statusSock]) s.on('error', () => {});
  argsSock.end(Buffer.from(bwrapOptions.map((a) => a + '\0').join(''), 'utf8'));
  seccompSock.end(seccompFilter);

  let initPid: number | null = null;
  let exitRaw: number | null = null; // workload status as reported by bwrap (only after a successful exec)
  let killReason: SandboxExitReason | null = null;
  let hardKill = false;
  // Held in an object: assigned from callbacks, which TypeScript's narrowing does not track.
  const state: {
    outerExit: { code: number | null; signal: NodeJS.Signals | null } | null;
    spawnError: Error | null;
  } = { outerExit: null, spawnError: null };
  let stderrHead = Buffer.alloc(0);
  let resolvePid!: (p: number | null) => void;
  const sandboxPid = new Promise<number | null>((r) => (resolvePid = r));
  let settle!: (e: SandboxExit) => void;
  const exited = new Promise<SandboxExit>((r) => (settle = r));
  const timers: NodeJS.Timeout[] = [];

  const killInit = (signal: NodeJS.Signals): void => {
    if (initPid === null || state.outerExit) return;
    // Guard against pid reuse: pid 1 of the sandbox is a child of the monitor until reaped.
    if (readStatus(initPid)?.ppid !== child.pid) return;
    try {
      process.kill(initPid, signal);
    } catch {
      /* gone */
    }
  };

  const killTree = (reason: SandboxExitReason | null, signal: NodeJS.Signals = 'SIGKILL'): void => {
    if (reason && !killReason) killReason = reason;
    if (state.outerExit || state.spawnError) return;
    if (signal !== 'SIGKILL') {
      killInit(signal);
      return;
    }
    if (hardKill) return;
    hardKill = true;
    killInit('SIGKILL');
    cgroup.killAll(child.pid !== undefined ? [child.pid] : []);
    if (initPid === null) {
      // Not started yet: give bwrap a moment to create pid 1 (killed when the status arrives),
      // otherwise kill the launcher itself.
      timers.push(setTimeout(() => initPid === null && !state.outerExit && child.kill('SIGKILL'), 500));
    }
    // Escalate: the monitor should exit right after its pid 1 died.
    timers.push(setTimeout(() => !state.outerExit && child.kill('SIGKILL'), KILL_ESCALATE_MS));
  };

  const liveEntry: Live = {
    kill: () => {
      if (initPid !== null) killInit('SIGKILL');
      else child.kill('SIGKILL');
    },
  };
  live.add(liveEntry);
  installExitHook();

  // bwrap status: `{ "child-pid": N, ... }` once pid 1 exists, `{ "exit-code": N }` after it exited
  // (only if the exec succeeded).
  let statusText = '';
  statusSock.setEncoding('utf8');
  statusSock.on('data', (chunk: string) => {
    statusText += chunk;
    let nl: number;
    while ((nl = statusText.indexOf('\n')) >= 0) {
      const line = statusText.slice(0, nl);
      statusText = statusText.slice(nl + 1);
      let doc: Record<string, unknown>;
      try {
        doc = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue;
      }
      if (typeof doc['child-pid'] === 'number' && initPid === null) {
        initPid = doc['child-pid'];
        resolvePid(initPid);
        if (hardKill) killInit('SIGKILL');
      }
      if (typeof doc['exit-code'] === 'number') exitRaw = doc['exit-code'];
    }
  });

  // Bounded output. We read eagerly (no backpressure to the sandbox) and keep at most
  // maxOutputBytes per stream in memory; more than that kills the sandbox.
  const pump = (src: Readable, dst: PassThrough, isStderr: boolean): Promise<void> => {
    let total = 0;
    src.on('data', (chunk: Buffer) => {
      if (isStderr && stderrHead.length < STDERR_HEAD_BYTES)
        stderrHead = Buffer.concat([stderrHead, chunk.subarray(0, STDERR_HEAD_BYTES - stderrHead.length)]);
      const room = limits.maxOutputBytes - total;
      total += chunk.length;
      if (room > 0) dst.write(chunk.length <= room ? chunk : chunk.subarray(0, room));
      if (total > limits.maxOutputBytes) killTree('output');
    });
    return new Promise((resolve) => {
      src.once('close', () => {
        dst.end();
        resolve();
      });
    });
  };
  const streamsDone = Promise.all([
    pump(child.stdout!, stdout, false),
    pump(child.stderr!, stderr, true),
    new Promise<void>((r) => statusSock.once('close', () => r())),
  ]);

  timers.push(setTimeout(() => killTree('timeout'), limits.wallMs));
  if (cgroup.has('cpuacct')) {
    const poll = setInterval(() => {
      const used = cgroup.cpuUsageMs();
      if (used >= limits.cpuMs) killTree('cpu');
    }, CPU_POLL_MS);
    timers.push(poll);
  }

  const outerDone = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      state.outerExit = { code, signal };
      resolve();
    });
    child.once('error', (err) => {
      state.spawnError = err;
      resolve();
    });
  });

  void (async () => {
    await outerDone;
    if (!initPid) resolvePid(null);
    // All sandbox processes are gone once pid 1 is; the pipes close right after.
    const drained = await Promise.race([
      streamsDone.then(() => true),
      new Promise<boolean>((r) => setTimeout(() => r(false), STREAM_DRAIN_MS)),
    ]);
    if (!drained) {
      for (const s of [child.stdout, child.stderr, statusSock]) s?.destroy();
    }
    for (const t of timers) clearTimeout(t);
    live.delete(liveEntry);

    const oomKills = cgroup.oomKills();
    const cpuUsed = cgroup.cpuUsageMs();
    const memPeak = cgroup.memoryPeakBytes();
    const removed = await cgroup.remove();
    // Release the uid only when no process of it is left (a zombie would still count for RLIMIT_NPROC).
    const leftovers = processesOfUid(uid);
    if (leftovers.length === 0) releaseUid(uid);

    let code: number | null = null;
    let signal: string | null = null;
    const raw = exitRaw ?? state.outerExit?.code ?? null;
    if (raw !== null && raw > 128 && raw < 128 + 65 && signalName(raw - 128)) signal = signalName(raw - 128);
    else code = raw;
    if (raw === null && state.outerExit?.signal) signal = state.outerExit.signal;

    let reason: SandboxExitReason;
    const details: string[] = [];
    if (state.spawnError) {
      reason = 'spawn-failed';
      details.push(state.spawnError.message);
    } else if (killReason) {
      reason = killReason;
    } else if (exitRaw === null) {
      // bwrap reports an exit code only if it got as far as exec'ing the command.
      reason = 'spawn-failed';
      details.push(
        stderrHead.toString('utf8').trim() ||
          `launcher exited with ${state.outerExit?.code ?? state.outerExit?.signal}`,
      );
    } else if (oomKills > 0 && raw !== 0) {
      reason = 'memory';
    } else if (
      raw === 128 + os.constants.signals.SIGXCPU ||
      (raw !== null && raw > 128 && cpuUsed >= limits.cpuMs)
    ) {
      reason = 'cpu';
    } else {
      reason = 'exit';
    }
    if (oomKills > 0) details.push(`${oomKills} OOM kill(s) in the sandbox`);
    if (!removed) details.push('cgroup could not be removed');
    if (leftovers.length > 0) details.push(`${leftovers.length} process(es) of uid ${uid} left behind`);
    const usage: NonNullable<SandboxExit['usage']> = { wallMs: Date.now() - started };
    if (cpuUsed >= 0) usage.cpuMs = Math.round(cpuUsed);
    if (memPeak >= 0) usage.memoryPeakBytes = memPeak;
    const exit: SandboxExit = { code, signal, reason, usage };
    if (details.length) exit.detail = details.join('; ');
    settle(exit);
  })();

  return {
    pid: child.pid,
    uid,
    stdin,
    stdout,
    stderr,
    extraFds,
    cgroups: cgroup.paths,
    sandboxPid,
    kill: (signal: NodeJS.Signals = 'SIGKILL') => killTree('killed', signal),
    oomKills: () => cgroup.oomKills(),
    exited,
  };
}

/** Oneshot: feed `input` to stdin, collect bounded stdout/stderr, wait for the exit. */
export async function runSandboxed(
  opts: SandboxOptions & { input?: Uint8Array | string; signal?: AbortSignal },
): Promise<{ stdout: Buffer; stderr: Buffer; exit: SandboxExit }> {
  const p = spawnSandboxed(opts);
  const onAbort = (): void => p.kill();
  if (opts.signal?.aborted) p.kill();
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  void p.exited.then(() => opts.signal?.removeEventListener('abort', onAbort));
  const collect = (r: Readable): Promise<Buffer> =>
    new Promise((resolve) => {
      const chunks: Buffer[] = [];
      r.on('data', (c: Buffer) => chunks.push(c));
      r.once('end', () => resolve(Buffer.concat(chunks)));
      r.once('error', () => resolve(Buffer.concat(chunks)));
    });
  const out = collect(p.stdout);
  const err = collect(p.stderr);
  p.stdin.end(opts.input ?? Buffer.alloc(0));
  const [stdout, stderr, exit] = await Promise.all([out, err, p.exited]);
  return { stdout, stderr, exit };
}

export { cgroupSupport };
