import { Queue, Worker } from 'bullmq';
import type { RunningRole, WorkerContext, WorkerRole } from '../queues/registry.ts';
import { NODE_STALE_MS, NODES_KEY, QUEUE_PREFIX } from './upkeep.ts';

const JANITOR_QUEUE = 'pool-janitor';

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
    await context.node();
    const connection = context.connection();
    const queue = new Queue(JANITOR_QUEUE, { connection, prefix: QUEUE_PREFIX });
    queue.on('error', () => undefined);
    await queue.upsertJobScheduler(
      'janitor',
      { every: 30_000 },
      { name: 'janitor', opts: { removeOnComplete: true, removeOnFail: 20 } },
    );
    const worker = new Worker(
      JANITOR_QUEUE,
      async () => {
        const stale = await connection.zrangebyscore(NODES_KEY, '-inf', Date.now() - NODE_STALE_MS);
        for (const name of stale) {
          const dead = new Queue(name, { connection, prefix: QUEUE_PREFIX });
          try {
            await dead.obliterate({ force: true });
          } finally {
            await dead.close();
          }
          await connection.zrem(NODES_KEY, name);
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
