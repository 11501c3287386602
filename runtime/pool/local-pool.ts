import type { CompositeManager } from '../lifecycle/manager.ts';
import type { LiveInstance } from '../lifecycle/instance.ts';
import type { Logger } from '../log.ts';
import { Problem } from '../problem.ts';
import { RedisUnavailableError, redisUnavailableProblem } from '../queues/redis.ts';
import type { Lease as RedisLease, LeaseStore } from './leases.ts';
import type { ChurnReason, PoolMetrics } from './metrics.ts';

export interface Lease {
  instance: LiveInstance;
  start: 'cold' | 'warm';
  acquireMs: number;
  /** The lease's fencing token (0 for a concurrent function, which takes no exclusive lease). */
  token: number;
  /** Gives the instance back: its Redis lease first, then the local claim. Never throws. */
  release(): Promise<void>;
}

interface Waiter {
  resolve: (handoff: { instance: LiveInstance; start: 'cold' | 'warm' }) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
}

export interface PoolPolicy {
  maxInstances: number;
  idleTimeoutMs: number;
  concurrent: boolean;
}

export interface PoolOptions {
  /** How long a caller waits for a busy pool at its maximum before 429. */
  maxWaitMs?: number;
  /** Redis leases; without them (unit use) the local claim alone guards an instance. */
  leases?: LeaseStore;
  metrics?: PoolMetrics;
  logger?: Logger;
  /** Called when the pool needs upkeep soon (an instance died, a drained one emptied). */
  onUpkeepNeeded?: (reason: string) => void;
}

/** A function this node has served: its pool is kept (minWarm) by upkeep from then on. */
export interface ServedFunction {
  tenantId: string;
  functionId: string;
  functionName: string;
}

/**
 * The node-local router: it hands each invocation a running instance of the function version, warm
 * when one is idle, cold-started when none is and the maximum allows, and otherwise queues the caller
 * for a bounded time before answering 429. An instance of a non-concurrent function is held under a
 * Redis lease (a lock with a fencing token) for the whole invocation, besides the local claim.
 * Keeping the pool (minimum warm, idle reaping, replacing dead instances, draining old versions) is
 * pool upkeep's job (upkeep.ts), which runs as BullMQ jobs off the invocation path.
 */
export class LocalPool {
  private readonly waiters = new Map<string, Waiter[]>();
  private readonly starting = new Map<string, number>();
  private readonly held = new Set<RedisLease>();
  /** Instances whose Redis lease was found held by someone else, and until when to skip them. */
  private readonly heldElsewhere = new WeakMap<LiveInstance, number>();
  /** Why a draining instance is going (counted once, when it is removed). */
  private readonly drainReason = new WeakMap<LiveInstance, ChurnReason>();
  private readonly removing = new WeakSet<LiveInstance>();
  readonly served = new Map<string, ServedFunction>();
  /** Functions being deleted (`<tenant>\0<name>`): they get no new lease while their pool drains. */
  private readonly retiring = new Set<string>();
  private closing = false;
  private readonly maxWaitMs: number;

  constructor(
    private readonly manager: CompositeManager,
    private readonly options: PoolOptions = {},
  ) {
    this.maxWaitMs = options.maxWaitMs ?? 5_000;
    manager.onStatusChange((instance) => {
      if (instance.status === 'stopped' && instance.managedBy === 'pool') {
        options.onUpkeepNeeded?.(`instance ${instance.cid} stopped`);
      }
      this.wake(instance);
    });
  }

  get metrics(): PoolMetrics | undefined {
    return this.options.metrics;
  }

  private running(versionId: string): LiveInstance[] {
    return [...this.manager.live.values()].filter(
      (i) => i.version.row.id === versionId && i.status === 'running',
    );
  }

  /** Instances of the version that count against its maximum here (all but the stopped ones; an operator's too). */
  unstopped(versionId: string): number {
    return [...this.manager.live.values()].filter(
      (i) => i.version.row.id === versionId && i.status !== 'stopped',
    ).length;
  }

  startingCount(versionId: string): number {
    return this.starting.get(versionId) ?? 0;
  }

  private free(instance: LiveInstance, policy: PoolPolicy): boolean {
    if (instance.status !== 'running' || instance.draining) return false;
    if ((this.heldElsewhere.get(instance) ?? 0) > Date.now()) return false;
    return policy.concurrent || instance.inflight === 0;
  }

  private rejectFor(functionName: string, reason: string): void {
    this.options.metrics?.rejected.inc({ function: functionName, reason });
  }

  async acquire(
    tenantId: string,
    functionName: string,
    versionId: string,
    policy: PoolPolicy,
    functionId?: string,
  ): Promise<Lease> {
    const t0 = performance.now();
    if (this.closing) throw shuttingDown();
    if (this.retiring.has(`${tenantId}\0${functionName}`)) throw beingDeleted(functionName);
    const leases = policy.concurrent ? undefined : this.options.leases;
    if (leases && !leases.available) {
      this.rejectFor(functionName, 'redis-unavailable');
      throw redisUnavailableProblem(leases.redisUrl, 'not connected');
    }
    if (functionId) this.served.set(functionId, { tenantId, functionId, functionName });
    for (;;) {
      const picked = await this.pick(tenantId, functionName, versionId, policy);
      const { instance, start } = picked;
      let redisLease: RedisLease | null = null;
      if (leases) {
        try {
          redisLease = await leases.tryAcquire(instance.cid, instance.fence);
        } catch (error) {
          this.unclaim(instance);
          if (error instanceof RedisUnavailableError) {
            this.rejectFor(functionName, 'redis-unavailable');
            throw redisUnavailableProblem(error.url, error.message.replace(/^.*?unavailable: /, ''));
          }
          throw error;
        }
        if (!redisLease || redisLease.token <= instance.fence) {
          // Held by another holder (a lease not yet expired after a crash or a lost release), or a
          // stale token: leave this instance alone for a moment and pick again.
          await redisLease?.release();
          this.heldElsewhere.set(instance, Date.now() + Math.min(leases.options.ttlMs, 1_000));
          this.unclaim(instance);
          if (performance.now() - t0 > this.maxWaitMs) {
            this.rejectFor(functionName, 'exhausted');
            throw exhausted(functionName, policy);
          }
          continue;
        }
        instance.fence = redisLease.token;
        this.held.add(redisLease);
      }
      const acquireMs = performance.now() - t0;
      const metrics = this.options.metrics;
      if (metrics) {
        (start === 'warm' ? metrics.warmHits : metrics.coldStarts).inc({ function: functionName });
        metrics.leaseWait.observe({ function: functionName, start }, acquireMs / 1000);
      }
      let released = false;
      return {
        instance,
        start,
        acquireMs,
        token: redisLease?.token ?? 0,
        release: async () => {
          if (released) return;
          released = true;
          if (redisLease) {
            await redisLease.release();
            this.held.delete(redisLease);
          }
          this.unclaim(instance);
        },
      };
    }
  }

  /** Drops the local claim on an instance and hands it on (or lets a draining one go). */
  private unclaim(instance: LiveInstance): void {
    instance.inflight--;
    instance.lastUsedAt = Date.now();
    if (instance.draining && instance.inflight === 0) {
      void this.remove(instance, this.drainReason.get(instance) ?? 'drained');
      return;
    }
    this.wake(instance);
  }

  /** Claims (locally) an idle instance, a new one, or the next one freed, within the wait limit. */
  private async pick(
    tenantId: string,
    functionName: string,
    versionId: string,
    policy: PoolPolicy,
  ): Promise<{ instance: LiveInstance; start: 'cold' | 'warm' }> {
    const idle = this.running(versionId).find((i) => this.free(i, policy));
    if (idle) {
      // Claimed synchronously, before any await, so two callers never take one non-concurrent instance.
      idle.inflight++;
      return { instance: idle, start: 'warm' };
    }
    const booting = this.starting.get(versionId) ?? 0;
    if (this.unstopped(versionId) + booting < policy.maxInstances) {
      this.starting.set(versionId, booting + 1);
      try {
        return { instance: await this.coldStart(tenantId, functionName, versionId), start: 'cold' };
      } finally {
        this.starting.set(versionId, (this.starting.get(versionId) ?? 1) - 1);
      }
    }
    return new Promise<{ instance: LiveInstance; start: 'cold' | 'warm' }>((resolve, reject) => {
      const list = this.waiters.get(versionId) ?? [];
      const waiter: Waiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          list.splice(list.indexOf(waiter), 1);
          this.rejectFor(functionName, 'exhausted');
          reject(exhausted(functionName, policy));
        }, this.maxWaitMs),
      };
      list.push(waiter);
      this.waiters.set(versionId, list);
    });
  }

  /**
   * Creates and starts an instance already claimed for its caller: starting it notifies the pool, and
   * a waiter must not be handed it in between.
   */
  private async coldStart(tenantId: string, functionName: string, versionId: string): Promise<LiveInstance> {
    const created = await this.manager.create({ tenantId, functionName, versionId, managedBy: 'pool' });
    this.options.metrics?.created.inc({ function: functionName, cause: 'invocation' });
    created.inflight++;
    try {
      await this.manager.start(created.cid, tenantId);
    } catch (error) {
      created.inflight--;
      // The instance died between create and start (its anchor killed, say): the caller's request is
      // not at fault and may simply be retried.
      if (created.status === 'stopped')
        throw new Problem(
          503,
          'instance-lost',
          'Instance lost',
          `instance ${created.cid} stopped while starting`,
          {
            retryAfter: 1,
          },
        );
      throw error;
    }
    return created;
  }

  /**
   * Pool upkeep: creates and starts one idle instance of the version (unless the maximum is reached),
   * and hands it to a waiter if one is queued.
   */
  async warmUp(
    tenantId: string,
    functionName: string,
    versionId: string,
    maxInstances: number,
  ): Promise<boolean> {
    if (this.closing) return false;
    const booting = this.starting.get(versionId) ?? 0;
    if (this.unstopped(versionId) + booting >= maxInstances) return false;
    this.starting.set(versionId, booting + 1);
    try {
      const created = await this.manager.create({ tenantId, functionName, versionId, managedBy: 'pool' });
      this.options.metrics?.created.inc({ function: functionName, cause: 'upkeep' });
      if (this.closing) {
        // The node began shutting down meanwhile: this instance is not kept.
        await this.remove(created, 'shutdown');
        return false;
      }
      await this.manager.start(created.cid, tenantId);
      return true;
    } finally {
      this.starting.set(versionId, (this.starting.get(versionId) ?? 1) - 1);
    }
  }

  /** Deletes a pool instance (stopping it if need be), counting it as churn. */
  async remove(instance: LiveInstance, reason: ChurnReason): Promise<void> {
    if (!this.manager.live.has(instance.cid) || this.removing.has(instance)) return;
    this.removing.add(instance);
    this.options.metrics?.removed.inc({ function: instance.functionName, reason });
    await this.manager
      .delete(instance.cid, instance.tenantId, true)
      .catch((error: Error) =>
        this.options.logger?.warn(
          { cid: instance.cid, err: error.message },
          'pool: removing an instance failed',
        ),
      );
  }

  /** This node's live instances of a function that an operator created (not the pool's). */
  operatorInstances(functionId: string): LiveInstance[] {
    return [...this.manager.live.values()].filter(
      (i) => i.functionId === functionId && i.managedBy === 'operator' && i.status !== 'stopped',
    );
  }

  /**
   * Drains every instance of a function on this node, for its deletion: no lease is given for the
   * function any more (callers waiting for one are told it is going), idle instances are deleted now,
   * busy ones when their invocation ends, and whatever is still busy at the deadline is deleted with
   * force. New leases stay refused until `done` runs (after the function's rows are gone).
   */
  async drainFunction(
    fn: { id: string; tenantId: string; name: string },
    deadlineMs = 10_000,
  ): Promise<{ done: () => void }> {
    const key = `${fn.tenantId}\0${fn.name}`;
    this.retiring.add(key);
    const doomed = [...this.manager.live.values()].filter((i) => i.functionId === fn.id);
    this.served.delete(fn.id);
    for (const i of doomed) this.drain(i, 'deleted');
    for (const versionId of new Set(doomed.map((i) => i.version.row.id))) {
      for (const waiter of this.waiters.get(versionId) ?? []) {
        clearTimeout(waiter.timer);
        waiter.reject(beingDeleted(fn.name));
      }
      this.waiters.delete(versionId);
    }
    const deadline = Date.now() + deadlineMs;
    while (doomed.some((i) => i.inflight > 0 && this.manager.live.has(i.cid)) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    await Promise.all(doomed.map((i) => this.remove(i, 'deleted')));
    return { done: () => this.retiring.delete(key) };
  }

  /** Hands the instance out no more; it is removed (counted under `reason`) once idle. */
  drain(instance: LiveInstance, reason: ChurnReason): void {
    instance.draining = true;
    if (!this.drainReason.has(instance)) this.drainReason.set(instance, reason);
  }

  /** Hands a freed or newly running instance to the first caller waiting for its version. */
  private wake(instance: LiveInstance): void {
    const versionId = instance.version.row.id;
    const list = this.waiters.get(versionId);
    if (!list?.length) return;
    if (instance.status === 'stopped') {
      // A stopped instance frees a place: the first waiter gets a replacement instead of a 429.
      const booting = this.starting.get(versionId) ?? 0;
      if (this.unstopped(versionId) + booting >= instance.version.manifest.pool.maxInstances) return;
      const waiter = list.shift()!;
      clearTimeout(waiter.timer);
      this.starting.set(versionId, booting + 1);
      this.coldStart(instance.tenantId, instance.functionName, versionId)
        .then((replacement) => waiter.resolve({ instance: replacement, start: 'cold' }), waiter.reject)
        .finally(() => this.starting.set(versionId, (this.starting.get(versionId) ?? 1) - 1));
      return;
    }
    if (instance.status === 'running' && instance.inflight === 0 && !instance.draining) {
      const waiter = list.shift()!;
      clearTimeout(waiter.timer);
      instance.inflight++;
      waiter.resolve({ instance, start: 'warm' });
    }
  }

  /** How many invocations hold an instance right now. */
  get inflight(): number {
    let n = 0;
    for (const i of this.manager.live.values()) n += i.inflight;
    return n;
  }

  /**
   * Graceful stop: no new leases (503), queued callers are told to go elsewhere, in-flight invocations
   * get until `deadline` (epoch ms) to finish, and every lease still held after that is released.
   */
  async close(deadline = Date.now()): Promise<void> {
    this.closing = true;
    for (const list of this.waiters.values()) {
      for (const waiter of list) {
        clearTimeout(waiter.timer);
        waiter.reject(shuttingDown());
      }
    }
    this.waiters.clear();
    while (this.inflight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await Promise.all([...this.held].map((lease) => lease.release()));
    this.held.clear();
  }
}

function exhausted(functionName: string, policy: PoolPolicy): Problem {
  return new Problem(
    429,
    'pool-exhausted',
    'Too many requests',
    `all ${policy.maxInstances} instance(s) of "${functionName}" are busy`,
    { retryAfter: 1 },
  );
}

function beingDeleted(functionName: string): Problem {
  return new Problem(404, 'function-deleted', 'Not found', `function "${functionName}" is being deleted`);
}

function shuttingDown(): Problem {
  return new Problem(503, 'shutting-down', 'Service unavailable', 'this node is shutting down', {
    retryAfter: 1,
  });
}
