/**
 * Per-sandbox host uids.
 *
 * Every sandbox runs under its own non-root host uid/gid taken from a range that no real
 * account uses, so that RLIMIT_NPROC counts only that sandbox's tasks and tenants cannot
 * signal, ptrace or read each other's files. The range is configurable with
 * EBCC_SANDBOX_UID_BASE / EBCC_SANDBOX_UID_COUNT (defaults: 1_500_000_000 / 1_000_000,
 * far above login users and the usual subuid ranges).
 */
import fs from 'node:fs';

const DEFAULT_BASE = 1_500_000_000;
const DEFAULT_COUNT = 1_000_000;

export interface UidRange {
  base: number;
  count: number;
}

export function uidRange(): UidRange {
  const base = Number(process.env.EBCC_SANDBOX_UID_BASE ?? DEFAULT_BASE);
  const count = Number(process.env.EBCC_SANDBOX_UID_COUNT ?? DEFAULT_COUNT);
  if (
    !Number.isInteger(base) ||
    base < 1000 ||
    !Number.isInteger(count) ||
    count < 1 ||
    base + count > 2 ** 32 - 2
  )
    throw new Error(`invalid sandbox uid range ${base}+${count}`);
  return { base, count };
}

const inUse = new Set<number>();

/** Host uids that currently own a process (owner of /proc/<pid>, i.e. the euid of dumpable processes). */
function liveUids(): Set<number> {
  const s = new Set<number>();
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      s.add(fs.statSync(`/proc/${name}`).uid);
    } catch {
      /* exited meanwhile */
    }
  }
  return s;
}

/** Pick a uid from the range that no sandbox of this process and no live process uses. */
export function allocateUid(): number {
  const { base, count } = uidRange();
  const live = liveUids();
  for (let attempt = 0; attempt < 1000; attempt++) {
    const uid = base + Math.floor(Math.random() * count);
    if (inUse.has(uid) || live.has(uid)) continue;
    inUse.add(uid);
    return uid;
  }
  throw new Error('no free sandbox uid');
}

export function releaseUid(uid: number): void {
  inUse.delete(uid);
}

export interface HostProcess {
  pid: number;
  ppid: number;
  state: string;
  uid: number;
  name: string;
}

/** Every host process whose real uid is `uid` (reads /proc/<pid>/status). */
export function processesOfUid(uid: number): HostProcess[] {
  const out: HostProcess[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const p = readStatus(Number(name));
    if (p && p.uid === uid) out.push(p);
  }
  return out;
}

export function readStatus(pid: number): HostProcess | undefined {
  let status: string;
  try {
    status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  const field = (k: string): string => new RegExp(`^${k}:\\s*(.*)$`, 'm').exec(status)?.[1] ?? '';
  return {
    pid,
    ppid: Number(field('PPid')),
    state: field('State').charAt(0),
    uid: Number(field('Uid').split(/\s+/)[0]),
    name: field('Name'),
  };
}
