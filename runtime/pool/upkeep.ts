import { Queue, Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Db } from '../../db/client.ts';
import { activeVersions } from '../../db/queries/pool.ts';
import type { CompositeManager } from '../lifecycle/manager.ts';
import type { LiveInstance } from '../lifecycle/instance.ts';
import type { Logger } from '../log.ts';
import { parseManifest, type Manifest } from '../manifest/index.ts';
import type { RedisNamespace } from '../queues/namespace.ts';
import type { LocalPool } from './local-pool.ts';

/** BullMQ key prefix of the pool's queues (their names carry the installation id). */
export const QUEUE_PREFIX = 'ebcc';
/** A node not heard of for this long is forgotten (its upkeep queue is obliterated by the janitor). */
export const NODE_STALE_MS = 60_000;

export interface UpkeepDeps {
  db: Db;
  manager: CompositeManager;
  pool: LocalPool;
  logger: Logger;
  nodeId: string;
  /** The installation's queue and key names (its pool nodes set, its upkeep queues). */
  namespace: RedisNamespace;
  /** A new BullMQ connection; closed by whoever provided it. */
  connection: () => Redis;
  /** The repeatable upkeep tick (default 2 s). */
  intervalMs?: number;
}

export interface UpkeepReport {
  removed: number;
  started: number;
  failed: number;
}

/**
 * Pool upkeep of one node, as BullMQ jobs on the node's own queue: a repeatable `tick` (a BullMQ job
 * scheduler) and triggered `reconcile` jobs (an instance died, a version was deployed, a function was
 * deleted). Each job brings the node's pools in line with the policies of the active versions: dead
 * instances are deleted and replaced, instances of old versions and deleted functions are drained,
 * idle ones beyond the minimum are reaped after their idle timeout, and minWarm instances are created
 * and started: for every function this node has served, and on every node from deploy on for versions
 * that ask for `prewarm`. Jobs run one at a time (concurrency 1), never on the invocation path.
 */
export class PoolUpkeep {
  readonly queueName: string;
  private queue: Queue | undefined;
  private worker: Worker | undefined;
  private readonly manifests = new Map<string, Manifest>();
  private readonly intervalMs: number;
  private heartbeat: Redis | undefined;
  runs = 0;

  constructor(private readonly deps: UpkeepDeps) {
    this.queueName = deps.namespace.upkeepQueue(deps.nodeId);
    this.intervalMs = deps.intervalMs ?? 2_000;
  }

  private closed = false;

  private markReady!: () => void;
  /** Resolves once this node's schedule and its entry among the pool nodes are in Redis. */
  readonly ready = new Promise<void>((resolve) => (this.markReady = resolve));

  /** Starts once Redis answers (a node comes up without it, and its upkeep joins when Redis does). */
  async start(): Promise<void> {
    const connection = this.deps.connection();
    this.heartbeat = connection;
    if (connection.status !== 'ready') await new Promise((resolve) => connection.once('ready', resolve));
    if (this.closed) return;
    this.queue = new Queue(this.queueName, { connection, prefix: QUEUE_PREFIX });
    this.queue.on('error', (error) => this.deps.logger.debug({ err: error.message }, 'pool upkeep queue'));
    this.worker = new Worker(this.queueName, (job) => this.process(job), {
      connection,
      prefix: QUEUE_PREFIX,
      concurrency: 1,
      // A lost lock means Redis went away mid-job; the next tick simply runs upkeep again.
      maxStalledCount: 0,
    });
    this.worker.on('error', (error) => this.deps.logger.debug({ err: error.message }, 'pool upkeep worker'));
    this.worker.on('failed', (job, error) =>
      this.deps.logger.warn({ job: job?.name, err: error.message }, 'pool upkeep job failed'),
    );
    await this.register('node started');
    this.markReady();
    // Redis here keeps nothing on disk: after it restarts, the schedule and the node entry are gone,
    // so they are put back whenever the connection is ready again.
    connection.on('ready', () => void this.register('Redis is back').catch(() => undefined));
  }

  /** Puts the repeatable tick and this node's entry in Redis (idempotent), and asks for a run now. */
  private async register(reason: string): Promise<void> {
    if (this.closed || !this.queue) return;
    await this.queue.upsertJobScheduler(
      'tick',
      { every: this.intervalMs },
      { name: 'tick', opts: { removeOnComplete: true, removeOnFail: 50 } },
    );
    await this.heartbeat?.zadd(this.deps.namespace.poolNodesKey, Date.now(), this.queueName);
    await this.trigger(reason);
  }

  /** Asks for an upkeep run soon (never throws: while Redis is down the tick catches up later). */
  async trigger(reason: string): Promise<void> {
    if (this.closed) return;
    await this.queue
      ?.add('reconcile', { reason }, { removeOnComplete: true, removeOnFail: 50 })
      .catch((error: Error) => this.deps.logger.debug({ err: error.message, reason }, 'upkeep trigger lost'));
  }

  private async process(job: Job): Promise<UpkeepReport> {
    await this.heartbeat
      ?.zadd(this.deps.namespace.poolNodesKey, Date.now(), this.queueName)
      .catch(() => undefined);
    const report = await this.runOnce();
    this.runs++;
    if (report.removed || report.started || report.failed)
      this.deps.logger.info({ job: job.name, reason: job.data?.reason, ...report }, 'pool upkeep');
    return report;
  }

  private manifestOf(versionId: string, raw: unknown): Manifest {
    let manifest = this.manifests.get(versionId);
    if (!manifest) {
      manifest = parseManifest(raw);
      this.manifests.set(versionId, manifest);
    }
    return manifest;
  }

  /** One upkeep pass over this node's pools. */
  async runOnce(): Promise<UpkeepReport> {
    const { manager, pool } = this.deps;
    const report: UpkeepReport = { removed: 0, started: 0, failed: 0 };
    const remove = async (i: LiveInstance, reason: Parameters<LocalPool['remove']>[1]) => {
      await pool.remove(i, reason);
      report.removed++;
    };
    const active = new Map(
      (await activeVersions(this.deps.db)).map((row) => [
        row.functionId,
        { ...row, manifest: this.manifestOf(row.versionId, row.manifest) },
      ]),
    );
    const poolInstances = () => [...manager.live.values()].filter((i) => i.managedBy === 'pool');

    // Dead instances go (their replacements come below); old versions and deleted functions drain.
    for (const i of poolInstances()) {
      if (i.status === 'stopped') {
        if (i.inflight === 0) await remove(i, i.draining ? 'drained' : 'died');
        continue;
      }
      const fn = active.get(i.functionId);
      if (!fn || fn.versionId !== i.version.row.id) {
        pool.drain(i, fn ? 'drained' : 'deleted');
        if (i.inflight === 0 && i.status === 'running') await remove(i, fn ? 'drained' : 'deleted');
      }
    }
    for (const served of pool.served.keys()) if (!active.has(served)) pool.served.delete(served);

    const now = Date.now();
    for (const fn of active.values()) {
      const policy = fn.manifest.pool;
      const kept = pool.served.has(fn.functionId) || policy.prewarm;
      const minWarm = kept ? policy.minWarm : 0;
      const mine = poolInstances().filter(
        (i) => i.version.row.id === fn.versionId && i.status !== 'stopped' && !i.draining,
      );
      // Idle ones beyond the minimum go once their idle timeout passed, the longest idle first.
      const expired = mine
        .filter(
          (i) => i.status === 'running' && i.inflight === 0 && now - i.lastUsedAt > policy.idleTimeoutMs,
        )
        .sort((a, b) => a.lastUsedAt - b.lastUsedAt);
      let count = mine.length;
      for (const i of expired) {
        if (count <= minWarm) break;
        await remove(i, 'idle');
        count--;
      }
      let missing = minWarm - pool.unstopped(fn.versionId) - pool.startingCount(fn.versionId);
      while (missing-- > 0) {
        try {
          if (await pool.warmUp(fn.tenantId, fn.name, fn.versionId, policy.maxInstances)) report.started++;
        } catch (error) {
          report.failed++;
          this.deps.logger.warn(
            { fn: fn.name, err: (error as Error).message },
            'pool upkeep: warm-up failed',
          );
          break;
        }
      }
    }
    return report;
  }

  /**
   * Stops taking upkeep jobs (waiting for the running one), removes the tick and the node's queue. Every
   * step is bounded: with Redis gone, closing must not hang.
   */
  async close(): Promise<void> {
    this.closed = true;
    const bounded = (work: Promise<unknown> | undefined, ms: number) =>
      Promise.race([
        Promise.resolve(work).catch(() => undefined),
        new Promise((r) => setTimeout(r, ms).unref()),
      ]);
    const worker = this.worker;
    if (worker) {
      let done = false;
      await bounded(
        worker.close().then(() => (done = true)),
        5_000,
      );
      if (!done) await bounded(worker.close(true), 1_000);
    }
    const queue = this.queue;
    if (queue) {
      const cleanup = async () => {
        await queue.removeJobScheduler('tick');
        await queue.obliterate({ force: true });
        await this.heartbeat?.zrem(this.deps.namespace.poolNodesKey, this.queueName);
      };
      if (this.heartbeat?.status === 'ready') await bounded(cleanup(), 2_000);
      await bounded(queue.close(), 1_000);
    }
  }
}

/**
 * Asks every live pool node for an upkeep run now (after a deploy, a rollback or a delete), so that
 * old pools drain and pre-warmed ones fill without waiting for the next tick. Best effort.
 */
export async function announceToNodes(
  connection: Redis,
  namespace: RedisNamespace,
  reason: string,
  logger?: Logger,
): Promise<void> {
  try {
    const nodes = await connection.zrangebyscore(namespace.poolNodesKey, Date.now() - NODE_STALE_MS, '+inf');
    await Promise.all(
      nodes.map(async (name) => {
        const queue = new Queue(name, { connection, prefix: QUEUE_PREFIX });
        try {
          await queue.add('reconcile', { reason }, { removeOnComplete: true, removeOnFail: 50 });
        } finally {
          await queue.close();
        }
      }),
    );
  } catch (error) {
    logger?.debug({ err: (error as Error).message, reason }, 'announcing to pool nodes failed');
  }
}
