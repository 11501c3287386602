/**
 * Seccomp filter for sandboxed processes, compiled to classic BPF in TypeScript.
 *
 * The output is the raw `struct sock_filter[]` array that `bwrap --seccomp FD` reads
 * (8 bytes per instruction, little-endian, x86_64 only). bwrap installs it with
 * PR_SET_NO_NEW_PRIVS + PR_SET_SECCOMP right before it execs the sandboxed command.
 *
 * Shape: a deny-list on top of the other layers (namespaces, no capabilities,
 * no_new_privs), like flatpak's and bubblewrap's demo filters rather than Docker's
 * allow-list: wrong architecture -> kill; x32 syscalls -> ENOSYS; clone3 and io_uring
 * -> ENOSYS (libc and libuv fall back); kernel-attack-surface and escape syscalls ->
 * EPERM; argument checks for socket (AF_UNIX only), clone (no namespace flags),
 * ioctl (no TIOCSTI/TIOCLINUX) and personality (only the values Docker allows).
 */

// struct seccomp_data offsets
const OFF_NR = 0;
const OFF_ARCH = 4;
const argLow = (i: number): number => 16 + 8 * i; // low 32 bits of args[i] (little-endian)

const AUDIT_ARCH_X86_64 = 0xc000003e;
const X32_SYSCALL_BIT = 0x40000000;

export const SECCOMP_RET_KILL_PROCESS = 0x80000000;
export const SECCOMP_RET_ERRNO = 0x00050000;
export const SECCOMP_RET_ALLOW = 0x7fff0000;

export const EPERM = 1;
export const ENOSYS = 38;

// BPF opcodes
const BPF_LD_W_ABS = 0x20;
const BPF_JMP_JEQ_K = 0x15;
const BPF_JMP_JGE_K = 0x35;
const BPF_JMP_JSET_K = 0x45;
const BPF_RET_K = 0x06;

/** x86_64 syscall numbers used by the filter. */
export const SYS = {
  ioctl: 16,
  socket: 41,
  clone: 56,
  ptrace: 101,
  syslog: 103,
  uselib: 134,
  personality: 135,
  ustat: 136,
  sysfs: 139,
  vhangup: 153,
  pivot_root: 155,
  _sysctl: 156,
  adjtimex: 159,
  chroot: 161,
  acct: 163,
  settimeofday: 164,
  mount: 165,
  umount2: 166,
  swapon: 167,
  swapoff: 168,
  reboot: 169,
  sethostname: 170,
  setdomainname: 171,
  iopl: 172,
  ioperm: 173,
  create_module: 174,
  init_module: 175,
  delete_module: 176,
  get_kernel_syms: 177,
  query_module: 178,
  quotactl: 179,
  nfsservctl: 180,
  lookup_dcookie: 212,
  clock_settime: 227,
  vserver: 236,
  kexec_load: 246,
  add_key: 248,
  request_key: 249,
  keyctl: 250,
  migrate_pages: 256,
  unshare: 272,
  move_pages: 279,
  perf_event_open: 298,
  fanotify_init: 300,
  name_to_handle_at: 303,
  open_by_handle_at: 304,
  clock_adjtime: 305,
  setns: 308,
  process_vm_readv: 310,
  process_vm_writev: 311,
  kcmp: 312,
  finit_module: 313,
  kexec_file_load: 320,
  bpf: 321,
  userfaultfd: 323,
  io_uring_setup: 425,
  io_uring_enter: 426,
  io_uring_register: 427,
  open_tree: 428,
  move_mount: 429,
  fsopen: 430,
  fsconfig: 431,
  fsmount: 432,
  fspick: 433,
  clone3: 435,
  pidfd_getfd: 438,
  process_madvise: 440,
  mount_setattr: 442,
  quotactl_fd: 443,
  open_tree_attr: 467,
} as const;

/** Syscalls that fail with EPERM unconditionally. */
export const DENY_EPERM: readonly (keyof typeof SYS)[] = [
  // debugging / reading other processes
  'ptrace',
  'process_vm_readv',
  'process_vm_writev',
  'kcmp',
  'pidfd_getfd',
  'process_madvise',
  // namespaces and mounts
  'unshare',
  'setns',
  'mount',
  'umount2',
  'pivot_root',
  'chroot',
  'open_tree',
  'open_tree_attr',
  'move_mount',
  'fsopen',
  'fsconfig',
  'fsmount',
  'fspick',
  'mount_setattr',
  // kernel modules, kexec, bpf, perf
  'init_module',
  'finit_module',
  'delete_module',
  'create_module',
  'get_kernel_syms',
  'query_module',
  'kexec_load',
  'kexec_file_load',
  'bpf',
  'perf_event_open',
  'userfaultfd',
  // keyrings
  'keyctl',
  'add_key',
  'request_key',
  // host-global state
  'syslog',
  'acct',
  'settimeofday',
  'clock_settime',
  'clock_adjtime',
  'adjtimex',
  'swapon',
  'swapoff',
  'reboot',
  'sethostname',
  'setdomainname',
  'iopl',
  'ioperm',
  'quotactl',
  'quotactl_fd',
  'nfsservctl',
  'lookup_dcookie',
  'fanotify_init',
  'name_to_handle_at',
  'open_by_handle_at',
  'vhangup',
  'uselib',
  'ustat',
  'sysfs',
  '_sysctl',
  'vserver',
  'migrate_pages',
  'move_pages',
];

/** Syscalls that fail with ENOSYS so that callers fall back to an older interface. */
export const DENY_ENOSYS: readonly (keyof typeof SYS)[] = [
  'clone3', // glibc falls back to clone(2), whose flags we can inspect
  'io_uring_setup', // io_uring can issue socket/open operations that bypass seccomp; libuv falls back
  'io_uring_enter',
  'io_uring_register',
];

const AF_UNIX = 1;
/** CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET */
export const CLONE_NAMESPACE_FLAGS =
  0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000;
const TIOCSTI = 0x5412;
const TIOCLINUX = 0x541c;
/** personality(2) values Docker's default profile allows (PER_LINUX, PER_LINUX32, UNAME26 variants, query). */
const PERSONALITY_ALLOWED = [0x0, 0x8, 0x20000, 0x20008, 0xffffffff];

interface Insn {
  code: number;
  jt: number;
  jf: number;
  k: number;
}

const ld = (offset: number): Insn => ({ code: BPF_LD_W_ABS, jt: 0, jf: 0, k: offset });
const jeq = (k: number, jt: number, jf: number): Insn => ({ code: BPF_JMP_JEQ_K, jt, jf, k: k >>> 0 });
const jge = (k: number, jt: number, jf: number): Insn => ({ code: BPF_JMP_JGE_K, jt, jf, k: k >>> 0 });
const jset = (k: number, jt: number, jf: number): Insn => ({ code: BPF_JMP_JSET_K, jt, jf, k: k >>> 0 });
const ret = (k: number): Insn => ({ code: BPF_RET_K, jt: 0, jf: 0, k: k >>> 0 });
const errno = (e: number): number => SECCOMP_RET_ERRNO | (e & 0xffff);

/** Build the filter as an instruction list (exported for tests and inspection). */
export function buildSeccompProgram(): Insn[] {
  const p: Insn[] = [];
  // 1. Architecture check: anything but x86_64 is killed (no i386/x32 syscall tables).
  p.push(ld(OFF_ARCH), jeq(AUDIT_ARCH_X86_64, 1, 0), ret(SECCOMP_RET_KILL_PROCESS));
  // 2. Load the syscall number; x32 ABI numbers (bit 30 set) are refused.
  p.push(ld(OFF_NR), jge(X32_SYSCALL_BIT, 0, 1), ret(errno(ENOSYS)));
  // 3. Unconditional denials: `jeq nr ? next : skip 1; ret ERRNO`.
  for (const name of DENY_EPERM) p.push(jeq(SYS[name], 0, 1), ret(errno(EPERM)));
  for (const name of DENY_ENOSYS) p.push(jeq(SYS[name], 0, 1), ret(errno(ENOSYS)));
  // 4. Argument checks. Each block ends in a return, so A need not be reloaded after it.
  // socket(domain, ...): only AF_UNIX.
  p.push(jeq(SYS.socket, 0, 4), ld(argLow(0)), jeq(AF_UNIX, 1, 0), ret(errno(EPERM)), ret(SECCOMP_RET_ALLOW));
  // clone(flags, ...): no new namespaces. (The legacy clone ABI only uses the low 32 bits of flags.)
  p.push(
    jeq(SYS.clone, 0, 4),
    ld(argLow(0)),
    jset(CLONE_NAMESPACE_FLAGS, 0, 1),
    ret(errno(EPERM)),
    ret(SECCOMP_RET_ALLOW),
  );
  // ioctl(fd, cmd, ...): no terminal input injection. The kernel compares cmd as 32 bits.
  p.push(
    jeq(SYS.ioctl, 0, 5),
    ld(argLow(1)),
    jeq(TIOCSTI, 1, 0),
    jeq(TIOCLINUX, 0, 1),
    ret(errno(EPERM)),
    ret(SECCOMP_RET_ALLOW),
  );
  // personality(persona): only harmless personas (no ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC, ...).
  const n = PERSONALITY_ALLOWED.length;
  p.push(jeq(SYS.personality, 0, n + 3), ld(argLow(0)));
  PERSONALITY_ALLOWED.forEach((v, i) => p.push(jeq(v, n - i, 0)));
  p.push(ret(errno(EPERM)), ret(SECCOMP_RET_ALLOW));
  // 5. Everything else is allowed.
  p.push(ret(SECCOMP_RET_ALLOW));
  validate(p);
  return p;
}

function validate(p: Insn[]): void {
  if (p.length > 4096) throw new Error('seccomp program too long');
  p.forEach((insn, i) => {
    if (insn.jt > 255 || insn.jf > 255) throw new Error(`seccomp jump out of range at ${i}`);
    if ((insn.code & 0x07) === 0x05 && (i + 1 + insn.jt >= p.length || i + 1 + insn.jf >= p.length))
      throw new Error(`seccomp jump past end at ${i}`);
  });
  const last = p[p.length - 1];
  if (!last || last.code !== BPF_RET_K) throw new Error('seccomp program must end in a return');
}

/** The filter serialised as `struct sock_filter[]` for `bwrap --seccomp FD`. */
export function compileSeccompFilter(): Buffer {
  if (process.arch !== 'x64')
    throw new Error(`seccomp filter supports x86_64 only (this is ${process.arch})`);
  const prog = buildSeccompProgram();
  const buf = Buffer.alloc(prog.length * 8);
  prog.forEach((insn, i) => {
    buf.writeUInt16LE(insn.code, i * 8);
    buf.writeUInt8(insn.jt, i * 8 + 2);
    buf.writeUInt8(insn.jf, i * 8 + 3);
    buf.writeUInt32LE(insn.k, i * 8 + 4);
  });
  return buf;
}

/**
 * Evaluate the program against one syscall, as the kernel would (used by unit tests to
 * check the jump arithmetic without spawning anything).
 */
export function evaluateSeccomp(arch: number, nr: number, args: readonly number[] = []): number {
  const prog = buildSeccompProgram();
  const word = (off: number): number => {
    if (off === OFF_NR) return nr >>> 0;
    if (off === OFF_ARCH) return arch >>> 0;
    const i = (off - 16) / 8;
    return (args[i] ?? 0) >>> 0;
  };
  let a = 0;
  for (let pc = 0; pc < prog.length;) {
    const insn = prog[pc]!;
    switch (insn.code) {
      case BPF_LD_W_ABS:
        a = word(insn.k);
        pc++;
        break;
      case BPF_JMP_JEQ_K:
        pc += 1 + (a === insn.k ? insn.jt : insn.jf);
        break;
      case BPF_JMP_JGE_K:
        pc += 1 + (a >= insn.k ? insn.jt : insn.jf);
        break;
      case BPF_JMP_JSET_K:
        pc += 1 + ((a & insn.k) !== 0 ? insn.jt : insn.jf);
        break;
      case BPF_RET_K:
        return insn.k;
      default:
        throw new Error(`unknown opcode ${insn.code}`);
    }
  }
  throw new Error('fell off the end of the program');
}

export const AUDIT_ARCH = { X86_64: AUDIT_ARCH_X86_64, I386: 0x40000003 } as const;
