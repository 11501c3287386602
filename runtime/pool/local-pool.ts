import type { CompositeManager } from '../lifecycle/manager.ts';
import type { LiveInstance } from '../lifecycle/instance.ts';
import { Problem } from '../problem.ts';

export interface Lease {
  instance: LiveInstance;
  start: 'cold' | 'warm';
  acquireMs: number;
  release(): void;
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

/**
 * The node-local router: it hands each invocation a running instance of the function version, warm
 * when one is idle, cold-started when none is and the maximum allows, and otherwise queues the caller
 * for a bounded time before answering 429. Instances it started are deleted after their idle timeout.
 */
export class LocalPool {
  private readonly waiters = new Map<string, Waiter[]>();
  private readonly starting = new Map<string, number>();
  private readonly reaper: NodeJS.Timeout;
  readonly metrics = { warm: 0, cold: 0, rejected: 0 };

  constructor(
    private readonly manager: CompositeManager,
    private readonly maxWaitMs = 5_000,
  ) {
    manager.onStatusChange((instance) => this.wake(instance));
    this.reaper = setInterval(() => void this.reapIdle(), 1_000);
    this.reaper.unref();
  }

  private running(versionId: string): LiveInstance[] {
    return [...this.manager.live.values()].filter(
      (i) => i.version.row.id === versionId && i.status === 'running',
    );
  }

  private unstopped(versionId: string): number {
    return [...this.manager.live.values()].filter(
      (i) => i.version.row.id === versionId && i.status !== 'stopped',
    ).length;
  }

  private free(instance: LiveInstance, policy: PoolPolicy): boolean {
    return instance.status === 'running' && (policy.concurrent || instance.inflight === 0);
  }

  async acquire(
    tenantId: string,
    functionName: string,
    versionId: string,
    policy: PoolPolicy,
  ): Promise<Lease> {
    const t0 = performance.now();
    const lease = (instance: LiveInstance, start: 'cold' | 'warm', claimed = false): Lease => {
      // Claimed synchronously, before any await, so two callers never take one non-concurrent instance.
      if (!claimed) instance.inflight++;
      this.metrics[start]++;
      let released = false;
      return {
        instance,
        start,
        acquireMs: performance.now() - t0,
        release: () => {
          if (released) return;
          released = true;
          instance.inflight--;
          instance.lastUsedAt = Date.now();
          this.wake(instance);
        },
      };
    };
    const idle = this.running(versionId).find((i) => this.free(i, policy));
    if (idle) return lease(idle, 'warm');
    const booting = this.starting.get(versionId) ?? 0;
    if (this.unstopped(versionId) + booting < policy.maxInstances) {
      this.starting.set(versionId, booting + 1);
      try {
        return lease(await this.coldStart(tenantId, functionName, versionId), 'cold', true);
      } finally {
        this.starting.set(versionId, (this.starting.get(versionId) ?? 1) - 1);
      }
    }
    const handoff = await new Promise<{ instance: LiveInstance; start: 'cold' | 'warm' }>(
      (resolve, reject) => {
        const list = this.waiters.get(versionId) ?? [];
        const waiter: Waiter = {
          resolve,
          reject,
          timer: setTimeout(() => {
            list.splice(list.indexOf(waiter), 1);
            this.metrics.rejected++;
            reject(
              new Problem(
                429,
                'pool-exhausted',
                'Too many requests',
                `all ${policy.maxInstances} instance(s) of "${functionName}" are busy`,
                {
                  retryAfter: 1,
                },
              ),
            );
          }, this.maxWaitMs),
        };
        list.push(waiter);
        this.waiters.set(versionId, list);
      },
    );
    return lease(handoff.instance, handoff.start, true);
  }

  /**
   * Creates and starts an instance already claimed for its caller: starting it notifies the pool, and
   * a waiter must not be handed it in between.
   */
  private async coldStart(tenantId: string, functionName: string, versionId: string): Promise<LiveInstance> {
    const created = await this.manager.create({ tenantId, functionName, versionId, managedBy: 'pool' });
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
    if (instance.status === 'running' && instance.inflight === 0) {
      const waiter = list.shift()!;
      clearTimeout(waiter.timer);
      instance.inflight++;
      waiter.resolve({ instance, start: 'warm' });
    }
  }

  private async reapIdle(): Promise<void> {
    const now = Date.now();
    for (const instance of this.manager.live.values()) {
      if (instance.managedBy !== 'pool' || instance.inflight > 0) continue;
      const idleTimeout = instance.version.manifest.pool.idleTimeoutMs;
      const expired = instance.status === 'running' && now - instance.lastUsedAt > idleTimeout;
      if (expired || instance.status === 'stopped') {
        await this.manager.delete(instance.cid, instance.tenantId, true).catch(() => undefined);
      }
    }
  }

  close(): void {
    clearInterval(this.reaper);
    for (const list of this.waiters.values()) {
      for (const waiter of list) {
        clearTimeout(waiter.timer);
        waiter.reject(
          new Problem(503, 'shutting-down', 'Service unavailable', 'the gateway is shutting down'),
        );
      }
    }
    this.waiters.clear();
  }
}
