/**
 * Benchmark 1: one stage request through EBCC (InstanceStages.invoke with a real GroupCommitter on a
 * real libSQL file and a real EidAllocator) against the same stage process in the same sandbox driven
 * directly (spawnSandboxed plus the framing protocol, nothing else).
 */
import { createHash } from 'node:crypto';
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { count } from 'drizzle-orm';
import * as adapters from '../adapters/index.ts';
import type { EnclaveHandle, StageImage } from '../adapters/index.ts';
import { enclaveSandbox } from '../adapters/sim/launch.ts';
import { measureSimStage } from '../adapters/sim/measure.ts';
import { migrateDatabase, openDatabase } from '../db/client.ts';
import { stageExecutions } from '../db/schema.ts';
import { GroupCommitter } from '../runtime/artifacts/group-commit.ts';
import { runSandboxed, spawnSandboxed, type SandboxProcess } from '../runtime/sandbox/index.ts';
import { InstanceStages, type StageBinding, type StageOutcome } from '../runtime/stages/dispatcher.ts';
import { EidAllocator } from '../runtime/stages/eid-allocator.ts';
import { compileRequestSchema } from '../runtime/stages/request-schema.ts';
import { interleaved } from './lib/rounds.ts';

const STAGE_DIR = join(import.meta.dirname, 'functions', 'work-stage');

export interface StageSample {
  /** End to end: for EBCC until the artifacts are durable; for native until the response frame is read. */
  ms: number;
  /** EBCC only: until invoke() returned the response (before durability). */
  responseMs?: number;
  /** EBCC only: from invoke() returning until `durable` resolved. */
  persistMs?: number;
  validate?: number;
  allocate?: number;
  dispatch?: number;
  execute?: number;
  /** The part of execute the enclave spent hashing and signing the evidence (as it reports it). */
  evidence?: number;
  /** The work itself, timed inside the stage process. */
  workMs: number;
}

export interface StageBenchResult {
  persistent: { ebcc: StageSample[]; native: StageSample[] };
  oneshot: { ebcc: StageSample[]; native: StageSample[] };
  rounds: { persistent: number; oneshot: number };
  /** Stage executions through EBCC, and how many rows (and how many with signed evidence) the database holds. */
  durableRows: { expected: number; found: number; withEvidence: number };
  database: { journalMode: string; synchronous: string };
}

async function workImage(mode: 'persistent' | 'oneshot'): Promise<StageImage> {
  const image = {
    kind: 'script' as const,
    interpreter: 'node' as const,
    entry: 'work.mjs',
    files: ['frames.mjs'],
    args: [],
  };
  const limits = {
    memoryMb: 96,
    cpuMs: 2000,
    timeoutMs: 5000,
    maxRequestBytes: 4096,
    maxResponseBytes: 4096,
  };
  const hash = createHash('sha256');
  for (const file of [image.entry, ...image.files]) hash.update(await readFile(join(STAGE_DIR, file)));
  hash.update(JSON.stringify({ image, mode, limits }));
  return {
    name: `work-${mode}`,
    backend: 'sim',
    mode,
    image,
    limits,
    rootDir: STAGE_DIR,
    imageDigest: `sha256:${hash.digest('hex')}`,
  };
}

/** Parses and checks a reply of the work stage; throws when it is not one. */
function workReply(bytes: Uint8Array, what: string): number {
  let reply: { digest?: unknown; signature?: unknown; workMs?: unknown };
  try {
    reply = JSON.parse(Buffer.from(bytes).toString('utf8')) as typeof reply;
  } catch {
    throw new Error(`${what}: the stage answered something that is not JSON (${bytes.byteLength} bytes)`);
  }
  if (
    typeof reply.digest !== 'string' ||
    !/^[0-9a-f]{64}$/.test(reply.digest) ||
    typeof reply.signature !== 'string' ||
    !/^[0-9a-f]{128}$/.test(reply.signature) ||
    typeof reply.workMs !== 'number'
  )
    throw new Error(`${what}: unexpected stage reply ${JSON.stringify(reply)}`);
  return reply.workMs;
}

/** The native persistent client: write a frame to the sandboxed process, read a frame back. Nothing else. */
class NativeFramed {
  private buffer: Buffer = Buffer.alloc(0);
  private waiter: { resolve: (frame: Buffer) => void; reject: (error: Error) => void } | undefined;
  private readonly proc: SandboxProcess;

  constructor(image: StageImage, handle: EnclaveHandle) {
    this.proc = spawnSandboxed(enclaveSandbox(image, handle, true));
    this.proc.stdout.on('data', (chunk: Buffer) => this.onData(chunk));
    this.proc.stderr.on('data', () => undefined);
    void this.proc.exited.then((exit) =>
      this.waiter?.reject(new Error(`the native stage process ended: ${JSON.stringify(exit)}`)),
    );
  }

  private onData(chunk: Buffer): void {
    this.buffer = this.buffer.length ? Buffer.concat([this.buffer, chunk]) : chunk;
    if (this.buffer.length < 4) return;
    const length = this.buffer.readUInt32BE(0);
    if (this.buffer.length < 4 + length) return;
    const frame = this.buffer.subarray(4, 4 + length);
    this.buffer = this.buffer.subarray(4 + length);
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.resolve(frame);
  }

  request(payload: Uint8Array): Promise<Buffer> {
    const reply = new Promise<Buffer>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error('the native stage did not answer within 10 s')),
        10_000,
      );
      this.waiter = {
        resolve: (frame) => {
          clearTimeout(timer);
          resolve(frame);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      };
    });
    const header = Buffer.alloc(4);
    header.writeUInt32BE(payload.byteLength);
    this.proc.stdin.write(Buffer.concat([header, payload]));
    return reply;
  }

  async close(): Promise<void> {
    this.proc.stdin.end();
    this.proc.kill();
    await this.proc.exited;
  }
}

export async function runStageBench(options: {
  persistentRounds: number;
  oneshotRounds: number;
  log: (line: string) => void;
}): Promise<StageBenchResult> {
  const dir = await mkdtemp(join(tmpdir(), 'ebcc-bench-stage-'));
  // Everything made from here on is undone in reverse order, whether the run succeeds or fails.
  const cleanups: (() => Promise<unknown> | void)[] = [() => rm(dir, { recursive: true, force: true })];
  try {
    return await measure(dir, options, cleanups);
  } finally {
    for (const cleanup of cleanups.reverse()) await Promise.resolve(cleanup()).catch(() => undefined);
  }
}

async function measure(
  dir: string,
  options: { persistentRounds: number; oneshotRounds: number; log: (line: string) => void },
  cleanups: (() => Promise<unknown> | void)[],
): Promise<StageBenchResult> {
  // The sandboxed processes run as their own uids and must be able to traverse to what is bound in.
  await chmod(dir, 0o711);
  // Backends that keep per-installation state (the sim device root, caches) are told where, as the
  // gateway does at start; older adapters have no such setting.
  const configure = (adapters as Record<string, unknown>).configureAdapters;
  if (typeof configure === 'function') configure({ dataDir: join(dir, 'adapters') });
  const database = await openDatabase(`file:${join(dir, 'bench.db')}`);
  cleanups.push(() => database.close());
  await migrateDatabase(database);
  const committer = new GroupCommitter(database.db);
  cleanups.push(() => committer.close());
  const eids = new EidAllocator(database.db, `bench:${process.pid}`);
  const persistentImage = await workImage('persistent');
  const oneshotImage = await workImage('oneshot');
  const schema = compileRequestSchema({
    type: 'object',
    properties: { seed: { type: 'string', maxLength: 64 } },
    required: ['seed'],
    additionalProperties: false,
  });
  const bindings = new Map<string, StageBinding>([
    ['work-persistent', { image: persistentImage, validate: schema }],
    ['work-oneshot', { image: oneshotImage, validate: schema }],
  ]);
  // The identity evidence binds: a function name and a version digest (here, the persistent image's).
  const identity = { function: 'bench-work', versionDigest: persistentImage.imageDigest };
  const stages = new InstanceStages('c_bench_stage', identity, bindings, eids, committer);
  cleanups.push(() => stages.destroy());
  await stages.prepare();
  // The native side needs an identity only for the sandbox's label and environment, as the adapter sets.
  const nativeHandle = async (image: StageImage): Promise<EnclaveHandle> => ({
    eid: 999_999_000,
    cid: 'c_bench_native',
    stage: image.name,
    backend: 'sim',
    measurement: await measureSimStage(image),
  });
  const oneshotHandle = await nativeHandle(oneshotImage);
  const native = new NativeFramed(persistentImage, await nativeHandle(persistentImage));
  cleanups.push(() => native.close());
  let ebccCalls = 0;
  const request = (round: number) => Buffer.from(JSON.stringify({ seed: `round-${round}` }));

  const viaEbcc = async (stage: string, round: number): Promise<StageSample> => {
    ebccCalls++;
    const t0 = performance.now();
    const outcome: StageOutcome = await stages.invoke(`inv_bench_${round}`, stage, request(round));
    const t1 = performance.now();
    await outcome.durable;
    const t2 = performance.now();
    return {
      ms: t2 - t0,
      responseMs: t1 - t0,
      persistMs: t2 - t1,
      ...outcome.timings,
      workMs: workReply(outcome.response, `EBCC ${stage}`),
    };
  };

  options.log(`  persistent: ${options.persistentRounds} interleaved rounds`);
  const persistent = await interleaved<StageSample>(
    [
      { name: 'ebcc', run: (round) => viaEbcc('work-persistent', round) },
      {
        name: 'native',
        run: async (round) => {
          const t0 = performance.now();
          const reply = await native.request(request(round));
          const ms = performance.now() - t0;
          return { ms, workMs: workReply(reply, 'native persistent') };
        },
      },
    ],
    { warmupRounds: 50, rounds: options.persistentRounds },
  );
  options.log(`  oneshot: ${options.oneshotRounds} interleaved rounds`);
  const oneshot = await interleaved<StageSample>(
    [
      { name: 'ebcc', run: (round) => viaEbcc('work-oneshot', round) },
      {
        name: 'native',
        run: async (round) => {
          const t0 = performance.now();
          const result = await runSandboxed({
            ...enclaveSandbox(oneshotImage, oneshotHandle, false),
            input: request(round),
          });
          const ms = performance.now() - t0;
          if (result.exit.reason !== 'exit' || result.exit.code !== 0)
            throw new Error(`native oneshot stage failed: ${JSON.stringify(result.exit)}`);
          return { ms, workMs: workReply(result.stdout, 'native oneshot') };
        },
      },
    ],
    { warmupRounds: 2, rounds: options.oneshotRounds },
  );
  await committer.flush();
  const found = (await database.db.select({ n: count() }).from(stageExecutions).get())?.n ?? 0;
  const signed = await database.client.execute(
    'select count(*) from stage_executions where evidence is not null',
  );
  const withEvidence = Number(signed.rows[0]?.[0] ?? 0);
  if (found !== ebccCalls)
    throw new Error(
      `durability check failed: ${ebccCalls} stage requests through EBCC, ${found} executions recorded`,
    );
  const journal = await database.client.execute('PRAGMA journal_mode');
  const sync = await database.client.execute('PRAGMA synchronous');
  const synchronousNames: Record<string, string> = { '0': 'OFF', '1': 'NORMAL', '2': 'FULL', '3': 'EXTRA' };
  const samples = (m: Map<string, { sample: StageSample }[]>, name: string) =>
    m.get(name)!.map((r) => r.sample);
  return {
    persistent: { ebcc: samples(persistent, 'ebcc'), native: samples(persistent, 'native') },
    oneshot: { ebcc: samples(oneshot, 'ebcc'), native: samples(oneshot, 'native') },
    rounds: { persistent: options.persistentRounds, oneshot: options.oneshotRounds },
    durableRows: { expected: ebccCalls, found, withEvidence },
    database: {
      journalMode: String(journal.rows[0]?.[0]),
      synchronous: synchronousNames[String(sync.rows[0]?.[0])] ?? String(sync.rows[0]?.[0]),
    },
  };
}
