/**
 * Benchmark 2: a warm HTTP invocation through the EBCC gateway (an anchor that calls no stage, and one
 * that calls one trivial persistent stage) against the same handlers on a plain Hono app and on plain
 * node:http. Sequential requests over one keep-alive connection per target, from this process; the
 * servers each run in a process of their own.
 */
import { join } from 'node:path';
import { startChild, type ChildServer } from './lib/child.ts';
import { FUNCTIONS_DIR, startGatewayEnv, type GatewayEnv } from './lib/gateway-env.ts';
import { KeepAliveClient, type HttpResult } from './lib/http-client.ts';
import { summarizeProfile, type ProfileSummary } from './lib/profile.ts';
import { interleaved, rotate } from './lib/rounds.ts';
import type { WarmMarks } from './servers/gateway.ts';

export const HTTP_TARGETS = [
  'ebcc-nostage',
  'ebcc-stage',
  'ebcc-stage-auth',
  'hono-nostage',
  'hono-stage',
  'http-nostage',
  'http-stage',
] as const;
export type HttpTarget = (typeof HTTP_TARGETS)[number];
export const EBCC_TARGETS = ['ebcc-nostage', 'ebcc-stage', 'ebcc-stage-auth'] as const;
export type EbccTarget = (typeof EBCC_TARGETS)[number];

const FUNCTION_OF: Record<EbccTarget, string> = {
  'ebcc-nostage': 'bench-nostage',
  'ebcc-stage': 'bench-stage',
  'ebcc-stage-auth': 'bench-stage-auth',
};

/** The phases of a warm request through a traced gateway; they add up to the client's latency. */
export const WARM_PHASES = ['before', 'acquire', 'anchor', 'record', 'respond', 'outside'] as const;
export type WarmPhase = (typeof WARM_PHASES)[number];
export const WARM_PHASE_TEXT: Record<WarmPhase, string> = {
  before:
    "from the server's `request` event to the pool: Hono routing, function lookups, manifest parse, token check, reading the body",
  acquire: 'the pool hands over the warm instance',
  anchor: 'the anchor round trip (with the stage request, if any)',
  record: 'the invocation record (and the stage artifacts) made durable',
  respond: 'building the response until `res.end()` writes it (trace headers, the request log line)',
  outside: 'outside the handler: the client, the kernel, HTTP parsing up to the `request` event, delivery',
};

export interface HttpBenchResult {
  rounds: number;
  warmupRounds: number;
  samples: Record<HttpTarget, number[]>;
  connections: Record<HttpTarget, number>;
  /** The gateway's own timings of the measured invocations (from their invocation records). */
  ebccTimings: Record<EbccTarget, { acquire: number[]; anchor: number[] }>;
  /** Per-request phases of warm requests on a second, traced gateway, for nostage and stage. */
  attribution: { rounds: number; phases: Record<'ebcc-nostage' | 'ebcc-stage', Record<WarmPhase, number[]>> };
  /** The gateway's per-request pieces timed one by one (see servers/gateway.ts `components`). */
  components: Record<string, number[]>;
  durability: { fn: string; requests: number; recorded: number; executions: number; signed: number }[];
  database: { synchronous: string; journalMode: string };
  /** From the profiling phase: its CPU profile, and the transactions committed per request of each target. */
  profile:
    | (ProfileSummary & { requests: number; commitsPerRequest: Partial<Record<EbccTarget, number>> })
    | undefined;
}

interface Target {
  name: HttpTarget;
  url: string;
  kind: 'nostage' | 'stage';
  ebcc: boolean;
  headers: Record<string, string>;
  client: KeepAliveClient;
}

/** Checks one response; throws (so the run fails) when it is not the expected answer. */
function check(target: Target, result: HttpResult, n: number, measured: boolean): string | undefined {
  const what = `${target.name} request ${n}`;
  if (result.status !== 200)
    throw new Error(`${what}: HTTP ${result.status}: ${result.body.toString('utf8')}`);
  const body = JSON.parse(result.body.toString('utf8')) as {
    n?: number;
    ok?: boolean;
    stage?: { n?: number; echoed?: boolean };
  };
  const ok =
    body.n === n &&
    (target.kind === 'nostage' ? body.ok === true : body.stage?.echoed === true && body.stage.n === n);
  if (!ok) throw new Error(`${what}: unexpected answer ${result.body.toString('utf8')}`);
  if (!target.ebcc) return undefined;
  if (measured && result.headers['x-ebcc-start'] !== 'warm')
    throw new Error(`${what}: expected a warm start, got ${String(result.headers['x-ebcc-start'])}`);
  const id = result.headers['x-ebcc-invocation'];
  if (typeof id !== 'string') throw new Error(`${what}: no x-ebcc-invocation header`);
  return id;
}

async function deployAll(gateway: GatewayEnv): Promise<void> {
  await gateway.deploy(join(FUNCTIONS_DIR, 'http-nostage'));
  await gateway.deploy(join(FUNCTIONS_DIR, 'http-stage'));
  await gateway.deploy(join(FUNCTIONS_DIR, 'http-stage'), (m) => {
    m.name = 'bench-stage-auth';
    m.triggers.http.public = false;
  });
}

const SYNC_NAMES: Record<number, string> = { 0: 'OFF', 1: 'NORMAL', 2: 'FULL', 3: 'EXTRA' };

export async function runHttpBench(options: {
  rounds: number;
  warmupRounds: number;
  profileRequests: number;
  componentRounds: number;
  attributionRounds: number;
  redisUrl: string;
  outDir: string;
  log: (line: string) => void;
}): Promise<HttpBenchResult> {
  const gateway = await startGatewayEnv({
    redisUrl: options.redisUrl,
    logFile: join(options.outDir, 'http-gateway.log'),
  });
  const children: ChildServer<{ url: string }>[] = [];
  const targets: Target[] = [];
  try {
    await deployAll(gateway);
    for (const kind of ['hono', 'http'] as const) {
      children.push(
        await startChild<{ url: string }>(join(import.meta.dirname, 'servers', 'plain.ts'), {
          env: { BENCH_SERVER: kind },
          logFile: join(options.outDir, `http-${kind}.log`),
        }),
      );
    }
    const [hono, plain] = children.map((c) => c.ready.url) as [string, string];
    const gw = gateway.child.ready.url;
    const add = (name: HttpTarget, url: string, headers: Record<string, string> = {}) =>
      targets.push({
        name,
        url,
        kind: name.endsWith('nostage') ? 'nostage' : 'stage',
        ebcc: name.startsWith('ebcc'),
        headers,
        client: new KeepAliveClient(),
      });
    add('ebcc-nostage', `${gw}/fn/bench-nostage`);
    add('ebcc-stage', `${gw}/fn/bench-stage`);
    add('ebcc-stage-auth', `${gw}/fn/bench-stage-auth`, {
      authorization: `Bearer ${gateway.child.ready.invokeToken}`,
    });
    add('hono-nostage', `${hono}/nostage`);
    add('hono-stage', `${hono}/stage`);
    add('http-nostage', `${plain}/nostage`);
    add('http-stage', `${plain}/stage`);

    // The invocation ids of the measured requests, in round order, so that the gateway's own timings can be
    // matched with the client's sample of the same request.
    const measuredIds = new Map<EbccTarget, string[]>(EBCC_TARGETS.map((t) => [t, []]));
    let sequence = 0;
    options.log(
      `  ${options.warmupRounds} warm-up + ${options.rounds} interleaved rounds over ${targets.length} targets`,
    );
    const results = await interleaved(
      targets.map((target) => ({
        name: target.name,
        run: async (round: number) => {
          const n = ++sequence;
          const result = await target.client.post(
            target.url,
            JSON.stringify({ n, note: 'bench' }),
            target.headers,
          );
          const id = check(target, result, n, round >= 0);
          if (id && round >= 0) measuredIds.get(target.name as EbccTarget)!.push(id);
          return result.ms;
        },
      })),
      { warmupRounds: options.warmupRounds, rounds: options.rounds },
    );
    const requests = options.warmupRounds + options.rounds;
    const stats = await gateway.stats();
    const durability = EBCC_TARGETS.map((t) => {
      const fn = FUNCTION_OF[t];
      const recorded = stats.invocations
        .filter((r) => r.fn === fn && r.status === 'ok')
        .reduce((a, r) => a + r.n, 0);
      const row = stats.executions.find((r) => r.fn === fn);
      return { fn, requests, recorded, executions: row?.n ?? 0, signed: row?.signed ?? 0 };
    });
    for (const d of durability) {
      const wantExecutions = d.fn === 'bench-nostage' ? 0 : d.requests;
      if (d.recorded !== d.requests || d.executions !== wantExecutions)
        throw new Error(
          `durability check failed for ${d.fn}: ${d.requests} requests answered, ${d.recorded} invocation records and ${d.executions} stage executions in the database`,
        );
    }
    const ebccTimings = Object.fromEntries(
      EBCC_TARGETS.map((t) => {
        const byId = new Map(stats.timings.map((r) => [r.id, r]));
        const rows = measuredIds.get(t)!.map((id) => {
          const row = byId.get(id);
          if (!row) throw new Error(`${t}: no invocation record for the answered request ${id}`);
          return row;
        });
        if (rows.length !== options.rounds)
          throw new Error(`${t}: ${rows.length} invocation ids for ${options.rounds} measured requests`);
        const pick = (key: string) =>
          rows.map((r) => {
            const v = r.timings[key];
            if (typeof v !== 'number') throw new Error(`${t}: invocation ${r.id} has no "${key}" timing`);
            return v;
          });
        return [t, { acquire: pick('acquire'), anchor: pick('anchor') }];
      }),
    ) as HttpBenchResult['ebccTimings'];
    const samples = Object.fromEntries(
      HTTP_TARGETS.map((t) => [t, results.get(t)!.map((r) => r.sample)]),
    ) as Record<HttpTarget, number[]>;
    const connections = Object.fromEntries(targets.map((t) => [t.name, t.client.connections])) as Record<
      HttpTarget,
      number
    >;
    for (const [name, n] of Object.entries(connections))
      if (n !== 1) throw new Error(`${name}: ${n} connections were opened; keep-alive did not hold`);
    for (const t of targets) t.client.close();

    let profile: HttpBenchResult['profile'];
    const commitsPerRequest: Partial<Record<EbccTarget, number>> = {};
    if (options.profileRequests > 0) {
      options.log(
        `  profiling the gateway over ${options.profileRequests} more warm requests per EBCC target`,
      );
      const path = join(options.outDir, 'gateway-warm.cpuprofile');
      const ebcc = targets.filter((t) => t.ebcc).map((t) => ({ ...t, client: new KeepAliveClient() }));
      const commits = () => gateway.child.ask<{ batches: number; writes: number }>({ type: 'commits' });
      await gateway.child.ask({ type: 'profile-start', intervalUs: 100 });
      const t0 = performance.now();
      // One target after the other, so that the committed transactions can be counted per target.
      for (const target of ebcc) {
        const before = await commits();
        for (let i = 0; i < options.profileRequests; i++) {
          const n = ++sequence;
          const result = await target.client.post(
            target.url,
            JSON.stringify({ n, note: 'bench' }),
            target.headers,
          );
          check(target, result, n, true);
        }
        const after = await commits();
        commitsPerRequest[target.name as EbccTarget] =
          (after.batches - before.batches) / options.profileRequests;
      }
      const wallMs = performance.now() - t0;
      await gateway.child.ask({ type: 'profile-stop', path });
      for (const t of ebcc) t.client.close();
      const summary = await summarizeProfile(path);
      if (summary.wallMs < wallMs * 0.5)
        throw new Error('the CPU profile does not cover the profiled requests');
      profile = { ...summary, requests: options.profileRequests * ebcc.length, commitsPerRequest };
    }

    options.log("  timing the pieces of the gateway's request path");
    const { samples: components } = await gateway.child.ask<{ samples: Record<string, number[]> }>({
      type: 'components',
      fn: 'bench-stage',
      rounds: options.componentRounds,
    });
    for (const [name, values] of Object.entries(components))
      if (values.length !== options.componentRounds)
        throw new Error(`component ${name}: ${values.length} samples`);

    const attribution = await attribute(options);

    return {
      attribution,
      components,
      rounds: options.rounds,
      warmupRounds: options.warmupRounds,
      samples,
      connections,
      ebccTimings,
      durability,
      database: {
        synchronous: SYNC_NAMES[gateway.child.ready.synchronous] ?? String(gateway.child.ready.synchronous),
        journalMode: gateway.child.ready.journalMode,
      },
      profile,
    };
  } finally {
    for (const t of targets) t.client.close();
    for (const c of children) await c.stop();
    await gateway.close();
  }
}

/**
 * Where a warm request's time goes: the same functions on a second gateway started with BENCH_TRACE=1,
 * whose wrappers timestamp each request's phases (see servers/gateway.ts). Kept apart from the measured
 * gateway, so that the comparison with the baselines is of an uninstrumented gateway.
 */
async function attribute(options: {
  attributionRounds: number;
  redisUrl: string;
  outDir: string;
  log: (line: string) => void;
}): Promise<HttpBenchResult['attribution']> {
  options.log(`  attributing the warm path on a traced gateway (${options.attributionRounds} rounds)`);
  const gateway = await startGatewayEnv({
    redisUrl: options.redisUrl,
    logFile: join(options.outDir, 'http-traced-gateway.log'),
    trace: true,
  });
  const targets: Target[] = (['ebcc-nostage', 'ebcc-stage'] as const).map((name) => ({
    name,
    url: `${gateway.child.ready.url}/fn/${FUNCTION_OF[name]}`,
    kind: name === 'ebcc-nostage' ? 'nostage' : 'stage',
    ebcc: true,
    headers: {},
    client: new KeepAliveClient(),
  }));
  try {
    await gateway.deploy(join(FUNCTIONS_DIR, 'http-nostage'));
    await gateway.deploy(join(FUNCTIONS_DIR, 'http-stage'));
    let n = 0;
    const send = async (target: Target, measured: boolean) => {
      const id = ++n;
      const result = await target.client.post(target.url, JSON.stringify({ n: id, note: 'bench' }));
      check(target, result, id, measured);
      return result.ms;
    };
    for (let i = 0; i < 30; i++) for (const target of targets) await send(target, i > 0);
    await gateway.child.ask({ type: 'warm-start' });
    const order: { target: Target; ms: number }[] = [];
    for (let round = 0; round < options.attributionRounds; round++)
      for (const target of rotate(targets, round)) order.push({ target, ms: await send(target, true) });
    const { marks } = await gateway.child.ask<{ marks: WarmMarks[] }>({ type: 'warm-stop' });
    if (marks.length !== order.length)
      throw new Error(`the traced gateway recorded ${marks.length} requests for ${order.length} sent`);
    const phases = Object.fromEntries(
      targets.map((t) => [t.name, Object.fromEntries(WARM_PHASES.map((p) => [p, [] as number[]]))]),
    ) as HttpBenchResult['attribution']['phases'];
    order.forEach(({ target, ms }, i) => {
      const m = marks[i]!;
      const { acquireStart, acquireEnd, anchorEnd, durable, end } = m;
      if (
        acquireStart === undefined ||
        acquireEnd === undefined ||
        anchorEnd === undefined ||
        durable === undefined ||
        end === undefined
      )
        throw new Error(`request ${i} of the attribution phase lacks a timestamp: ${JSON.stringify(m)}`);
      const p = phases[target.name as 'ebcc-nostage' | 'ebcc-stage'];
      p.before.push(acquireStart - m.request);
      p.acquire.push(acquireEnd - acquireStart);
      p.anchor.push(anchorEnd - acquireEnd);
      p.record.push(durable - anchorEnd);
      p.respond.push(end - durable);
      p.outside.push(ms - (end - m.request));
    });
    return { rounds: options.attributionRounds, phases };
  } finally {
    for (const t of targets) t.client.close();
    await gateway.close();
  }
}
