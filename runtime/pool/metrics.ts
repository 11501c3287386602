import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { CompositeManager } from '../lifecycle/manager.ts';

export type ChurnReason = 'idle' | 'drained' | 'died' | 'deleted' | 'shutdown';

/**
 * The pool's Prometheus metrics, per function. Each node (gateway or worker process) has its own
 * registry; `GET /metrics` serves the gateway's.
 */
export class PoolMetrics {
  readonly registry = new Registry();
  readonly warmHits: Counter<'function'>;
  readonly coldStarts: Counter<'function'>;
  readonly rejected: Counter<'function' | 'reason'>;
  readonly leaseWait: Histogram<'function' | 'start'>;
  readonly created: Counter<'function' | 'cause'>;
  readonly removed: Counter<'function' | 'reason'>;

  constructor(manager: CompositeManager) {
    const registers = [this.registry];
    this.warmHits = new Counter({
      name: 'ebcc_pool_warm_hits_total',
      help: 'Invocations that got an instance that was already running',
      labelNames: ['function'],
      registers,
    });
    this.coldStarts = new Counter({
      name: 'ebcc_pool_cold_starts_total',
      help: 'Invocations that had to wait for a new instance to be created and started',
      labelNames: ['function'],
      registers,
    });
    this.rejected = new Counter({
      name: 'ebcc_pool_rejected_total',
      help: 'Invocations refused by the pool: exhausted (429) or Redis unavailable (503)',
      labelNames: ['function', 'reason'],
      registers,
    });
    this.leaseWait = new Histogram({
      name: 'ebcc_pool_lease_wait_seconds',
      help: 'Time from asking the pool for an instance to holding its lease (cold starts included)',
      labelNames: ['function', 'start'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    });
    this.created = new Counter({
      name: 'ebcc_pool_instances_created_total',
      help: 'Pool instances created: for an invocation (cold) or by pool upkeep (warm)',
      labelNames: ['function', 'cause'],
      registers,
    });
    this.removed = new Counter({
      name: 'ebcc_pool_instances_removed_total',
      help: 'Pool instances removed: idle, drained (old version), died, function deleted, shutdown',
      labelNames: ['function', 'reason'],
      registers,
    });
    new Gauge({
      name: 'ebcc_pool_instances',
      help: 'Pool instances on this node, by state (busy: serving an invocation)',
      labelNames: ['function', 'state'],
      registers,
      collect() {
        this.reset();
        for (const i of manager.live.values()) {
          if (i.managedBy !== 'pool') continue;
          const state =
            i.status === 'running'
              ? i.inflight > 0
                ? 'busy'
                : 'idle'
              : i.status === 'stopped'
                ? 'stopped'
                : 'starting';
          this.inc({ function: i.functionName, state });
        }
      },
    });
  }

  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
