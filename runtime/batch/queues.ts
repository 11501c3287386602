import { createHash } from 'node:crypto';
import type { JobsOptions } from 'bullmq';
import type { Manifest } from '../manifest/index.ts';

/**
 * The queue an API batch item is recorded under (`batch_items.queue`); in Redis it travels on the
 * installation's own batch queue (runtime/queues/namespace.ts), job data `{ itemId }`.
 */
export const BATCH_QUEUE = 'ebcc-batch';
/** The queue a cron tick's item is recorded under; the ticks travel on the installation's cron queue. */
export const CRON_QUEUE = 'ebcc-cron';

export type RetryPolicy = Manifest['triggers']['cron'][number]['retry'];

/** What a batch item runs under when its function declares no queue trigger (the manifest's defaults). */
export const DEFAULT_RETRY: RetryPolicy = { attempts: 3, backoff: { type: 'exponential', delayMs: 1_000 } };

/** The retry policy for API batch items of a version: its queue trigger's, else the default. */
export function batchRetry(manifest: Manifest): RetryPolicy {
  return manifest.triggers.queue?.retry ?? DEFAULT_RETRY;
}

/** Delay before attempt `attempt + 1`, after `attempt` failed attempts. */
export function backoffMs(retry: RetryPolicy, attempt: number): number {
  const { type, delayMs } = retry.backoff;
  return type === 'fixed' ? delayMs : delayMs * 2 ** Math.max(0, attempt - 1);
}

/**
 * Jobs leave Redis once they settle: libSQL holds each item's outcome, and a job id is free again for
 * a retry of a dead item.
 */
export const ITEM_JOB_OPTIONS: JobsOptions = { removeOnComplete: true, removeOnFail: true };

export function itemJob(itemId: string) {
  return { name: 'item', data: { itemId }, opts: { ...ITEM_JOB_OPTIONS, jobId: itemId } };
}

/**
 * The item id of a job EBCC did not enqueue itself (a producer's job on a function queue, a cron
 * tick): derived from the queue and the job id, so that a job run twice maps to one item.
 */
export function derivedItemId(queue: string, jobId: string): string {
  return `itm_${createHash('sha256').update(`${queue}\0${jobId}`).digest('hex').slice(0, 32)}`;
}

/** The job scheduler id of a function's cron trigger; the version makes a redeploy replace it. */
export function cronSchedulerId(functionName: string, index: number, versionId: string): string {
  return `${functionName}.${index}.${versionId}`;
}
