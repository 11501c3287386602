import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  interpreterBinds,
  runSandboxed,
  sandboxSupport,
  spawnSandboxed,
  type SandboxOptions,
  type SandboxProcess,
  type SandboxSupport,
} from '../runtime/sandbox/index.ts';
import {
  AUDIT_ARCH,
  evaluateSeccomp,
  SECCOMP_RET_ALLOW,
  SECCOMP_RET_KILL_PROCESS,
  SYS,
} from '../runtime/sandbox/seccomp.ts';
import { processesOfUid, readStatus } from '../runtime/sandbox/uid.ts';

// These tests run real sandboxes: they need bubblewrap, util-linux (setpriv), tini and python3,
// and root (to switch to the per-sandbox uids and write cgroups). They fail rather than skip
// when the host cannot sandbox, because the rest of EBCC depends on this isolation.

const BINDS = interpreterBinds();
const LIMITS = { memoryBytes: 256 << 20, cpuMs: 5000, wallMs: 10_000, maxProcs: 32, maxOutputBytes: 1 << 20 };
const PY = '/usr/bin/python3';

type Opts = Omit<SandboxOptions, 'binds' | 'limits'> & {
  binds?: SandboxOptions['binds'];
  limits?: Partial<SandboxOptions['limits']>;
  input?: string | Uint8Array;
};

function opts(o: Opts): SandboxOptions & { input?: string | Uint8Array } {
  return { ...o, binds: o.binds ?? BINDS, limits: { ...LIMITS, ...o.limits } };
}

/** Run and also check that nothing of the sandbox is left on the host afterwards. */
async function run(
  o: Opts,
): Promise<Awaited<ReturnType<typeof runSandboxed>> & { out: string; err: string }> {
  const r = await runSandboxed(opts(o));
  return { ...r, out: r.stdout.toString(), err: r.stderr.toString() };
}

function expectGone(p: { uid: number; cgroups: string[] }): void {
  expect(processesOfUid(p.uid)).toEqual([]);
  for (const d of p.cgroups) expect(fs.existsSync(d), d).toBe(false);
}

/** Spawn, keep the handle, and wait for the end: for tests that inspect the process or cleanup. */
async function runKeep(
  o: Opts,
): Promise<{ p: SandboxProcess; out: string; err: string; exit: Awaited<SandboxProcess['exited']> }> {
  const p = spawnSandboxed(opts(o));
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  p.stdout.on('data', (c: Buffer) => out.push(c));
  p.stderr.on('data', (c: Buffer) => err.push(c));
  p.stdin.end(o.input ?? '');
  const exit = await p.exited;
  return { p, out: Buffer.concat(out).toString(), err: Buffer.concat(err).toString(), exit };
}

async function waitFor(cond: () => boolean, what: string, ms = 3000): Promise<void> {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function firstLine(p: SandboxProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const onData = (c: Buffer): void => {
      buf += c.toString();
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        p.stdout.off('data', onData);
        resolve(buf.slice(0, nl));
      }
    };
    p.stdout.on('data', onData);
    p.stdout.once('end', () => reject(new Error(`stdout ended before a line: ${buf}`)));
  });
}

let support: SandboxSupport;
let scratch: string;

beforeAll(async () => {
  support = await sandboxSupport();
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'ebcc-sandbox-test-'));
  // bwrap runs as the sandbox uid: bind sources must be reachable by it.
  fs.chmodSync(scratch, 0o755);
});

afterAll(() => {
  fs.rmSync(scratch, { recursive: true, force: true });
});

describe('sandbox support', () => {
  it('has bubblewrap, user namespaces, seccomp and a static init on this host', () => {
    expect(support.bwrap, support.detail).toBe(true);
    expect(support.userns, support.detail).toBe(true);
    expect(support.seccomp, support.detail).toBe(true);
    expect(support.init, support.detail).toMatch(/tini-static$/);
    for (const k of ['cgroupMemory', 'cgroupPids', 'cgroupCpu'] as const)
      expect(typeof support[k]).toBe('boolean');
  });

  it('interpreterBinds covers /usr and node, read-only', () => {
    expect(BINDS.find((b) => b.sandbox === '/usr')).toEqual({ host: '/usr', sandbox: '/usr' });
    expect(BINDS.every((b) => !b.writable)).toBe(true);
  });
});

describe('basic I/O and identity', () => {
  it('echoes stdin to stdout byte for byte', async () => {
    const input = Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 7) % 256));
    const r = await run({ argv: ['/bin/cat'], input });
    expect(r.exit).toMatchObject({ reason: 'exit', code: 0, signal: null });
    expect(r.stdout.equals(input)).toBe(true);
  });

  it('passes exactly the given env, cwd and exit code', async () => {
    const r = await run({
      argv: ['/bin/sh', '-c', 'env | sort; pwd; exit 7'],
      env: { GREETING: 'hello world', EMPTY: '' },
      cwd: '/tmp',
    });
    expect(r.exit).toMatchObject({ reason: 'exit', code: 7 });
    // bwrap always sets PWD; nothing of the runtime's env leaks in.
    expect(r.out).toBe('EMPTY=\nGREETING=hello world\nPWD=/tmp\n/tmp\n');
  });

  it('runs as a distinct non-root uid, inside and on the host', async () => {
    const a = spawnSandboxed(opts({ argv: ['/bin/sh', '-c', 'echo $(id -u) $(id -g) $(id -G); exec cat'] }));
    const b = spawnSandboxed(opts({ argv: ['/bin/sh', '-c', 'echo $(id -u); exec cat'] }));
    const [lineA, lineB] = await Promise.all([firstLine(a), firstLine(b)]);
    expect(lineA).toBe(`${a.uid} ${a.uid} ${a.uid}`);
    expect(a.uid).toBeGreaterThan(0);
    expect(lineB).toBe(String(b.uid));
    expect(b.uid).not.toBe(a.uid);
    // Host side: the monitor, the sandbox's pid 1 and the workload all have real uid = the sandbox uid.
    const init = await a.sandboxPid;
    expect(init).toBeGreaterThan(0);
    expect(readStatus(a.pid!)?.uid).toBe(a.uid);
    expect(readStatus(init!)?.uid).toBe(a.uid);
    const tree = processesOfUid(a.uid);
    expect(tree.length).toBeGreaterThanOrEqual(3); // bwrap monitor, init, cat
    expect(tree.map((p) => p.name)).toContain('cat');
    for (const p of tree)
      expect(fs.readFileSync(`/proc/${p.pid}/status`, 'utf8')).toMatch(/^Uid:\t(\d+)\t\1\t\1\t\1$/m);
    a.stdin.end();
    b.stdin.end();
    const [ea, eb] = await Promise.all([a.exited, b.exited]);
    expect(ea.reason).toBe('exit');
    expect(eb.reason).toBe('exit');
    expectGone(a);
    expectGone(b);
  });

  it('offers extra fds as a bidirectional IPC channel (fd 3)', async () => {
    const p = spawnSandboxed(
      opts({ argv: ['/bin/sh', '-c', 'echo ping >&3; read x <&3; echo "got $x"'], extraFds: 1 }),
    );
    p.stdin.end();
    const ipc = p.extraFds[0]!;
    const msg = await new Promise<string>((resolve) =>
      ipc.once('data', (c: Buffer) => resolve(c.toString())),
    );
    expect(msg).toBe('ping\n');
    ipc.write('pong\n');
    const out = await firstLine(p);
    expect(out).toBe('got pong');
    expect((await p.exited).reason).toBe('exit');
  });
});

describe('isolation', () => {
  it('has no network: only lo, and non-UNIX sockets are refused', async () => {
    const r = await run({
      argv: [
        PY,
        '-c',
        [
          'import socket',
          'for fam in (socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK, socket.AF_PACKET):',
          '  try:',
          '    socket.socket(fam, socket.SOCK_DGRAM); print(fam, "OPEN")',
          '  except OSError as e: print(fam, e.errno)',
          'socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); print("unix ok")',
          'print(sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").read().splitlines()[2:]))',
        ].join('\n'),
      ],
    });
    expect(r.exit.reason, r.err).toBe('exit');
    expect(r.out).not.toContain('OPEN');
    expect(r.out).toMatch(/^2 1$/m); // AF_INET: EPERM
    expect(r.out).toMatch(/^10 1$/m); // AF_INET6
    expect(r.out).toMatch(/^16 1$/m); // AF_NETLINK
    expect(r.out).toContain('unix ok');
    expect(r.out).toContain("['lo']");
  });

  it('sees only its binds: no /etc, read-only root, writable /tmp only', async () => {
    const r = await run({
      argv: [
        '/bin/sh',
        '-c',
        'ls /; cat /etc/shadow 2>&1; cat /etc/passwd 2>&1; touch /x 2>&1; touch /usr/x 2>&1; echo t > /tmp/t && cat /tmp/t',
      ],
    });
    expect(r.exit.reason).toBe('exit');
    const lines = r.out.split('\n');
    expect(lines.slice(0, lines.indexOf('usr') + 1).sort()).toEqual(
      ['bin', 'dev', 'lib', 'lib64', 'proc', 'sbin', 'tmp', 'usr'].filter(
        (d) => d !== 'lib64' || fs.existsSync('/lib64'),
      ),
    );
    expect(r.out).toContain('/etc/shadow: No such file or directory');
    expect(r.out).toContain('/etc/passwd: No such file or directory');
    expect(r.out).toMatch(/touch: cannot touch '\/x': Read-only file system/);
    expect(r.out).toMatch(/touch: cannot touch '\/usr\/x': Read-only file system/);
    expect(r.out.trimEnd().endsWith('\nt')).toBe(true);
  });

  it('cannot read host files it is not allowed to, even when bound; writable binds work', async () => {
    const ro = fs.mkdtempSync(path.join(scratch, 'ro-'));
    fs.chmodSync(ro, 0o777); // only the read-only bind stops writes
    fs.writeFileSync(path.join(ro, 'secret'), 'root only', { mode: 0o600 });
    fs.writeFileSync(path.join(ro, 'public'), 'hello', { mode: 0o644 });
    const rw = fs.mkdtempSync(path.join(scratch, 'rw-'));
    fs.chmodSync(rw, 0o777);
    const { p, out, exit } = await runKeep({
      argv: [
        '/bin/sh',
        '-c',
        'cat /data/public; echo; cat /data/secret 2>&1; (echo x > /data/new) 2>&1; echo made > /out/file && echo wrote',
      ],
      binds: [...BINDS, { host: ro, sandbox: '/data' }, { host: rw, sandbox: '/out', writable: true }],
    });
    expect(exit.reason).toBe('exit');
    expect(out).toContain('hello');
    expect(out).toContain('/data/secret: Permission denied');
    expect(out).toMatch(/\/data\/new: Read-only file system/);
    expect(out).toContain('wrote');
    expect(fs.existsSync(path.join(ro, 'new'))).toBe(false);
    const st = fs.statSync(path.join(rw, 'file'));
    expect(st.uid).toBe(p.uid);
    expect(fs.readFileSync(path.join(rw, 'file'), 'utf8')).toBe('made\n');
  });

  it('cannot see host processes in /proc', async () => {
    const r = await run({
      argv: [
        '/bin/sh',
        '-c',
        'for d in /proc/[0-9]*; do echo "${d#/proc/} $(tr "\\0" " " < $d/cmdline)"; done',
      ],
    });
    expect(r.exit.reason).toBe('exit');
    const procs = r.out.trim().split('\n');
    // pid 1 is the sandbox init, then the shell and its children; nothing from the host.
    expect(procs.length).toBeLessThanOrEqual(6);
    expect(procs[0]).toMatch(/^1 \/\.ebcc-init -- \/bin\/sh/);
    expect(r.out).not.toMatch(/vitest|process_api|node/);
  });

  it('has no capabilities, no_new_privs and the seccomp filter', async () => {
    const r = await run({
      argv: ['/bin/sh', '-c', 'grep -E "^(Cap(Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp):" /proc/self/status'],
    });
    expect(r.out).toMatch(/^CapEff:\s+0000000000000000$/m);
    expect(r.out).toMatch(/^CapPrm:\s+0000000000000000$/m);
    expect(r.out).toMatch(/^CapBnd:\s+0000000000000000$/m);
    expect(r.out).toMatch(/^NoNewPrivs:\s+1$/m);
    expect(r.out).toMatch(/^Seccomp:\s+2$/m);
  });

  it('denies ptrace, mount, unshare, setns, bpf, keyctl, namespace clones (EPERM) and clone3/io_uring (ENOSYS)', async () => {
    const py = [
      'import ctypes, errno, os',
      'libc = ctypes.CDLL(None, use_errno=True)',
      'libc.syscall.restype = ctypes.c_long',
      'def sc(name, *a):',
      '  r = libc.syscall(*[ctypes.c_long(x) for x in a])',
      '  print(name, errno.errorcode.get(ctypes.get_errno(), "?") if r < 0 else "ok")',
      // ptrace(TRACEME) and unshare(0) succeed without seccomp: EPERM proves the filter.
      'sc("ptrace", 101, 0, 0, 0, 0)',
      'sc("unshare0", 272, 0)',
      'sc("unshare_user", 272, 0x10000000)',
      'sc("mount", 165, 0, 0, 0, 0, 0)',
      'sc("umount2", 166, 0, 0)',
      'sc("setns", 308, 0, 0)',
      'sc("pivot_root", 155, 0, 0)',
      'sc("chroot", 161, 0)',
      'sc("bpf", 321, 0, 0, 0)',
      'sc("perf_event_open", 298, 0, 0, -1, -1, 0)',
      'sc("keyctl", 250, 0, -3, 0)',
      'sc("add_key", 248, 0, 0, 0, 0, 0)',
      'sc("userfaultfd", 323, 0)',
      'sc("finit_module", 313, 0, 0, 0)',
      'sc("kexec_load", 246, 0, 0, 0, 0)',
      'sc("process_vm_readv", 310, os.getpid(), 0, 0, 0, 0, 0)',
      'sc("clone_newuser", 56, 0x10000000 | 17, 0, 0, 0, 0)',
      'sc("clone_newnet", 56, 0x40000000 | 17, 0, 0, 0, 0)',
      'sc("clone3", 435, 0, 0)',
      'sc("io_uring_setup", 425, 1, 0)',
      'sc("x32_getpid", 0x40000000 + 39)',
      'sc("getpid", 39)',
      'pid = os.fork()',
      'if pid == 0: os._exit(0)',
      'os.waitpid(pid, 0); print("fork ok")',
    ].join('\n');
    const r = await run({ argv: [PY, '-c', py] });
    expect(r.exit.reason, r.err).toBe('exit');
    const res = Object.fromEntries(
      r.out
        .trim()
        .split('\n')
        .map((l) => l.split(' ') as [string, string]),
    );
    for (const k of [
      'ptrace',
      'unshare0',
      'unshare_user',
      'mount',
      'umount2',
      'setns',
      'pivot_root',
      'chroot',
      'bpf',
      'perf_event_open',
      'keyctl',
      'add_key',
      'userfaultfd',
      'finit_module',
      'kexec_load',
      'process_vm_readv',
      'clone_newuser',
      'clone_newnet',
    ])
      expect([k, res[k]]).toEqual([k, 'EPERM']);
    expect(res.clone3).toBe('ENOSYS');
    expect(res.io_uring_setup).toBe('ENOSYS');
    expect(res.x32_getpid).toBe('ENOSYS');
    expect(res.getpid).toBe('ok');
    expect(res.fork).toBe('ok');
  });

  it('seccomp program: kills foreign architectures and checks arguments', () => {
    expect(evaluateSeccomp(AUDIT_ARCH.I386, 39)).toBe(SECCOMP_RET_KILL_PROCESS);
    expect(evaluateSeccomp(AUDIT_ARCH.X86_64, 39)).toBe(SECCOMP_RET_ALLOW);
    expect(evaluateSeccomp(AUDIT_ARCH.X86_64, SYS.socket, [1])).toBe(SECCOMP_RET_ALLOW);
    expect(evaluateSeccomp(AUDIT_ARCH.X86_64, SYS.socket, [2]) & 0xffff).toBe(1);
    expect(evaluateSeccomp(AUDIT_ARCH.X86_64, SYS.clone, [0x3d0f00])).toBe(SECCOMP_RET_ALLOW); // pthread_create flags
    expect(evaluateSeccomp(AUDIT_ARCH.X86_64, SYS.ioctl, [0, 0x5412]) & 0xffff).toBe(1); // TIOCSTI
    expect(evaluateSeccomp(AUDIT_ARCH.X86_64, SYS.ioctl, [0, 0x5401])).toBe(SECCOMP_RET_ALLOW); // TCGETS
    expect(evaluateSeccomp(AUDIT_ARCH.X86_64, SYS.personality, [0xffffffff])).toBe(SECCOMP_RET_ALLOW);
    expect(evaluateSeccomp(AUDIT_ARCH.X86_64, SYS.personality, [0x0040000]) & 0xffff).toBe(1); // ADDR_NO_RANDOMIZE
  });
});

const FORK_LOOP = [
  'import os, time',
  'n = 0',
  'for i in range(200):',
  '  try: pid = os.fork()',
  '  except OSError as e: print("fail", e.errno); break',
  '  if pid == 0: time.sleep(30); os._exit(0)',
  '  n += 1',
  'print("forked", n)',
].join('\n');

describe('limits', () => {
  for (const cgroups of [true, false]) {
    it(`contains a fork bomb with maxProcs (${cgroups ? 'cgroup pids + ' : ''}RLIMIT_NPROC)`, async () => {
      const { p, out, exit } = await runKeep({
        argv: [PY, '-c', FORK_LOOP],
        limits: { maxProcs: 16 },
        cgroups,
      });
      expect(exit.reason).toBe('exit');
      expect(out).toContain('fail 11'); // EAGAIN
      const forked = Number(/forked (\d+)/.exec(out)?.[1]);
      expect(forked).toBeGreaterThan(5);
      expect(forked).toBeLessThan(16);
      // The 15 sleeping children die with the sandbox.
      expectGone(p);
    });
  }

  it('kills a shell fork bomb at the wall-clock limit and leaves nothing behind', async () => {
    const { p, exit } = await runKeep({
      argv: ['/bin/sh', '-c', 'b() { b | b & }; b; sleep 100'],
      limits: { maxProcs: 24, wallMs: 1500 },
    });
    expect(exit.reason).toBe('timeout');
    expectGone(p);
  });

  it('enforces the memory limit and reports it', async () => {
    const { p, exit } = await runKeep({
      argv: [PY, '-c', 'a = []\nwhile True: a.append(bytearray(8 << 20))'],
      limits: { memoryBytes: 64 << 20 },
    });
    if (support.cgroupMemory) {
      expect(exit).toMatchObject({ reason: 'memory', signal: 'SIGKILL' });
      expect(exit.usage?.memoryPeakBytes).toBeLessThanOrEqual(64 << 20);
    } else {
      expect(exit.code).not.toBe(0);
    }
    expectGone(p);
  });

  it('without cgroups, falls back to RLIMIT_AS (MemoryError)', async () => {
    const r = await run({
      argv: [PY, '-c', 'a = []\nwhile True: a.append(bytearray(8 << 20))'],
      limits: { memoryBytes: 64 << 20 },
      cgroups: false,
    });
    expect(r.exit).toMatchObject({ reason: 'exit', code: 1 });
    expect(r.err).toContain('MemoryError');
  });

  it('enforces the CPU limit (cgroup cpuacct, ms precision)', async () => {
    const t = Date.now();
    const { p, exit } = await runKeep({
      argv: ['/bin/sh', '-c', 'while :; do :; done'],
      limits: { cpuMs: 400 },
    });
    expect(exit.reason).toBe('cpu');
    if (support.cgroupCpu) {
      expect(exit.usage?.cpuMs).toBeGreaterThanOrEqual(400);
      expect(exit.usage?.cpuMs).toBeLessThan(1500);
    }
    expect(Date.now() - t).toBeLessThan(5000);
    expectGone(p);
  });

  it('enforces the CPU limit without cgroups (RLIMIT_CPU -> SIGXCPU)', async () => {
    const r = await run({
      argv: ['/bin/sh', '-c', 'while :; do :; done'],
      limits: { cpuMs: 300 },
      cgroups: false,
    });
    expect(r.exit).toMatchObject({ reason: 'cpu', signal: 'SIGXCPU' });
  });

  it('kills at the wall-clock limit', async () => {
    const t = Date.now();
    const { p, exit } = await runKeep({ argv: ['/bin/sleep', '30'], limits: { wallMs: 300 } });
    expect(exit).toMatchObject({ reason: 'timeout', signal: 'SIGKILL' });
    expect(Date.now() - t).toBeLessThan(3000);
    expectGone(p);
  });

  it('truncates stdout at maxOutputBytes and kills (stderr too)', async () => {
    const out = await run({ argv: ['/usr/bin/yes'], limits: { maxOutputBytes: 10_000 } });
    expect(out.exit.reason).toBe('output');
    expect(out.stdout.length).toBe(10_000);
    expect(out.out.startsWith('y\ny\n')).toBe(true);
    const err = await run({ argv: ['/bin/sh', '-c', 'yes >&2'], limits: { maxOutputBytes: 5000 } });
    expect(err.exit.reason).toBe('output');
    expect(err.stderr.length).toBe(5000);
  });
});

describe('lifecycle', () => {
  it('does not let orphans survive the workload', async () => {
    const t = Date.now();
    const { p, out, exit } = await runKeep({
      argv: ['/bin/sh', '-c', 'sleep 100 & (sleep 100 &) ; setsid sleep 100 & echo started'],
    });
    expect(exit).toMatchObject({ reason: 'exit', code: 0 });
    expect(out).toBe('started\n');
    expect(Date.now() - t).toBeLessThan(3000);
    expectGone(p);
  });

  it('kill() takes down the whole tree', async () => {
    const p = spawnSandboxed(opts({ argv: ['/bin/sh', '-c', 'sleep 100 & sleep 100 & echo up; wait'] }));
    p.stdin.end();
    expect(await firstLine(p)).toBe('up');
    await waitFor(() => processesOfUid(p.uid).filter((x) => x.name === 'sleep').length === 2, 'two sleeps');
    p.kill();
    const exit = await p.exited;
    expect(exit).toMatchObject({ reason: 'killed', signal: 'SIGKILL' });
    expectGone(p);
  });

  it('kill(SIGTERM) is forwarded to the workload by the sandbox init', async () => {
    const p = spawnSandboxed(
      opts({
        argv: ['/bin/sh', '-c', 'trap "echo term; exit 3" TERM; echo up; while :; do sleep 0.05; done'],
      }),
    );
    p.stdin.end();
    expect(await firstLine(p)).toBe('up');
    p.kill('SIGTERM');
    const exit = await p.exited;
    expect(exit).toMatchObject({ reason: 'killed', code: 3 });
    expectGone(p);
  });

  it('dies with the runtime process (--die-with-parent)', async () => {
    // A python subreaper runs a node process that starts a sandbox; we SIGKILL that node process.
    // The subreaper reaps everything reparented to it and exits when no descendant is left.
    const reaper = [
      'import ctypes, os, sys',
      'ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)', // PR_SET_CHILD_SUBREAPER
      'pid = os.fork()',
      'if pid == 0: os.execv(sys.argv[1], sys.argv[1:])',
      'while True:',
      '  try: os.wait()',
      '  except ChildProcessError: break',
    ].join('\n');
    const mod = new URL('../runtime/sandbox/index.ts', import.meta.url).pathname;
    const script = [
      `import { spawnSandboxed, interpreterBinds } from ${JSON.stringify(mod)};`,
      `const p = spawnSandboxed({ argv: ['/bin/sh', '-c', 'sleep 100 & sleep 100'], binds: interpreterBinds(),`,
      `  limits: ${JSON.stringify(LIMITS)} });`,
      `const init = await p.sandboxPid;`,
      `console.log(JSON.stringify({ node: process.pid, uid: p.uid, init, cgroups: p.cgroups }));`,
      `setInterval(() => {}, 1000);`,
    ].join('\n');
    const helper = spawn(
      PY,
      ['-c', reaper, process.execPath, '--import', 'tsx', '--input-type=module', '-e', script],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
        cwd: path.dirname(new URL(import.meta.url).pathname),
      },
    );
    const helperExit = new Promise<void>((r) => helper.once('exit', () => r()));
    const info = await new Promise<{ node: number; uid: number; init: number; cgroups: string[] }>(
      (resolve) => {
        let buf = '';
        helper.stdout.on('data', (c: Buffer) => {
          buf += c.toString();
          if (buf.includes('\n')) resolve(JSON.parse(buf.slice(0, buf.indexOf('\n'))));
        });
      },
    );
    // monitor, init, shell/sleeps
    await waitFor(
      () => processesOfUid(info.uid).filter((x) => x.name === 'sleep').length === 2,
      'the sandbox',
    );
    process.kill(info.node, 'SIGKILL');
    const done = await Promise.race([
      helperExit.then(() => true),
      new Promise((r) => setTimeout(() => r(false), 5000)),
    ]);
    const left = processesOfUid(info.uid);
    for (const x of left) process.kill(x.pid, 'SIGKILL'); // (cleanup if the assertion below fails)
    expect(done).toBe(true);
    expect(left).toEqual([]);
    // The dead runtime could not remove its cgroups; they must at least be empty.
    for (const d of info.cgroups) {
      expect(fs.readFileSync(path.join(d, 'cgroup.procs'), 'utf8')).toBe('');
      fs.rmdirSync(d);
    }
  });

  it('reports spawn failures without starting anything', async () => {
    const cases: Opts[] = [
      { argv: ['/nonexistent'] },
      { argv: ['/usr/share'] },
      { argv: ['relative'] },
      { argv: ['/bin/true'], binds: [...BINDS, { host: '/nonexistent-dir', sandbox: '/x' }] },
      { argv: ['/bin/true'], binds: [...BINDS, { host: '/', sandbox: '/proc/x' }] },
      { argv: ['/bin/true'], env: { 'A=B': 'x' } },
      { argv: ['/bin/true'], env: { A: 'x\0y' } },
      { argv: ['/bin/true'], limits: { maxProcs: 0 } },
    ];
    for (const c of cases) {
      const r = await run(c);
      expect(r.exit.reason, JSON.stringify(c.argv)).toBe('spawn-failed');
      expect(r.exit.detail).toBeTruthy();
    }
    // bwrap itself failing (e.g. a cwd that does not exist) is also a spawn failure, with its message.
    const r = await run({ argv: ['/bin/true'], cwd: '/nowhere' });
    expect(r.exit.reason).toBe('spawn-failed');
    expect(r.exit.detail).toContain('/nowhere');
  });
});

describe('interpreters', () => {
  it('runs node with interpreterBinds (threads, workers, fs in /tmp; no network)', async () => {
    const js = `
      const { Worker } = require('node:worker_threads');
      const fs = require('node:fs');
      fs.writeFileSync('/tmp/x.json', JSON.stringify({ ok: 1 }));
      const w = new Worker("require('node:worker_threads').parentPort.postMessage(6 * 7)", { eval: true });
      w.on('message', (m) => {
        const srv = require('node:net').createServer();
        srv.on('error', (e) => {
          console.log(JSON.stringify({ m, uid: process.getuid(), file: fs.readFileSync('/tmp/x.json', 'utf8'), listen: e.code }));
          w.terminate();
        });
        srv.listen(0, '127.0.0.1');
      });`;
    const r = await run({ argv: [process.execPath, '-e', js], limits: { memoryBytes: 512 << 20 } });
    expect(r.exit, r.err).toMatchObject({ reason: 'exit', code: 0 });
    const o = JSON.parse(r.out) as { m: number; uid: number; file: string; listen: string };
    expect(o).toMatchObject({ m: 42, file: '{"ok":1}', listen: 'EPERM' });
    expect(o.uid).toBeGreaterThan(0);
  });

  it('runs node under its memory limit and reports an OOM', async () => {
    const { p, exit } = await runKeep({
      argv: [process.execPath, '-e', 'const a = []; for (;;) a.push(Buffer.alloc(1 << 20, 1));'],
      limits: { memoryBytes: 128 << 20 },
    });
    expect(exit.reason).toBe(support.cgroupMemory ? 'memory' : 'exit');
    expectGone(p);
  });

  it('runs python3', async () => {
    const r = await run({
      argv: [
        PY,
        '-c',
        'import sys, json; print(json.dumps({"v": sys.version_info[0], "x": sys.stdin.read()}))',
      ],
      input: 'in',
    });
    expect(r.exit).toMatchObject({ reason: 'exit', code: 0 });
    expect(JSON.parse(r.out)).toEqual({ v: 3, x: 'in' });
  });
});
