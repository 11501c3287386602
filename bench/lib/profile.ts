/** Reads a V8 .cpuprofile (node --cpu-prof) and attributes self time to packages and source files. */
import { readFile } from 'node:fs/promises';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

export interface ProfileSummary {
  /** Wall time covered by the profile. */
  wallMs: number;
  /**
   * Time the main thread was not idle (every sample except `(idle)` and the inspector's own). The
   * profiler samples wall time: a thread blocked in a synchronous call (a SQLite fsync, a write that
   * wakes another process on a busy machine) counts as busy in that call.
   */
  busyMs: number;
  gcMs: number;
  /** Self time by package / module group, busiest first. */
  groups: { group: string; ms: number; share: number }[];
  /** Self time by function, busiest first. */
  functions: { fn: string; where: string; ms: number; share: number }[];
}

const REPO = new URL('../../', import.meta.url).href;

/** Which bucket a call frame belongs to: an npm package, a node core area, or a repository file. */
export function groupOf(url: string, functionName: string): string {
  if (!url) {
    if (functionName === '(garbage collector)') return '(garbage collector)';
    if (functionName === '(idle)') return '(idle)';
    if (functionName === '(program)') return '(program: native code, not attributed)';
    return `(native) ${functionName || 'anonymous'}`;
  }
  const nm = url.lastIndexOf('/node_modules/');
  if (nm >= 0) {
    const rest = url.slice(nm + '/node_modules/'.length).split('/');
    return `npm:${rest[0]!.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]}`;
  }
  if (url.startsWith('node:')) {
    const name = url.slice('node:'.length).replace(/^internal\//, '');
    const area = name.split('/')[0]!.replace(/^_/, '');
    if (/^(http|_http|https)/.test(name) || area.startsWith('http')) return 'node:http';
    if (area === 'streams' || name.startsWith('stream')) return 'node:streams';
    if (area === 'deps') return `node:deps/${name.split('/')[1] ?? ''}`;
    return `node:${area}`;
  }
  if (url.startsWith(REPO)) return url.slice(REPO.length).replace(/\?.*$/, '');
  return url;
}

export async function summarizeProfile(path: string, top = 15): Promise<ProfileSummary> {
  const profile = JSON.parse(await readFile(path, 'utf8')) as CpuProfile;
  if (!profile.samples?.length) throw new Error(`the CPU profile ${path} holds no samples`);
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  // Samples taken while the inspector itself was working (stopping the profile) are not the gateway's.
  const parent = new Map<number, number>();
  for (const n of profile.nodes)
    for (const c of (n as ProfileNode & { children?: number[] }).children ?? []) parent.set(c, n.id);
  const inspector = new Set<number>();
  for (const n of profile.nodes) {
    for (let at: number | undefined = n.id; at !== undefined; at = parent.get(at)) {
      if (byId.get(at)!.callFrame.url === 'node:inspector') {
        inspector.add(n.id);
        break;
      }
    }
  }
  const selfUs = new Map<number, number>();
  // timeDeltas[i] is the time between sample i-1 and sample i; it is charged to sample i.
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i]!;
    if (inspector.has(id)) continue;
    selfUs.set(id, (selfUs.get(id) ?? 0) + Math.max(0, profile.timeDeltas[i] ?? 0));
  }
  const groups = new Map<string, number>();
  const functions = new Map<string, { where: string; us: number }>();
  let idleUs = 0;
  let totalUs = 0;
  let gcUs = 0;
  for (const [id, us] of selfUs) {
    const frame = byId.get(id)!.callFrame;
    totalUs += us;
    const group = groupOf(frame.url, frame.functionName);
    if (group === '(idle)') {
      idleUs += us;
      continue;
    }
    if (group === '(garbage collector)') gcUs += us;
    groups.set(group, (groups.get(group) ?? 0) + us);
    const key = `${frame.functionName || '(anonymous)'}\u0000${group}:${frame.lineNumber + 1}`;
    const entry = functions.get(key) ?? { where: `${group}:${frame.lineNumber + 1}`, us: 0 };
    entry.us += us;
    functions.set(key, entry);
  }
  const busyUs = totalUs - idleUs;
  if (busyUs <= 0) throw new Error(`the CPU profile ${path} has no busy samples`);
  return {
    wallMs: (profile.endTime - profile.startTime) / 1000,
    busyMs: busyUs / 1000,
    gcMs: gcUs / 1000,
    groups: [...groups]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([group, us]) => ({ group, ms: us / 1000, share: us / busyUs })),
    functions: [...functions]
      .sort((a, b) => b[1].us - a[1].us)
      .slice(0, top)
      .map(([key, v]) => ({
        fn: key.split('\u0000')[0]!,
        where: v.where,
        ms: v.us / 1000,
        share: v.us / busyUs,
      })),
  };
}
