import type { Duplex, Readable, Writable } from 'node:stream';

/** A host path made visible inside the sandbox. Read-only unless `writable`. */
export interface SandboxBind {
  /** absolute host path; must exist */
  host: string;
  /** absolute path inside the sandbox (not under /proc or /dev) */
  sandbox: string;
  /** read-write bind; the host directory must then be writable by the sandbox uid (see SandboxProcess.uid) */
  writable?: boolean;
}

export interface SandboxLimits {
  /** memory limit: cgroup v1 memory.limit_in_bytes (+memsw), or RLIMIT_AS where no memory cgroup is usable */
  memoryBytes: number;
  /** CPU time of the whole sandbox (cgroup cpuacct, polled), backed by RLIMIT_CPU per process */
  cpuMs: number;
  /** wall-clock limit from spawn */
  wallMs: number;
  /**
   * Tasks (processes *and threads*) the workload may have at once: RLIMIT_NPROC on the
   * sandbox's own uid plus cgroup pids.max. Node needs ~12 for its own threads.
   */
  maxProcs: number;
  /** cap on stdout, and separately on stderr; exceeding either truncates it and kills the sandbox (reason 'output') */
  maxOutputBytes: number;
  /**
   * RLIMIT_AS per process. Default: unlimited when the memory cgroup is usable, else `memoryBytes`.
   * V8 reserves ~1 GiB of address space, so node needs >= 1 GiB here when the fallback applies.
   * `0` means unlimited.
   */
  addressSpaceBytes?: number;
  /** size of the tmpfs mounted on /tmp (default 16 MiB; it also counts against the memory cgroup) */
  tmpBytes?: number;
}

export interface SandboxOptions {
  /** argv[0] is an absolute path inside the sandbox */
  argv: string[];
  /** nothing of the host is visible except these */
  binds: SandboxBind[];
  /** the child's entire environment (bwrap additionally sets PWD) */
  env?: Record<string, string>;
  /** working directory inside the sandbox (default "/") */
  cwd?: string;
  limits: SandboxLimits;
  /** number of extra socketpairs, appearing as fds 3, 4, ... inside (e.g. an IPC channel) */
  extraFds?: number;
  /** used in cgroup names and diagnostics */
  label?: string;
  /** use cgroups where available (default true; false forces the rlimit-only fallback, for tests) */
  cgroups?: boolean;
}

export type SandboxExitReason = 'exit' | 'timeout' | 'memory' | 'cpu' | 'output' | 'killed' | 'spawn-failed';

export interface SandboxExit {
  /** exit status of the workload; null when it died by a signal */
  code: number | null;
  /**
   * Signal that ended the workload. Derived from the 128+n status that the sandbox init
   * reports, so a program that itself exits with 137 reads as SIGKILL.
   */
  signal: string | null;
  reason: SandboxExitReason;
  detail?: string;
  /** resource use, when the corresponding cgroup was available */
  usage?: { cpuMs?: number; memoryPeakBytes?: number; wallMs: number };
}

export interface SandboxProcess {
  /** host pid of the outer bwrap (monitor) process; undefined if nothing was spawned */
  pid: number | undefined;
  /** host uid (and gid) the sandbox runs as */
  uid: number;
  stdin: Writable;
  /** bounded by limits.maxOutputBytes */
  stdout: Readable;
  /** bounded by limits.maxOutputBytes */
  stderr: Readable;
  /** the extraFds socketpairs (inside: fd 3 + i) */
  extraFds: Duplex[];
  /** cgroup directories used by this sandbox (removed after exit) */
  cgroups: string[];
  /** host pid of the sandbox's pid 1, once it exists (null if the sandbox never started) */
  sandboxPid: Promise<number | null>;
  /** SIGKILL (default) kills the whole sandbox; other signals go to the sandbox init, which forwards them */
  kill(signal?: NodeJS.Signals): void;
  /**
   * OOM kills so far in the sandbox's memory cgroup (-1 if unknown). A workload whose child was
   * OOM-killed lives on, so its exit alone cannot say that memory ran out.
   */
  oomKills(): number;
  exited: Promise<SandboxExit>;
}

export interface SandboxSupport {
  bwrap: boolean;
  userns: boolean;
  cgroupMemory: boolean;
  cgroupPids: boolean;
  cgroupCpu: boolean;
  /** path of the static init used as pid 1 inside the sandbox, or null (workload runs as pid 1) */
  init: string | null;
  seccomp: boolean;
  detail: string;
}
