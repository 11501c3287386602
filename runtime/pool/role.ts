import { Queue, Worker } from 'bullmq';
import type { RunningRole, WorkerContext, WorkerRole } from '../queues/registry.ts';
import { NODE_STALE_MS, QUEUE_PREFIX } from './upkeep.ts';

/**
 * `ebcc worker`'s pool role. The worker is a pool node of its own (the instances that queue work
 * runs on live in it, kept by its upkeep queue), and it runs the janitor that all workers share: one
 * repeatable job (exactly once per tick across workers) that forgets pool nodes not heard of for a
 * minute and obliterates their upkeep queues.
 */
export const poolRole: WorkerRole = {
  name: 'pool',
  description: 'pool upkeep of this worker node, and the janitor of dead nodes',
  async start(context: WorkerContext): Promise<RunningRole> {
    const { namespace, upkeep } = await context.node();
    // Redis answered at start: the node is registered before the worker says it is running.
    await Promise.race([upkeep.ready, new Promise((r) => setTimeout(r, 10_000).unref())]);
    const connection = context.connection();
    const queue = new Queue(namespace.janitorQueue, { connection, prefix: QUEUE_PREFIX });
    queue.on('error', () => undefined);
    await queue.upsertJobScheduler(
      'janitor',
      { every: 30_000 },
      { name: 'janitor', opts: { removeOnComplete: true, removeOnFail: 20 } },
    );
    const worker = new Worker(
      namespace.janitorQueue,
      async () => {
        const stale = await connection.zrangebyscore(
          namespace.poolNodesKey,
          '-inf',
          Date.now() - NODE_STALE_MS,
        );
        for (const name of stale) {
          const dead = new Queue(name, { connection, prefix: QUEUE_PREFIX });
          try {
            await dead.obliterate({ force: true });
          } finally {
            await dead.close();
          }
          await connection.zrem(namespace.poolNodesKey, name);
        }
        if (stale.length) context.logger.info({ nodes: stale }, 'pool janitor: forgot dead nodes');
        return { forgotten: stale.length };
      },
      { connection, prefix: QUEUE_PREFIX, concurrency: 1 },
    );
    worker.on('error', () => undefined);
    return {
      async close() {
        await worker.close();
        await queue.close();
      },
    };
  },
};
