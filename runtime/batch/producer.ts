import { Queue } from 'bullmq';
import type { Logger } from '../log.ts';
import { itemJob } from './queues.ts';
import { redisOptions } from './redis.ts';

const ENQUEUE_TIMEOUT_MS = 3_000;
const ENQUEUE_CHUNK = 1_000;

/**
 * The gateway's side of the batch queue. Items are recorded in libSQL before they are enqueued, so an
 * enqueue that fails (Redis down) loses nothing: the workers give Redis every unfinished item again.
 */
export class BatchProducer {
  private readonly queue: Queue;

  constructor(
    redisUrl: string,
    prefix: string,
    /** The installation's batch queue. */
    queueName: string,
    private readonly logger: Logger,
  ) {
    this.queue = new Queue(queueName, { connection: redisOptions(redisUrl, 'producer'), prefix });
    this.queue.on('error', (error) => logger.debug({ err: error.message }, 'batch queue'));
  }

  /** Enqueues one job per item id; false when Redis did not take them in time (they stay recorded). */
  async enqueue(itemIds: string[]): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('timed out')), ENQUEUE_TIMEOUT_MS);
    });
    try {
      await Promise.race([
        (async () => {
          for (let i = 0; i < itemIds.length; i += ENQUEUE_CHUNK)
            await this.queue.addBulk(itemIds.slice(i, i + ENQUEUE_CHUNK).map(itemJob));
        })(),
        timeout,
      ]);
      return true;
    } catch (error) {
      this.logger.warn(
        { err: (error as Error).message, items: itemIds.length },
        'items recorded but not enqueued; the workers will enqueue them when Redis answers',
      );
      return false;
    } finally {
      clearTimeout(timer);
    }
  }

  close(): Promise<void> {
    return this.queue.close();
  }
}
