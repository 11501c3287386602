import type { RunningRole, WorkerContext, WorkerRole } from '../queues/registry.ts';
import { startBatchWorkers } from './worker.ts';

/**
 * `ebcc worker`'s batch role: the BullMQ workers of API batch items, of the queues functions declare
 * and of cron ticks, running each item on this worker's own pool node (see batch/worker.ts).
 */
export const batchRole: WorkerRole = {
  name: 'batch',
  description: 'batch items, queue-triggered jobs and cron ticks, run on this worker node',
  async start(context: WorkerContext): Promise<RunningRole> {
    const { config, logger } = context;
    const node = await context.node();
    const workers = await startBatchWorkers({
      db: node.database.db,
      committer: node.committer,
      pool: node.pool,
      logger,
      redisUrl: config.redisUrl,
      prefix: config.queuePrefix,
      namespace: node.namespace,
      concurrency: config.batchConcurrency,
      lockDurationMs: config.batchLockMs,
    });
    return { close: (deadline) => workers.close(deadline) };
  },
};
