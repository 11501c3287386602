/**
 * cgroup v1 support for sandboxes: one cgroup per sandbox in each of the memory, pids and
 * cpuacct hierarchies, created as `<our own cgroup>/ebcc/<id>` so that any limit placed on
 * the runtime itself still binds its sandboxes (and nothing escapes the runtime's cgroup).
 *
 * Everything degrades: a hierarchy that is not mounted or not writable is simply not used,
 * and `cgroupSupport()` says which ones work.
 *
 * cgroup v2 (unified) is not implemented: delegating controllers there requires moving the
 * runtime itself into a leaf cgroup, which is the service manager's job. On a pure v2 host
 * the sandbox falls back to rlimits only (reported by sandboxSupport()).
 */
import fs from 'node:fs';
import path from 'node:path';

export type Controller = 'memory' | 'pids' | 'cpuacct';
const CONTROLLERS: readonly Controller[] = ['memory', 'pids', 'cpuacct'];
const PARENT_NAME = 'ebcc';

interface Hierarchy {
  controller: Controller;
  /** `<mountpoint><own cgroup path>/ebcc` */
  parent: string;
}

export interface CgroupSupport {
  memory: boolean;
  pids: boolean;
  cpuacct: boolean;
  detail: string;
}

let discovered: { hierarchies: Map<Controller, Hierarchy>; detail: string[] } | undefined;

/** Parse /proc/self/mountinfo + /proc/self/cgroup to find v1 hierarchies and our place in them. */
function discover(): { hierarchies: Map<Controller, Hierarchy>; detail: string[] } {
  if (discovered) return discovered;
  const hierarchies = new Map<Controller, Hierarchy>();
  const detail: string[] = [];
  let mountinfo: string;
  let selfCgroup: string;
  try {
    mountinfo = fs.readFileSync('/proc/self/mountinfo', 'utf8');
    selfCgroup = fs.readFileSync('/proc/self/cgroup', 'utf8');
  } catch (e) {
    detail.push(`cannot read /proc/self/{mountinfo,cgroup}: ${(e as Error).message}`);
    discovered = { hierarchies, detail };
    return discovered;
  }
  // "N:ctrl1,ctrl2:/path"
  const ownPath = new Map<string, string>();
  for (const line of selfCgroup.split('\n')) {
    const m = /^\d+:([^:]*):(.*)$/.exec(line);
    if (!m) continue;
    for (const c of m[1]!.split(',')) if (c) ownPath.set(c, m[2]!);
  }
  for (const line of mountinfo.split('\n')) {
    // ... mountpoint ... - fstype source superopts
    const [pre, post] = line.split(' - ');
    if (!pre || !post) continue;
    const [fstype, , superOpts = ''] = post.split(' ');
    if (fstype !== 'cgroup') continue;
    const mountPoint = unescapeMount(pre.split(' ')[4] ?? '');
    const opts = superOpts.split(',');
    const root = unescapeMount(pre.split(' ')[3] ?? '/');
    for (const c of CONTROLLERS) {
      if (!opts.includes(c) || hierarchies.has(c)) continue;
      const own = ownPath.get(c);
      if (own === undefined) continue;
      // The mount may expose a sub-tree (root != "/"), e.g. inside a container.
      let rel = own;
      if (root !== '/' && (own === root || own.startsWith(root + '/'))) rel = own.slice(root.length) || '/';
      hierarchies.set(c, { controller: c, parent: path.join(mountPoint, rel, PARENT_NAME) });
    }
  }
  discovered = { hierarchies, detail };
  return discovered;
}

function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

let supportCache: CgroupSupport | undefined;

/** Which controllers we can actually use (probes by creating and removing a cgroup). */
export function cgroupSupport(): CgroupSupport {
  if (supportCache) return supportCache;
  const { hierarchies, detail } = discover();
  const ok: Record<Controller, boolean> = { memory: false, pids: false, cpuacct: false };
  for (const c of CONTROLLERS) {
    const h = hierarchies.get(c);
    if (!h) {
      detail.push(`${c}: no cgroup v1 hierarchy mounted`);
      continue;
    }
    const probe = path.join(h.parent, `${process.pid}-probe-${Math.random().toString(36).slice(2, 8)}`);
    try {
      fs.mkdirSync(probe, { recursive: true });
      const need = c === 'memory' ? 'memory.limit_in_bytes' : c === 'pids' ? 'pids.max' : 'cpuacct.usage';
      fs.accessSync(path.join(probe, need), fs.constants.R_OK | fs.constants.W_OK);
      ok[c] = true;
    } catch (e) {
      detail.push(
        `${c}: ${h.parent} not usable (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
      );
    } finally {
      rmdirQuiet(probe);
      rmdirQuiet(h.parent); // only succeeds when no sandbox is using it
    }
    if (ok[c]) sweepStale(h.parent);
  }
  supportCache = {
    ...ok,
    detail:
      detail.join('; ') || `cgroup v1: ${CONTROLLERS.map((c) => hierarchies.get(c)?.parent).join(', ')}`,
  };
  return supportCache;
}

function rmdirQuiet(p: string): boolean {
  try {
    fs.rmdirSync(p);
    return true;
  } catch {
    return false;
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Remove empty per-sandbox cgroups left by runtimes that died (named `<pid>-...`). */
function sweepStale(parent: string): void {
  let entries: string[];
  try {
    entries = fs.readdirSync(parent);
  } catch {
    return;
  }
  for (const name of entries) {
    const m = /^(\d+)-/.exec(name);
    if (!m || Number(m[1]) === process.pid || pidAlive(Number(m[1]))) continue;
    const dir = path.join(parent, name);
    if (readPids(dir).length === 0) rmdirQuiet(dir);
  }
  rmdirQuiet(parent);
}

function readPids(dir: string): number[] {
  try {
    return fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

let active = 0;
let seq = 0;

export interface CgroupLimits {
  memoryBytes: number;
  /** pids.max: tasks (threads + processes) in the whole sandbox, including its init */
  maxTasks: number;
}

/** The per-sandbox cgroups (possibly none, if nothing is usable). */
export class SandboxCgroup {
  private removed = false;
  constructor(
    readonly dirs: Partial<Record<Controller, string>>,
    private readonly counted = false,
  ) {}

  /** Files to write the wrapper's pid into (`cgroup.procs`), so that everything it execs and forks is inside. */
  procsFiles(): string[] {
    return Object.values(this.dirs).map((d) => path.join(d, 'cgroup.procs'));
  }

  get paths(): string[] {
    return Object.values(this.dirs);
  }

  has(c: Controller): boolean {
    return this.dirs[c] !== undefined;
  }

  /** All pids in any of our cgroups. */
  pids(): number[] {
    const s = new Set<number>();
    for (const d of Object.values(this.dirs)) for (const p of readPids(d)) s.add(p);
    return [...s];
  }

  /** SIGKILL every process in the sandbox cgroups except those listed. */
  killAll(except: readonly number[] = []): number {
    let n = 0;
    for (const pid of this.pids()) {
      if (except.includes(pid)) continue;
      try {
        process.kill(pid, 'SIGKILL');
        n++;
      } catch {
        /* already gone */
      }
    }
    return n;
  }

  /** Number of OOM kills inside the memory cgroup (kernel >= 4.13 `oom_kill` line), -1 if unknown. */
  oomKills(): number {
    const d = this.dirs.memory;
    if (!d) return -1;
    try {
      const m = /^oom_kill (\d+)$/m.exec(fs.readFileSync(path.join(d, 'memory.oom_control'), 'utf8'));
      return m ? Number(m[1]) : -1;
    } catch {
      return -1;
    }
  }

  /** memory.failcnt: how often the limit was hit. */
  memoryFailCount(): number {
    const d = this.dirs.memory;
    if (!d) return -1;
    return readNumber(path.join(d, 'memory.failcnt'));
  }

  memoryPeakBytes(): number {
    const d = this.dirs.memory;
    if (!d) return -1;
    return readNumber(path.join(d, 'memory.max_usage_in_bytes'));
  }

  /** Total CPU time used by every task that ever ran in the sandbox, in ms (-1 if unknown). */
  cpuUsageMs(): number {
    const d = this.dirs.cpuacct;
    if (!d) return -1;
    const ns = readNumber(path.join(d, 'cpuacct.usage'));
    return ns < 0 ? -1 : ns / 1e6;
  }

  /**
   * Wait until the cgroups are empty (killing stragglers), then remove them.
   * Returns false if a cgroup could not be removed within the deadline.
   */
  async remove(deadlineMs = 3000): Promise<boolean> {
    if (this.removed) return true;
    const until = Date.now() + deadlineMs;
    let ok = false;
    for (;;) {
      const left = this.pids();
      if (left.length === 0) {
        ok = Object.values(this.dirs).every((d) => rmdirQuiet(d) || !fs.existsSync(d));
        if (ok) break;
      } else {
        this.killAll();
      }
      if (Date.now() > until) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    this.removed = true;
    if (!this.counted) return ok;
    active--;
    if (active === 0) {
      const { hierarchies } = discover();
      for (const h of hierarchies.values()) rmdirQuiet(h.parent);
    }
    return ok;
  }
}

function readNumber(file: string): number {
  try {
    const v = Number(fs.readFileSync(file, 'utf8').trim());
    return Number.isFinite(v) ? v : -1;
  } catch {
    return -1;
  }
}

function writeFile(file: string, value: string): boolean {
  try {
    fs.writeFileSync(file, value);
    return true;
  } catch {
    return false;
  }
}

/**
 * Create the sandbox's cgroups and set their limits. Controllers that fail are skipped
 * (the sandbox then relies on rlimits for that resource).
 */
export function createSandboxCgroup(label: string, limits: CgroupLimits, enabled: boolean): SandboxCgroup {
  if (!enabled) return new SandboxCgroup({});
  const support = cgroupSupport();
  const { hierarchies } = discover();
  const safeLabel = label.replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 40) || 'sbx';
  const name = `${process.pid}-${safeLabel}-${++seq}-${Math.random().toString(36).slice(2, 8)}`;
  const dirs: Partial<Record<Controller, string>> = {};
  active++;
  for (const c of CONTROLLERS) {
    const h = hierarchies.get(c);
    if (!h || !support[c]) continue;
    const dir = path.join(h.parent, name);
    let made = false;
    for (let attempt = 0; attempt < 3 && !made; attempt++) {
      try {
        fs.mkdirSync(h.parent, { recursive: true });
        fs.mkdirSync(dir);
        made = true;
      } catch (e) {
        // ENOENT: the parent was removed concurrently by an idle sweep; retry.
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') break;
      }
    }
    if (!made) continue;
    let ok = true;
    if (c === 'memory') {
      ok = writeFile(path.join(dir, 'memory.limit_in_bytes'), String(limits.memoryBytes));
      // No swap either (fails harmlessly where swap accounting is off).
      writeFile(path.join(dir, 'memory.memsw.limit_in_bytes'), String(limits.memoryBytes));
      writeFile(path.join(dir, 'memory.swappiness'), '0');
    } else if (c === 'pids') {
      ok = writeFile(path.join(dir, 'pids.max'), String(limits.maxTasks));
    }
    if (ok) dirs[c] = dir;
    else rmdirQuiet(dir);
  }
  return new SandboxCgroup(dirs, true);
}
