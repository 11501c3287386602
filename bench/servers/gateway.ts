/**
 * The EBCC gateway under test, started exactly as `ebcc serve` starts it (startGateway), in a process of
 * its own. With BENCH_TRACE=1 it also timestamps the cold-start path (pool acquire, instance create,
 * anchor launch, stage enclave creation, start, stage runs) and, on request, the phases of warm requests,
 * by wrapping those methods; the wrappers only read performance.now(), and the gateway whose warm latency
 * is compared with the baselines runs without them.
 */
import { writeFile } from 'node:fs/promises';
import { Server, ServerResponse } from 'node:http';
import { Session } from 'node:inspector/promises';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { getAdapter } from '../../adapters/index.ts';
import { migrateDatabase, openDatabase } from '../../db/client.ts';
import { ProcessAnchorExecutor } from '../../runtime/anchor/process-executor.ts';
import { findFunction, versionById } from '../../db/queries/functions.ts';
import { invocations } from '../../db/schema.ts';
import { authenticate, ensureTenant, issueToken } from '../../runtime/auth/tokens.ts';
import { newId } from '../../runtime/ids.ts';
import { parseManifest } from '../../runtime/manifest/index.ts';
import { loadConfig } from '../../runtime/config.ts';
import { startGateway } from '../../runtime/gateway/server.ts';
import { GroupCommitter } from '../../runtime/artifacts/group-commit.ts';
import { CompositeManager } from '../../runtime/lifecycle/manager.ts';
import { LocalPool } from '../../runtime/pool/local-pool.ts';
import { serveHarness } from '../lib/child.ts';

export interface ColdTrace {
  acquire?: [number, number];
  create?: [number, number];
  launch?: [number, number];
  enclaves: [number, number][];
  start?: [number, number];
  runs: [number, number][];
  /** The longest the gateway's event loop was blocked during the pool acquire (create + start), ms. */
  loopMaxDelayMs?: number;
}

/** Timestamps of one warm request through the traced gateway (performance.now() of this process). */
export interface WarmMarks {
  /** The HTTP server emitted 'request' (headers parsed). */
  request: number;
  acquireStart?: number;
  acquireEnd?: number;
  anchorStart?: number;
  anchorEnd?: number;
  /** The first group-commit submit after the anchor answered (the invocation record), and its durability. */
  recordSubmit?: number;
  durable?: number;
  /** The handler ended the response (\`res.end()\`, which writes it to the socket). */
  end?: number;
}

let profiler: Session | undefined;
let warm: { marks: WarmMarks[]; current: WarmMarks | undefined } | undefined;

// The gateway's group committer, found on its first submit, so that the harness can read how many
// transactions (each one fsync) it committed. One Set.add per submit; nothing else changes.
const committers = new Set<GroupCommitter>();
const submit = GroupCommitter.prototype.submit;
GroupCommitter.prototype.submit = function (this: GroupCommitter, ...args: Parameters<typeof submit>) {
  committers.add(this);
  const done = submit.apply(this, args);
  const marks = warm?.current;
  if (marks?.anchorEnd !== undefined && marks.recordSubmit === undefined) {
    marks.recordSubmit = performance.now();
    void done.then(() => (marks.durable = performance.now()));
  }
  return done;
};
const traces = new Map<string, ColdTrace>();
const traceOf = (cid: string): ColdTrace => {
  let t = traces.get(cid);
  if (!t) traces.set(cid, (t = { enclaves: [], runs: [] }));
  return t;
};

function installTracing(): void {
  const now = () => performance.now();
  const loop = monitorEventLoopDelay({ resolution: 1 });
  loop.enable();
  const acquire = LocalPool.prototype.acquire;
  LocalPool.prototype.acquire = async function (this: LocalPool, ...args: Parameters<typeof acquire>) {
    const t0 = now();
    loop.reset();
    const marks = warm?.current;
    if (marks) marks.acquireStart = t0;
    const lease = await acquire.apply(this, args);
    if (marks) marks.acquireEnd = now();
    if (lease.start === 'cold') {
      const trace = traceOf(lease.instance.cid);
      trace.acquire = [t0, now()];
      trace.loopMaxDelayMs = loop.max / 1e6;
    }
    return lease;
  };
  const create = CompositeManager.prototype.create;
  CompositeManager.prototype.create = async function (this: CompositeManager, ...args) {
    const t0 = now();
    const instance = await create.apply(this, args);
    traceOf(instance.cid).create = [t0, now()];
    return instance;
  };
  const start = CompositeManager.prototype.start;
  CompositeManager.prototype.start = async function (this: CompositeManager, ...args) {
    const t0 = now();
    const instance = await start.apply(this, args);
    traceOf(instance.cid).start = [t0, now()];
    return instance;
  };
  const launch = ProcessAnchorExecutor.prototype.launch;
  ProcessAnchorExecutor.prototype.launch = async function (this: ProcessAnchorExecutor, ...args) {
    const t0 = now();
    const anchor = await launch.apply(this, args);
    traceOf(args[0].cid).launch = [t0, now()];
    const invoke = anchor.invoke.bind(anchor);
    anchor.invoke = async (...call) => {
      const marks = warm?.current;
      if (marks) marks.anchorStart = now();
      const result = await invoke(...call);
      if (marks) marks.anchorEnd = now();
      return result;
    };
    return anchor;
  };
  // Each request the server emits while warm tracing is on starts a new set of marks; they are complete
  // when the handler ends the response (res.end writes it to the socket before returning).
  const byResponse = new WeakMap<ServerResponse, WarmMarks>();
  const emit = Server.prototype.emit;
  Server.prototype.emit = function (this: Server, event: string | symbol, ...args: unknown[]) {
    if (event === 'request' && warm) {
      const marks: WarmMarks = { request: now() };
      warm.current = marks;
      warm.marks.push(marks);
      byResponse.set(args[1] as ServerResponse, marks);
    }
    return (emit as (this: Server, event: string | symbol, ...rest: unknown[]) => boolean).call(
      this,
      event,
      ...args,
    );
  } as typeof emit;
  const end = ServerResponse.prototype.end;
  ServerResponse.prototype.end = function (this: ServerResponse, ...args: unknown[]) {
    const marks = byResponse.get(this);
    if (marks && marks.end === undefined) marks.end = now();
    return (end as (this: ServerResponse, ...rest: unknown[]) => ServerResponse).apply(this, args);
  } as typeof end;
}

/**
 * The pieces of the gateway's per-request path, timed one by one on the gateway's own database file
 * (through a second connection, as a second gateway process would have): the two reads and the manifest
 * parse of every invocation, the token check of a non-public function, and one durable group commit
 * of an invocation record. Rounds interleave the pieces.
 */
async function components(
  database: Awaited<ReturnType<typeof openDatabase>>,
  fnName: string,
  token: string,
  rounds: number,
): Promise<Record<string, number[]>> {
  const fn = await findFunction(database.db, fnName);
  if (!fn?.activeVersionId) throw new Error(`no function ${fnName}`);
  const row = await versionById(database.db, fn.activeVersionId);
  if (!row) throw new Error(`no active version of ${fnName}`);
  // The gateway is idle now; let its own writes finish so that the two connections never wait for each other.
  for (const c of committers) await c.flush();
  const committer = new GroupCommitter(database.db);
  const pieces: [string, () => Promise<unknown>][] = [
    ['findFunction', () => findFunction(database.db, fnName)],
    ['versionById', () => versionById(database.db, fn.activeVersionId!)],
    ['parseManifest', async () => parseManifest(row.manifest)],
    [
      'authenticate',
      async () => {
        if (typeof (await authenticate(database.db, token)) === 'string')
          throw new Error('the token was refused');
      },
    ],
    [
      'commit',
      () =>
        committer.submit((tx) =>
          tx.insert(invocations).values({
            id: newId('inv'),
            tenantId: fn.tenantId,
            functionId: 'fn_bench_components',
            versionId: row.id,
            cid: null,
            trigger: 'http',
            start: 'warm',
            status: 'ok',
            httpStatus: 200,
            error: null,
            console: null,
            timings: { acquire: 0.01, anchor: 1 },
            startedAt: Date.now(),
            finishedAt: Date.now(),
          }),
        ),
    ],
  ];
  const samples: Record<string, number[]> = Object.fromEntries(pieces.map(([name]) => [name, []]));
  for (let r = -20; r < rounds; r++) {
    for (let i = 0; i < pieces.length; i++) {
      const [name, run] = pieces[(i + Math.max(0, r)) % pieces.length]!;
      const t0 = performance.now();
      await run();
      if (r >= 0) samples[name]!.push(performance.now() - t0);
    }
  }
  await committer.close();
  return samples;
}

/**
 * Wraps the sim adapter's create and run. The adapter is an instance the gateway configures at start
 * (configureAdapters), so this runs after startGateway, on the instance the gateway will use.
 */
function traceSimAdapter(): void {
  const now = () => performance.now();
  const sim = getAdapter('sim');
  const simCreate = sim.create.bind(sim);
  const simRun = sim.run.bind(sim);
  Object.assign(sim, {
    create: async (...args: Parameters<typeof sim.create>) => {
      const t0 = now();
      const handle = await simCreate(...args);
      traceOf(args[1].cid).enclaves.push([t0, now()]);
      return handle;
    },
    run: async (...args: Parameters<typeof sim.run>) => {
      const t0 = now();
      const result = await simRun(...args);
      const runs = traceOf(args[0].cid).runs;
      if (runs.length < 4) runs.push([t0, now()]);
      return result;
    },
  });
}

try {
  const home = process.env.BENCH_HOME;
  if (!home) throw new Error('BENCH_HOME is not set');
  if (process.env.BENCH_TRACE === '1') installTracing();
  const config = loadConfig({
    EBCC_HOME: home,
    REDIS_URL: process.env.REDIS_URL,
    EBCC_HOST: '127.0.0.1',
    EBCC_PORT: '0',
    EBCC_LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'info',
    ...(process.env.EBCC_ANCHOR_EXECUTOR ? { EBCC_ANCHOR_EXECUTOR: process.env.EBCC_ANCHOR_EXECUTOR } : {}),
  });
  const gateway = await startGateway(config);
  if (process.env.BENCH_TRACE === '1') traceSimAdapter();
  const database = await openDatabase(config.dbUrl);
  await migrateDatabase(database);
  const tenant = await ensureTenant(database.db, 'bench');
  const admin = await issueToken(database.db, {
    tenantId: tenant.id,
    name: 'bench-admin',
    scopes: ['admin'],
  });
  const invoke = await issueToken(database.db, {
    tenantId: tenant.id,
    name: 'bench-invoke',
    scopes: ['invoke'],
  });
  const synchronous = await database.client.execute('PRAGMA synchronous');
  const journal = await database.client.execute('PRAGMA journal_mode');
  serveHarness(
    async (message) => {
      if (message.type === 'trace') {
        const cid = String(message.cid);
        const trace = traces.get(cid);
        traces.delete(cid);
        return { trace: trace ?? null };
      }
      if (message.type === 'warm-start') {
        if (process.env.BENCH_TRACE !== '1') throw new Error('warm tracing needs BENCH_TRACE=1');
        warm = { marks: [], current: undefined };
        return {};
      }
      if (message.type === 'warm-stop') {
        const marks = warm?.marks ?? [];
        warm = undefined;
        return { marks };
      }
      if (message.type === 'components') {
        return {
          samples: await components(database, String(message.fn), invoke.token, Number(message.rounds)),
        };
      }
      if (message.type === 'commits') {
        let batches = 0;
        let writes = 0;
        for (const c of committers) {
          await c.flush();
          batches += c.batches;
          writes += c.writes;
        }
        return { batches, writes };
      }
      if (message.type === 'profile-start') {
        profiler ??= new Session();
        profiler.connect();
        await profiler.post('Profiler.enable');
        await profiler.post('Profiler.setSamplingInterval', { interval: Number(message.intervalUs ?? 200) });
        await profiler.post('Profiler.start');
        return {};
      }
      if (message.type === 'profile-stop') {
        if (!profiler) throw new Error('the profiler was not started');
        const { profile } = await profiler.post('Profiler.stop');
        await writeFile(String(message.path), JSON.stringify(profile));
        profiler.disconnect();
        profiler = undefined;
        return {};
      }
      if (message.type === 'db-bytes') {
        // The logical database size (as committed, WAL included) less its free pages, and the blob table.
        const one = async (sql: string) => Number((await database.client.execute(sql)).rows[0]![0]);
        const pageSize = await one('PRAGMA page_size');
        return {
          usedBytes: ((await one('PRAGMA page_count')) - (await one('PRAGMA freelist_count'))) * pageSize,
          blobBytes: await one('select coalesce(sum(size), 0) from blobs'),
          invocations: await one('select count(*) from invocations'),
          executions: await one('select count(*) from stage_executions'),
        };
      }
      if (message.type === 'db-stats') {
        const invocations = await database.client.execute(
          `select f.name as fn, i.start as start, i.status as status, count(*) as n
             from invocations i join functions f on f.id = i.function_id
            group by f.name, i.start, i.status`,
        );
        const executions = await database.client.execute(
          `select f.name as fn, count(*) as n, count(x.evidence) as signed from stage_executions x
             join invocations i on i.id = x.invocation_id join functions f on f.id = i.function_id
            group by f.name`,
        );
        const timings = await database.client.execute(
          `select i.id as id, f.name as fn, i.start as start, i.timings as timings
             from invocations i join functions f on f.id = i.function_id`,
        );
        return {
          invocations: invocations.rows.map((r) => ({ ...r })),
          executions: executions.rows.map((r) => ({ ...r })),
          timings: timings.rows.map((r) => ({
            id: String(r.id),
            fn: String(r.fn),
            start: String(r.start),
            timings: JSON.parse(String(r.timings)) as Record<string, number>,
          })),
        };
      }
      throw new Error(`unknown request ${String(message.type)}`);
    },
    async () => {
      await gateway.close();
      database.close();
    },
  );
  process.send!({
    type: 'ready',
    url: gateway.url,
    adminToken: admin.token,
    invokeToken: invoke.token,
    synchronous: Number(synchronous.rows[0]?.[0]),
    journalMode: String(journal.rows[0]?.[0]),
  });
} catch (error) {
  process.send!({ type: 'fatal', error: (error as Error).stack ?? String(error) });
}
