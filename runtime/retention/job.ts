import { Queue, QueueEvents, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import type { Db } from '../../db/client.ts';
import type { Logger } from '../log.ts';
import { sweepExpired, type SweepResult } from './sweep.ts';

export const RETENTION_QUEUE = 'ebcc-retention';
export const RETENTION_SCHEDULER = 'retention-sweep';

export interface RetentionOptions {
  db: Db;
  redisUrl: string;
  /** How often the repeatable job runs. */
  intervalMs: number;
  logger: Logger;
  /** The clock the sweep judges expiry by (tests inject one); default `Date.now`. */
  clock?: () => number;
  batchSize?: number;
  /** Queue name prefix; tests give each gateway its own. */
  prefix?: string;
  /** The installation's retention queue (default: the shared name, for a Redis of one installation). */
  queue?: string;
}

/**
 * The retention sweep as a BullMQ repeatable job: every gateway registers the same job scheduler (an
 * upsert, so there is one schedule however many gateways run) and runs a worker, so exactly one of
 * them sweeps each time. A gateway starts and serves without Redis; the schedule is registered once
 * Redis answers.
 */
export class RetentionService {
  private readonly connection: Redis;
  private readonly queue: Queue;
  private readonly worker: Worker;
  private events: QueueEvents | undefined;
  private eventsConnection: Redis | undefined;
  /** Resolves once the schedule is registered (or rejects if that failed). */
  readonly scheduled: Promise<void>;

  constructor(private readonly options: RetentionOptions) {
    const { logger } = options;
    this.connection = new Redis(options.redisUrl, { maxRetriesPerRequest: null, lazyConnect: true });
    this.connection.on('error', (error) => logger.debug({ err: error }, 'retention redis'));
    const common = { connection: this.connection, ...(options.prefix ? { prefix: options.prefix } : {}) };
    this.queue = new Queue(options.queue ?? RETENTION_QUEUE, common);
    this.queue.on('error', (error) => logger.debug({ err: error }, 'retention queue'));
    this.worker = new Worker(
      options.queue ?? RETENTION_QUEUE,
      async () => {
        const result = await sweepExpired(options.db, {
          now: (options.clock ?? Date.now)(),
          batchSize: options.batchSize,
        });
        if (result.invocations || result.chains) logger.info({ retention: result }, 'retention sweep');
        return result;
      },
      { ...common, concurrency: 1 },
    );
    this.worker.on('error', (error) => logger.debug({ err: error }, 'retention worker'));
    this.worker.on('failed', (_job, error) => logger.warn({ err: error }, 'retention sweep failed'));
    this.scheduled = this.queue
      .upsertJobScheduler(RETENTION_SCHEDULER, { every: options.intervalMs }, { name: 'sweep' })
      .then(() => undefined);
    this.scheduled.catch((error: Error) =>
      logger.warn({ err: error.message }, 'retention: could not register the sweep schedule'),
    );
  }

  /** The registered schedules (for `readyz`-style checks and tests). */
  schedulers() {
    return this.queue.getJobSchedulers();
  }

  /** Queues one sweep now and waits for a worker to finish it. */
  async runNow(timeoutMs = 30_000): Promise<SweepResult> {
    this.eventsConnection ??= this.connection.duplicate();
    this.events ??= new QueueEvents(this.options.queue ?? RETENTION_QUEUE, {
      connection: this.eventsConnection,
      ...(this.options.prefix ? { prefix: this.options.prefix } : {}),
    });
    await this.events.waitUntilReady();
    const job = await this.queue.add('sweep', {}, { removeOnComplete: 100, removeOnFail: 100 });
    return (await job.waitUntilFinished(this.events, timeoutMs)) as SweepResult;
  }

  async close(): Promise<void> {
    // With Redis gone these could wait for ever: give them a moment, then drop the connections.
    if (this.connection.status !== 'ready') {
      this.connection.disconnect();
      this.eventsConnection?.disconnect();
    }
    const closing = Promise.allSettled([this.worker.close(), this.queue.close(), this.events?.close()]);
    await Promise.race([closing, new Promise((resolve) => setTimeout(resolve, 2_000).unref())]);
    this.connection.disconnect();
    this.eventsConnection?.disconnect();
  }
}
