import { DelayedError, Queue, UnrecoverableError, Worker, type Job } from 'bullmq';
import { eq } from 'drizzle-orm';
import { Redis, type RedisOptions } from 'ioredis';
import type { Db } from '../../db/client.ts';
import {
  activeVersions,
  itemById,
  queuedItemIds,
  type BatchItemRow,
  type NewBatchItem,
} from '../../db/queries/batches.ts';
import { versionById } from '../../db/queries/functions.ts';
import { batchItems } from '../../db/schema.ts';
import type { GroupCommitter, Write } from '../artifacts/group-commit.ts';
import { storeBytes } from '../artifacts/records.ts';
import { invokeInstance, type InvocationResult } from '../lifecycle/invoke.ts';
import type { Logger } from '../log.ts';
import { parseManifest, type Manifest } from '../manifest/index.ts';
import type { LocalPool } from '../pool/local-pool.ts';
import { Problem } from '../problem.ts';
import type { RedisNamespace } from '../queues/namespace.ts';
import {
  backoffMs,
  BATCH_QUEUE,
  CRON_QUEUE,
  cronSchedulerId,
  derivedItemId,
  ITEM_JOB_OPTIONS,
  itemJob,
} from './queues.ts';
import { redisOptions } from './redis.ts';

export interface BatchWorkerOptions {
  db: Db;
  committer: GroupCommitter;
  pool: LocalPool;
  logger: Logger;
  redisUrl: string;
  /** BullMQ key prefix of every queue. */
  prefix: string;
  /** The installation's own queue names (batch items, cron ticks). */
  namespace: RedisNamespace;
  /** Items of API batches run at once by this process. */
  concurrency?: number;
  /** How long a job's lock lasts without renewal: a dead worker's jobs run again after about this long. */
  lockDurationMs?: number;
  /** How often triggers (queues, cron) are read again from the active versions. */
  refreshMs?: number;
  /** How often unfinished items are given to Redis again even without a reconnect. */
  sweepMs?: number;
}

interface QueueTarget {
  tenantId: string;
  functionId: string;
  name: string;
  versionId: string;
  concurrency: number;
}

type Item = NewBatchItem & Pick<BatchItemRow, 'attempts' | 'status'>;

type Outcome = { kind: 'ok' } | { kind: 'permanent'; reason: string } | { kind: 'retriable'; reason: string };

const RECOVERY_PAGE = 1_000;
const REASON_LIMIT = 2_000;

const clip = (text: string) => (text.length > REASON_LIMIT ? `${text.slice(0, REASON_LIMIT)}…` : text);

/** A status the function may answer differently next time: a timeout, overload or server error. */
const transient = (status: number) => status === 408 || status === 425 || status === 429 || status >= 500;

function classifyResult(result: Omit<InvocationResult, 'executions'>): Outcome {
  if (result.problem) {
    // An anchor that failed because a stage refused its request (a schema rejection) fails again.
    const refused = result.stageErrors.find((e) => e.status >= 400 && !transient(e.status));
    if (refused)
      return {
        kind: 'permanent',
        reason: clip(`stage "${refused.stage}" refused the request (${refused.code}): ${refused.message}`),
      };
    return { kind: 'retriable', reason: clip(result.problem.message) };
  }
  if (result.status < 400) return { kind: 'ok' };
  const body = Buffer.from(result.body).toString('utf8');
  const reason = clip(`the function answered ${result.status}${body ? `: ${body}` : ''}`);
  return transient(result.status) ? { kind: 'retriable', reason } : { kind: 'permanent', reason };
}

function classifyError(error: unknown): Outcome {
  if (error instanceof Problem) {
    const reason = clip(`${error.slug}: ${error.message}`);
    return transient(error.status) ? { kind: 'retriable', reason } : { kind: 'permanent', reason };
  }
  return { kind: 'retriable', reason: clip((error as Error)?.message ?? String(error)) };
}

/** Refusals that come before the function runs: a busy pool (429 after the bounded wait), a stopping node. */
const NOT_RUN = new Set(['pool-exhausted', 'shutting-down']);

function notRun(error: unknown): error is Problem {
  return error instanceof Problem && NOT_RUN.has(error.slug);
}

/** When a job the pool turned away comes back: after the Retry-After the pool gave, spread out a little. */
function deferMs(problem: Problem): number {
  const retryAfterS = Number(problem.extensions.retryAfter ?? 1);
  const base = Number.isFinite(retryAfterS) && retryAfterS > 0 ? retryAfterS * 1000 : 1000;
  return Math.round(base * (0.5 + Math.random() * 0.5));
}

/**
 * The BullMQ side of queued work: one worker for API batch items, one for cron ticks, and one per
 * queue a function's manifest declares. Every job runs its item through the pool and `invokeInstance`,
 * the path HTTP invocations take, and its result is committed with the invocation record, only if the
 * item is still unfinished: a job that runs twice records one result.
 */
export class BatchWorkers {
  private readonly workers = new Map<string, Worker>();
  private readonly queueTargets = new Map<string, QueueTarget>();
  private readonly manifests = new Map<string, Manifest>();
  private readonly batchQueue: Queue;
  private readonly cronQueue: Queue;
  private readonly monitor: Redis;
  private knownSchedulers = new Set<string>();
  private readonly warned = new Set<string>();
  private refreshing: Promise<void> | undefined;
  private recovering: Promise<void> | undefined;
  private readonly timers: NodeJS.Timeout[] = [];
  private closed = false;
  readonly stats = { ok: 0, failed: 0, dead: 0, retried: 0, skipped: 0, recovered: 0, deferred: 0 };

  constructor(private readonly opts: BatchWorkerOptions) {
    const connection = redisOptions(opts.redisUrl, 'worker');
    const { prefix } = opts;
    this.batchQueue = new Queue(opts.namespace.batchQueue, { connection, prefix });
    this.cronQueue = new Queue(opts.namespace.cronQueue, { connection, prefix });
    for (const q of [this.batchQueue, this.cronQueue]) q.on('error', (e) => this.redisError(e));
    // Redis keeps nothing on disk: each time it (re)appears, unfinished items and schedulers are put back.
    this.monitor = new Redis({ ...(connection as RedisOptions), lazyConnect: true });
    this.monitor.on('error', (e) => this.redisError(e));
    this.monitor.on('ready', () => {
      this.knownSchedulers = new Set();
      void this.recover();
      void this.refresh();
    });
  }

  private lastRedisError = 0;
  private redisError(error: Error): void {
    if (Date.now() - this.lastRedisError < 5_000) return;
    this.lastRedisError = Date.now();
    this.opts.logger.warn({ redis: this.opts.redisUrl, err: error.message }, 'batch workers: redis');
  }

  async start(): Promise<void> {
    this.startWorker(this.opts.namespace.batchQueue, this.opts.concurrency ?? 16);
    this.startWorker(this.opts.namespace.cronQueue, 4);
    await this.monitor.connect().catch((error: Error) => this.redisError(error));
    this.timers.push(setInterval(() => void this.refresh(), this.opts.refreshMs ?? 2_000));
    this.timers.push(setInterval(() => void this.recover(), this.opts.sweepMs ?? 60_000));
    for (const timer of this.timers) timer.unref();
  }

  private startWorker(queue: string, concurrency: number): void {
    const lockDuration = this.opts.lockDurationMs ?? 30_000;
    const worker = new Worker(queue, (job, token) => this.process(job, token), {
      connection: redisOptions(this.opts.redisUrl, 'worker'),
      prefix: this.opts.prefix,
      concurrency,
      lockDuration,
      stalledInterval: lockDuration,
      maxStalledCount: 3,
    });
    worker.on('error', (e) => this.redisError(e));
    this.workers.set(queue, worker);
  }

  /** A queue EBCC itself runs, which no function may declare as its trigger. */
  private ownQueue(name: string): boolean {
    const { batchQueue, cronQueue } = this.opts.namespace;
    return [BATCH_QUEUE, CRON_QUEUE, batchQueue, cronQueue].includes(name);
  }

  private async manifestOf(versionId: string): Promise<Manifest> {
    let manifest = this.manifests.get(versionId);
    if (!manifest) {
      const row = await versionById(this.opts.db, versionId);
      if (!row) throw new Problem(404, 'not-found', 'Not found', `version ${versionId} no longer exists`);
      manifest = parseManifest(row.manifest);
      this.manifests.set(versionId, manifest);
    }
    return manifest;
  }

  /** The item a job stands for, as recorded, or as it will be recorded when the job is a new arrival. */
  private async itemFor(job: Job): Promise<Item | undefined> {
    const { db } = this.opts;
    if (job.queueName === this.opts.namespace.batchQueue) return itemById(db, String(job.data?.itemId));
    const id = derivedItemId(job.queueName, job.id!);
    const existing = await itemById(db, id);
    if (existing) return existing;
    if (job.queueName === this.opts.namespace.cronQueue) {
      const fns = await activeVersions(db);
      const { functionName, trigger, versionId } = job.data as {
        functionName: string;
        trigger: number;
        versionId: string;
      };
      const fn = fns.find((f) => f.name === functionName && f.versionId === versionId);
      const cron = fn && parseManifest(fn.manifest).triggers.cron[trigger];
      if (!fn || !cron) return undefined; // a tick of a schedule since replaced or deleted
      // A scheduler's job id ends with its tick's time: kept as the item's sequence number.
      const tick = Number(/:(\d+)$/.exec(job.id!)?.[1] ?? job.timestamp);
      return {
        ...this.newItem(id, fn, 'cron', CRON_QUEUE, cron.path, cron.retry, cron.input ?? null),
        seq: tick,
      };
    }
    // A producer's job: the function that declares the queue, as of the last refresh.
    const target = this.queueTargets.get(job.queueName);
    if (!target) return undefined;
    const { queue } = (await this.manifestOf(target.versionId)).triggers;
    if (!queue || queue.name !== job.queueName) return undefined;
    return this.newItem(id, target, 'queue', job.queueName, queue.path, queue.retry, job.data ?? null);
  }

  private newItem(
    id: string,
    fn: { tenantId: string; functionId: string; name: string; versionId: string },
    source: 'queue' | 'cron',
    queue: string,
    path: string,
    retry: Item['retry'],
    input: unknown,
  ): Item {
    return {
      id,
      batchId: null,
      seq: 0,
      tenantId: fn.tenantId,
      functionId: fn.functionId,
      functionName: fn.name,
      versionId: fn.versionId,
      path,
      retry,
      source,
      queue,
      status: 'queued',
      attempts: 0,
      input: JSON.stringify(input),
    };
  }

  private async process(job: Job, token: string | undefined): Promise<void> {
    const item = await this.itemFor(job);
    if (!item && job.queueName === this.opts.namespace.batchQueue)
      this.opts.logger.warn(
        { job: job.id, queue: job.queueName },
        'a batch job names an item this database does not hold',
      );
    if (!item || item.status !== 'queued') {
      this.stats.skipped++;
      return;
    }
    const attempt = item.attempts + 1;
    const last = attempt >= item.retry.attempts;
    let outcome: Outcome | undefined;
    try {
      if (item.input === null || item.input === undefined)
        throw new Problem(400, 'invalid-item', 'Bad request', 'the item has no input');
      const manifest = await this.manifestOf(item.versionId);
      const lease = await this.opts.pool.acquire(
        item.tenantId,
        item.functionName,
        item.versionId,
        manifest.pool,
      );
      try {
        const suffix = item.path === '/' ? '' : item.path;
        await invokeInstance(
          this.opts.committer,
          lease.instance,
          {
            method: 'POST',
            url: `http://ebcc.internal/fn/${item.functionName}${suffix}`,
            headers: [
              ['content-type', 'application/json'],
              ['x-ebcc-item', item.id],
              ['x-ebcc-attempt', String(attempt)],
            ],
            body: Buffer.from(item.input, 'utf8'),
          },
          {
            trigger: item.source,
            start: lease.start,
            acquireMs: lease.acquireMs,
            alsoCommit: (result) => {
              outcome = classifyResult(result);
              return this.record(item, attempt, last, outcome, result);
            },
          },
        );
      } finally {
        await lease.release();
      }
    } catch (error) {
      if (outcome) throw error; // the invocation was recorded; its commit failed: let BullMQ retry
      if (notRun(error) && token) {
        // The function never ran (its pool was full, or this node is stopping): not an attempt. The job
        // waits its turn again without touching the item's attempts or BullMQ's.
        this.stats.deferred++;
        await job.moveToDelayed(Date.now() + deferMs(error as Problem), token);
        throw new DelayedError();
      }
      outcome = classifyError(error);
      await this.opts.committer.submit(this.record(item, attempt, last, outcome));
    }
    return this.settle(job, token, item, attempt, last, outcome as Outcome);
  }

  private async settle(
    job: Job,
    token: string | undefined,
    item: Item,
    attempt: number,
    last: boolean,
    outcome: Outcome,
  ): Promise<void> {
    if (outcome.kind === 'ok') {
      this.stats.ok++;
      return;
    }
    if (outcome.kind === 'permanent') {
      this.stats.failed++;
      throw new UnrecoverableError(outcome.reason);
    }
    if (last) {
      this.stats.dead++;
      throw new UnrecoverableError(`dead after ${attempt} attempt(s): ${outcome.reason}`);
    }
    this.stats.retried++;
    if (job.queueName === this.opts.namespace.batchQueue && token) {
      await job.moveToDelayed(Date.now() + backoffMs(item.retry, attempt), token);
      throw new DelayedError();
    }
    // A producer's job or a cron tick: its item, now recorded, goes on as an item job of its own.
    await this.batchQueue.add(itemJob(item.id).name, itemJob(item.id).data, {
      ...itemJob(item.id).opts,
      delay: backoffMs(item.retry, attempt),
    });
  }

  /**
   * The item's outcome for this attempt, written only while the item is unfinished: a second run of
   * the same item (a crashed worker's job, a job given again after a Redis loss) changes nothing.
   */
  private record(
    item: Item,
    attempt: number,
    last: boolean,
    outcome: Outcome,
    result?: Omit<InvocationResult, 'executions'>,
  ): Write {
    const status =
      outcome.kind === 'ok'
        ? ('succeeded' as const)
        : outcome.kind === 'permanent'
          ? ('failed' as const)
          : last
            ? ('dead' as const)
            : ('queued' as const);
    const blobWrites: Write[] = [];
    const stored = result && outcome.kind === 'ok' ? storeBytes(result.body, blobWrites) : undefined;
    const contentType = result?.headers.find(([k]) => k.toLowerCase() === 'content-type')?.[1] ?? null;
    const values = {
      status,
      attempts: attempt,
      invocationId: result?.invocationId ?? null,
      httpStatus: result?.status ?? null,
      resultType: stored ? contentType : null,
      resultDigest: stored?.digest ?? null,
      resultInline: stored?.inline ?? null,
      resultBlob: stored?.blob ?? null,
      error: outcome.kind === 'ok' ? null : outcome.reason,
      finishedAt: status === 'queued' ? null : Date.now(),
    };
    return async (tx) => {
      for (const write of blobWrites) await write(tx);
      await tx
        .insert(batchItems)
        .values({ ...item, ...values })
        .onConflictDoUpdate({
          target: batchItems.id,
          set: values,
          setWhere: eq(batchItems.status, 'queued'),
        });
    };
  }

  /** Gives Redis every unfinished item again; job ids are item ids, so items already queued stay once. */
  recover(): Promise<void> {
    this.recovering ??= (async () => {
      let after = '';
      try {
        for (;;) {
          const ids = await queuedItemIds(this.opts.db, after, RECOVERY_PAGE);
          if (!ids.length) break;
          await this.batchQueue.addBulk(ids.map(itemJob));
          this.stats.recovered += ids.length;
          after = ids.at(-1)!;
        }
      } catch (error) {
        this.redisError(error as Error);
      } finally {
        this.recovering = undefined;
      }
    })();
    return this.recovering;
  }

  /** Follows the active versions' triggers: a worker per declared queue, a job scheduler per cron entry. */
  refresh(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.refreshing ??= (async () => {
      try {
        const fns = (await activeVersions(this.opts.db)).sort((a, b) => a.name.localeCompare(b.name));
        const queues = new Map<string, QueueTarget>();
        const schedules = new Map<string, Parameters<Queue['upsertJobScheduler']>>();
        for (const fn of fns) {
          const manifest = parseManifest(fn.manifest);
          const { queue, cron } = manifest.triggers;
          if (queue && !queues.has(queue.name) && !this.ownQueue(queue.name)) {
            queues.set(queue.name, {
              tenantId: fn.tenantId,
              functionId: fn.functionId,
              name: fn.name,
              versionId: fn.versionId,
              concurrency: queue.concurrency,
            });
          } else if (queue && !this.warned.has(`${fn.name}\0${queue.name}`)) {
            this.warned.add(`${fn.name}\0${queue.name}`);
            this.opts.logger.warn({ fn: fn.name, queue: queue.name }, 'queue name already taken; ignored');
          }
          cron.forEach((entry, index) => {
            const id = cronSchedulerId(fn.name, index, fn.versionId);
            schedules.set(id, [
              id,
              { pattern: entry.schedule, ...(entry.timezone ? { tz: entry.timezone } : {}) },
              {
                name: 'tick',
                data: { functionName: fn.name, trigger: index, versionId: fn.versionId },
                opts: ITEM_JOB_OPTIONS,
              },
            ]);
          });
        }
        this.queueTargets.clear();
        for (const [name, target] of queues) this.queueTargets.set(name, target);
        for (const [name, target] of queues)
          if (!this.workers.has(name)) this.startWorker(name, target.concurrency);
        for (const [name, worker] of this.workers) {
          if (this.ownQueue(name) || queues.has(name)) continue;
          this.workers.delete(name);
          void worker.close();
        }
        for (const [id, args] of schedules) {
          if (this.knownSchedulers.has(id)) continue;
          await this.cronQueue.upsertJobScheduler(...args);
          this.knownSchedulers.add(id);
        }
        for (const scheduler of await this.cronQueue.getJobSchedulers()) {
          const id = scheduler.id ?? scheduler.key;
          if (!schedules.has(id)) await this.cronQueue.removeJobScheduler(id);
        }
        for (const id of this.knownSchedulers) if (!schedules.has(id)) this.knownSchedulers.delete(id);
      } catch (error) {
        this.redisError(error as Error);
      } finally {
        this.refreshing = undefined;
      }
    })();
    return this.refreshing;
  }

  /**
   * Stops taking jobs, lets those in flight finish until `deadline` (epoch ms; no limit without one),
   * and closes every Redis connection. A job still running at the deadline is left to BullMQ: its lock
   * expires and another worker takes it, and its item records one result whichever run ends first.
   */
  async close(deadline?: number): Promise<void> {
    this.closed = true;
    for (const timer of this.timers) clearInterval(timer);
    await this.refreshing;
    await Promise.all(
      [...this.workers.values()].map(async (w) => {
        if (deadline === undefined) return w.close();
        let timer: NodeJS.Timeout | undefined;
        const late = new Promise<'late'>((resolve) => {
          timer = setTimeout(() => resolve('late'), Math.max(0, deadline - Date.now()));
        });
        const outcome = await Promise.race([w.close(), late]);
        clearTimeout(timer);
        if (outcome === 'late') await w.close(true);
      }),
    );
    await Promise.all([this.batchQueue.close(), this.cronQueue.close()]);
    this.monitor.disconnect();
  }
}

/** Starts the batch workers of this process (used by `ebcc serve` and `ebcc worker`). */
export async function startBatchWorkers(opts: BatchWorkerOptions): Promise<BatchWorkers> {
  const workers = new BatchWorkers(opts);
  await workers.start();
  return workers;
}
