/**
 * Benchmark 3: cold start against warm start, through the gateway. Cold: the function version has no
 * instance (the previous one was deleted with DELETE /v1/instances/:cid?force=true, or the version was
 * just deployed), so the request pays create + start + the first invocation. Warm: the next request, on
 * the instance the cold one made. The gateway runs with BENCH_TRACE=1, which timestamps the phases.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { interpreterBinds, runSandboxed } from '../runtime/sandbox/index.ts';
import type { ColdTrace } from './servers/gateway.ts';
import { FUNCTIONS_DIR, startGatewayEnv, type GatewayEnv } from './lib/gateway-env.ts';
import { KeepAliveClient, type HttpResult } from './lib/http-client.ts';
import { interleaved } from './lib/rounds.ts';

export const COLD_VARIANTS = ['stage', 'nostage', 'new-version'] as const;
export type ColdVariant = (typeof COLD_VARIANTS)[number];

export interface ColdSample {
  round: number;
  /** Client-measured latency of the cold request. */
  coldMs: number;
  /** Client-measured latency of the warm request right after it, on the same instance. */
  warmMs: number;
  /** The phases of the cold request (ms); they add up to coldMs. */
  phases: {
    /** Pool acquire start to anchor launch start: function lookup, loadVersion, the instance record. */
    prepare: number;
    /** Anchor launch (sandbox + node + harness + module load), in parallel with stage enclave creation. */
    launch: number;
    /** After launch: record `created`, start, record `running`. */
    startup: number;
    /** The anchor's invocation, including the first stage request (from the invocation record). */
    invocation: number;
    /** Everything else the client saw: HTTP, routing, lookups before acquire, the durable invocation record. */
    other: number;
  };
  /** Anchor launch alone (executor.launch), ms. */
  anchorLaunchMs: number;
  /** Stage enclave creation (adapter.create of persistent stages at prepare), ms; 0 when there is none. */
  enclaveCreateMs: number;
  /** The first stage request of the instance (adapter.run), ms; undefined for functions that call none. */
  firstStageRunMs: number | undefined;
  /** The longest the gateway's event loop was blocked during create + start, ms. */
  loopMaxDelayMs: number;
}

/**
 * Reference floors, measured in the same rounds: what a process start costs on this machine with
 * nothing of EBCC around it.
 */
export const FLOORS = ['spawn-call', 'node', 'sandbox', 'sandbox-node', 'sandbox-node-fetch'] as const;
export type Floor = (typeof FLOORS)[number];
export const FLOOR_LABELS: Record<Floor, string> = {
  'spawn-call':
    "the synchronous part of `child_process.spawn('/bin/true')` in the harness process (fork + exec)",
  node: '`node -e 0`, no sandbox, empty environment',
  sandbox: "spawnSandboxed(`/bin/true`) with the anchor's limits",
  'sandbox-node': "spawnSandboxed(`node -e 0`) with the anchor's limits",
  'sandbox-node-fetch': 'the same, evaluating `new Request(…)` (Node loads its fetch classes lazily)',
};

export interface ColdBenchResult {
  rounds: number;
  settleMs: number;
  samples: Record<ColdVariant, ColdSample[]>;
  floors: Record<Floor, number[]>;
}

const MiB = 1024 * 1024;
const FLOOR_LIMITS = {
  memoryBytes: 128 * MiB + 96 * MiB,
  cpuMs: 2_000_000,
  wallMs: 30_000,
  maxProcs: 64,
  maxOutputBytes: MiB,
};

export async function floor(kind: Floor): Promise<number> {
  const t0 = performance.now();
  if (kind === 'spawn-call') {
    const child = spawn('/bin/true', [], { env: {}, stdio: 'ignore' });
    const ms = performance.now() - t0;
    const code = await new Promise<number | null>((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', resolve);
    });
    if (code !== 0) throw new Error(`/bin/true exited with ${code}`);
    return ms;
  }
  if (kind === 'node') {
    const code = await new Promise<number | null>((resolve, reject) => {
      const child = spawn(process.execPath, ['-e', '0'], { env: {}, stdio: 'ignore' });
      child.once('error', reject);
      child.once('exit', resolve);
    });
    if (code !== 0) throw new Error(`node -e 0 exited with ${code}`);
    return performance.now() - t0;
  }
  const result = await runSandboxed({
    argv:
      kind === 'sandbox'
        ? ['/bin/true']
        : [
            process.execPath,
            '-e',
            kind === 'sandbox-node-fetch' ? 'new Request("http://ebcc.invalid/")' : '0',
          ],
    binds: interpreterBinds(),
    limits: FLOOR_LIMITS,
  });
  if (result.exit.reason !== 'exit' || result.exit.code !== 0)
    throw new Error(`floor ${kind} failed: ${JSON.stringify(result.exit)} ${result.stderr.toString('utf8')}`);
  return performance.now() - t0;
}

const FN: Record<ColdVariant, string> = {
  stage: 'bench-stage',
  nostage: 'bench-nostage',
  'new-version': 'bench-fresh',
};

function checkAnswer(variant: ColdVariant, result: HttpResult, n: number, start: 'cold' | 'warm'): string {
  const what = `cold-start benchmark, ${variant}, ${start} request ${n}`;
  if (result.status !== 200)
    throw new Error(`${what}: HTTP ${result.status}: ${result.body.toString('utf8')}`);
  const body = JSON.parse(result.body.toString('utf8')) as { n?: number };
  if (body.n !== n) throw new Error(`${what}: unexpected answer ${result.body.toString('utf8')}`);
  if (result.headers['x-ebcc-start'] !== start)
    throw new Error(`${what}: expected a ${start} start, got ${String(result.headers['x-ebcc-start'])}`);
  const cid = result.headers['x-ebcc-cid'];
  if (typeof cid !== 'string') throw new Error(`${what}: no x-ebcc-cid header`);
  return cid;
}

const span = (s: [number, number] | undefined, what: string): [number, number] => {
  if (!s) throw new Error(`the cold-start trace has no ${what}`);
  return s;
};

export async function runColdBench(options: {
  rounds: number;
  settleMs: number;
  redisUrl: string;
  outDir: string;
  log: (line: string) => void;
}): Promise<ColdBenchResult> {
  const gateway: GatewayEnv = await startGatewayEnv({
    redisUrl: options.redisUrl,
    logFile: join(options.outDir, 'cold-gateway.log'),
    trace: true,
  });
  const client = new KeepAliveClient();
  const admin = { authorization: `Bearer ${gateway.child.ready.adminToken}` };
  const url = gateway.child.ready.url;
  try {
    await gateway.deploy(join(FUNCTIONS_DIR, 'http-stage'));
    await gateway.deploy(join(FUNCTIONS_DIR, 'http-nostage'));
    const editFresh = (version: string) => (m: Record<string, any>) => {
      m.name = FN['new-version'];
      m.version = version;
    };
    await gateway.deploy(join(FUNCTIONS_DIR, 'http-stage'), editFresh('0.0.0'));
    const live = new Map<ColdVariant, string>();
    let sequence = 0;
    const invocationIds = new Map<string, { variant: ColdVariant; round: number }>();
    const pending: {
      variant: ColdVariant;
      sample: Omit<ColdSample, 'phases'> & { invocationId: string };
      trace: ColdTrace;
    }[] = [];

    const measure = async (variant: ColdVariant, round: number) => {
      const previous = live.get(variant);
      if (variant === 'new-version')
        await gateway.deploy(join(FUNCTIONS_DIR, 'http-stage'), editFresh(`1.0.${round + 1000}`));
      if (previous) {
        const deleted = await client.send(
          'DELETE',
          `${url}/v1/instances/${previous}?force=true`,
          undefined,
          admin,
        );
        if (deleted.status !== 204)
          throw new Error(
            `deleting instance ${previous}: HTTP ${deleted.status} ${deleted.body.toString('utf8')}`,
          );
        live.delete(variant);
      }
      await new Promise((r) => setTimeout(r, options.settleMs));
      const n = ++sequence;
      const cold = await client.post(`${url}/fn/${FN[variant]}`, JSON.stringify({ n }));
      const cid = checkAnswer(variant, cold, n, 'cold');
      live.set(variant, cid);
      const m = ++sequence;
      const warm = await client.post(`${url}/fn/${FN[variant]}`, JSON.stringify({ n: m }));
      if (checkAnswer(variant, warm, m, 'warm') !== cid)
        throw new Error(`${variant}: the warm request went to another instance than the cold one`);
      const { trace } = await gateway.child.ask<{ trace: ColdTrace | null }>({ type: 'trace', cid });
      if (!trace) throw new Error(`${variant}: the gateway recorded no cold-start trace for ${cid}`);
      const invocationId = String(cold.headers['x-ebcc-invocation']);
      invocationIds.set(invocationId, { variant, round });
      const launch = span(trace.launch, 'anchor launch');
      const enclaves = trace.enclaves.reduce((a, [s, e]) => a + (e - s), 0);
      const firstRun = trace.runs[0];
      if (variant !== 'nostage' && !firstRun) throw new Error(`${variant}: the trace has no stage run`);
      if (variant !== 'nostage' && trace.enclaves.length !== 1)
        throw new Error(
          `${variant}: expected one persistent enclave at create, saw ${trace.enclaves.length}`,
        );
      return {
        sample: {
          round,
          coldMs: cold.ms,
          warmMs: warm.ms,
          anchorLaunchMs: launch[1] - launch[0],
          enclaveCreateMs: enclaves,
          firstStageRunMs: firstRun ? firstRun[1] - firstRun[0] : undefined,
          loopMaxDelayMs: trace.loopMaxDelayMs ?? NaN,
          invocationId,
        },
        trace,
      };
    };

    options.log(
      `  ${options.rounds} interleaved rounds of ${COLD_VARIANTS.join(', ')} (cold, then warm) and the floors ${FLOORS.join(', ')}`,
    );
    const floors = Object.fromEntries(FLOORS.map((f) => [f, [] as number[]])) as Record<Floor, number[]>;
    await interleaved(
      [
        ...COLD_VARIANTS.map((variant) => ({
          name: variant,
          run: async (round: number) => {
            const { sample, trace } = await measure(variant, round);
            if (round >= 0) pending.push({ variant, sample, trace });
            return sample.coldMs;
          },
        })),
        ...FLOORS.map((kind) => ({
          name: `floor:${kind}`,
          run: async (round: number) => {
            await new Promise((r) => setTimeout(r, options.settleMs));
            const ms = await floor(kind);
            if (round >= 0) floors[kind].push(ms);
            return ms;
          },
        })),
      ],
      { warmupRounds: 1, rounds: options.rounds },
    );

    const stats = await gateway.stats();
    const timingsById = new Map(stats.timings.map((t) => [t.id, t]));
    const samples = Object.fromEntries(COLD_VARIANTS.map((v) => [v, [] as ColdSample[]])) as Record<
      ColdVariant,
      ColdSample[]
    >;
    for (const { variant, sample, trace } of pending) {
      const record = timingsById.get(sample.invocationId);
      if (!record) throw new Error(`${variant}: no invocation record for ${sample.invocationId}`);
      if (record.start !== 'cold')
        throw new Error(`${variant}: invocation ${sample.invocationId} is not recorded as cold`);
      const { acquire: acquireMs, anchor: anchorMs } = record.timings;
      if (typeof acquireMs !== 'number' || typeof anchorMs !== 'number')
        throw new Error(`${variant}: invocation ${sample.invocationId} lacks acquire/anchor timings`);
      const acquire = span(trace.acquire, 'pool acquire');
      const launch = span(trace.launch, 'anchor launch');
      const launched = Math.max(launch[1], ...trace.enclaves.map(([, e]) => e));
      const phases = {
        prepare: launch[0] - acquire[0],
        launch: launched - launch[0],
        startup: acquire[1] - launched,
        invocation: anchorMs,
        other: sample.coldMs - (acquire[1] - acquire[0]) - anchorMs,
      };
      for (const [k, v] of Object.entries(phases))
        if (!Number.isFinite(v) || v < -0.5) throw new Error(`${variant}: cold-start phase ${k} is ${v} ms`);
      const { invocationId: _id, ...rest } = sample;
      samples[variant].push({ ...rest, phases });
    }
    return { rounds: options.rounds, settleMs: options.settleMs, samples, floors };
  } finally {
    client.close();
    await gateway.close();
  }
}
