import { Hono } from 'hono';
import { z } from 'zod';
import {
  batchById,
  batchCounts,
  batchItemsPage,
  deadItems,
  requeueDead,
  insertBatch,
  itemById,
  requeueItems,
  type BatchItemRow,
  type ItemStatus,
  type NewBatchItem,
} from '../../../db/queries/batches.ts';
import { findFunction, versionById } from '../../../db/queries/functions.ts';
import { blobBytes } from '../../../db/queries/invocations.ts';
import { BATCH_QUEUE, batchRetry } from '../../batch/queues.ts';
import { parseBatchBody } from '../../batch/submit.ts';
import { newId } from '../../ids.ts';
import { parseManifest } from '../../manifest/index.ts';
import { conflict, notFound } from '../../problem.ts';
import type { AppEnv, GatewayDeps } from '../context.ts';
import { requireScope } from '../middleware/auth.ts';
import { parseWith } from '../validate.ts';

const STATUSES = ['queued', 'succeeded', 'failed', 'dead'] as const;
const MAX_FAILURES_SHOWN = 100;

const submitQuery = z.object({
  path: z
    .string()
    .max(200)
    .regex(/^\/[A-Za-z0-9._~\-/]*$/, 'must be an absolute URL path of unreserved characters')
    .refine((p) => !p.split('/').includes('..'), 'must not contain ".." segments')
    .optional(),
});

const pageQuery = z.object({
  cursor: z.coerce.number().int().min(-1).default(-1),
  limit: z.coerce.number().int().min(1).max(1_000).default(100),
  status: z
    .string()
    .transform((s) => s.split(',').filter(Boolean))
    .pipe(z.array(z.enum(STATUSES)).min(1))
    .optional(),
});

const retryQuery = z.object({ include: z.enum(['failed']).optional() });

function itemView(item: BatchItemRow, blobs: Map<string, Buffer>) {
  const bytes = item.resultInline ?? (item.resultBlob ? blobs.get(item.resultBlob) : undefined);
  let result: unknown = null;
  if (bytes && /\bjson\b/i.test(item.resultType ?? '')) {
    try {
      result = JSON.parse(bytes.toString('utf8'));
    } catch {
      result = { base64: bytes.toString('base64'), type: item.resultType };
    }
  } else if (bytes) {
    result = { base64: bytes.toString('base64'), type: item.resultType };
  }
  return {
    id: item.id,
    seq: item.seq,
    status: item.status,
    attempts: item.attempts,
    httpStatus: item.httpStatus,
    invocationId: item.invocationId,
    ...(item.invocationId ? { evidence: `/v1/invocations/${item.invocationId}/evidence` } : {}),
    ...(item.status === 'succeeded' ? { result, resultDigest: item.resultDigest } : {}),
    ...(item.error ? { error: item.error } : {}),
    finishedAt: item.finishedAt,
  };
}

const deadQuery = z.object({
  cursor: z.string().max(64).default(''),
  limit: z.coerce.number().int().min(1).max(1_000).default(100),
});

/**
 * Per function: `POST /v1/functions/:name/batches` (one job per item, every item recorded in libSQL
 * first), and its dead-letter list, whatever brought the items (a batch, its queue, its cron), with a
 * one-call retry.
 */
export function batchSubmitRoutes(deps: GatewayDeps) {
  const owned = async (tenantId: string, name: string) => {
    const fn = await findFunction(deps.db, name);
    if (!fn || fn.tenantId !== tenantId) throw notFound(`function "${name}"`);
    return fn;
  };
  return new Hono<AppEnv>()
    .get('/:name/dead-letters', requireScope(deps.db, 'any'), async (c) => {
      const fn = await owned(c.get('principal').tenantId, c.req.param('name'));
      const query = parseWith(deadQuery, c.req.query());
      const rows = await deadItems(deps.db, fn.id, query.cursor, query.limit);
      return c.json({
        function: fn.name,
        items: rows.map((i) => ({
          id: i.id,
          batchId: i.batchId,
          source: i.source,
          queue: i.queue,
          attempts: i.attempts,
          error: i.error,
          input: i.input,
          invocationId: i.invocationId,
          finishedAt: i.finishedAt,
        })),
        nextCursor: rows.length === query.limit ? rows.at(-1)!.id : null,
      });
    })
    .post('/:name/dead-letters/retry', requireScope(deps.db, 'invoke'), async (c) => {
      const fn = await owned(c.get('principal').tenantId, c.req.param('name'));
      const ids = await requeueDead(deps.db, fn.id);
      const enqueued = ids.length ? await deps.batches.enqueue(ids) : true;
      return c.json({ requeued: ids.length, items: ids, enqueued });
    })
    .post('/:name/batches', requireScope(deps.db, 'invoke'), async (c) => {
      const name = c.req.param('name');
      const query = parseWith(submitQuery, c.req.query());
      const fn = await findFunction(deps.db, name);
      if (!fn || fn.tenantId !== c.get('principal').tenantId) throw notFound(`function "${name}"`);
      if (!fn.activeVersionId)
        throw conflict('no-active-version', `function "${name}" has no active version`);
      const version = await versionById(deps.db, fn.activeVersionId);
      if (!version) throw notFound(`the active version of "${name}"`);
      const manifest = parseManifest(version.manifest);
      const parsed = await parseBatchBody(c.req.raw);
      const batchId = newId('bat');
      const path = query.path ?? manifest.triggers.queue?.path ?? '/';
      const retry = batchRetry(manifest);
      const now = Date.now();
      const items: NewBatchItem[] = parsed.map((item, seq) => ({
        id: newId('itm'),
        batchId,
        seq,
        tenantId: fn.tenantId,
        functionId: fn.id,
        functionName: fn.name,
        versionId: version.id,
        path,
        retry,
        source: 'batch',
        queue: BATCH_QUEUE,
        status: item.refused ? 'failed' : 'queued',
        input: item.input,
        error: item.refused ?? null,
        finishedAt: item.refused ? now : null,
      }));
      await insertBatch(
        deps.db,
        {
          id: batchId,
          tenantId: fn.tenantId,
          functionId: fn.id,
          functionName: fn.name,
          versionId: version.id,
          path,
          total: items.length,
        },
        items,
      );
      const queued = items.filter((i) => i.status === 'queued').map((i) => i.id);
      const enqueued = queued.length ? await deps.batches.enqueue(queued) : true;
      c.header('Location', `/v1/batches/${batchId}`);
      return c.json(
        {
          id: batchId,
          function: fn.name,
          version: version.version,
          total: items.length,
          queued: queued.length,
          refused: items
            .filter((i) => i.status === 'failed')
            .map((i) => ({ item: i.id, seq: i.seq, error: i.error })),
          enqueued,
          ...(enqueued
            ? {}
            : { note: 'Redis did not answer: the items are recorded and will be enqueued when it does' }),
          status: `/v1/batches/${batchId}`,
        },
        202,
      );
    });
}

/** `/v1/batches/:id`: progress, failures and results; retries of dead (or failed) items. */
export function batchRoutes(deps: GatewayDeps) {
  const owned = async (tenantId: string, id: string) => {
    const batch = await batchById(deps.db, id);
    if (!batch || batch.tenantId !== tenantId) throw notFound(`batch ${id}`);
    return batch;
  };
  const requeue = async (batchId: string, statuses: ItemStatus[], itemId?: string) => {
    const ids = await requeueItems(deps.db, batchId, statuses, itemId);
    const enqueued = ids.length ? await deps.batches.enqueue(ids) : true;
    return { requeued: ids.length, items: ids, enqueued };
  };
  return new Hono<AppEnv>()
    .get('/:id', requireScope(deps.db, 'any'), async (c) => {
      const batch = await owned(c.get('principal').tenantId, c.req.param('id'));
      const query = parseWith(pageQuery, c.req.query());
      const [counts, failures, page] = await Promise.all([
        batchCounts(deps.db, batch.id),
        batchItemsPage(deps.db, batch.id, {
          after: -1,
          limit: MAX_FAILURES_SHOWN,
          statuses: ['failed', 'dead'],
        }),
        batchItemsPage(deps.db, batch.id, {
          after: query.cursor,
          limit: query.limit,
          ...(query.status ? { statuses: query.status } : {}),
        }),
      ]);
      const blobs = await blobBytes(
        deps.db,
        page.map((i) => i.resultBlob).filter((d): d is string => Boolean(d)),
      );
      const done = batch.total - counts.queued;
      return c.json({
        id: batch.id,
        function: batch.functionName,
        versionId: batch.versionId,
        path: batch.path,
        createdAt: batch.createdAt,
        total: batch.total,
        counts,
        done,
        percentDone: batch.total ? Math.floor((1000 * done) / batch.total) / 10 : 100,
        complete: counts.queued === 0,
        failures: failures.map((i) => ({
          item: i.id,
          seq: i.seq,
          status: i.status,
          attempts: i.attempts,
          error: i.error,
        })),
        items: page.map((i) => itemView(i, blobs)),
        nextCursor: page.length === query.limit ? page.at(-1)!.seq : null,
      });
    })
    .post('/:id/retry', requireScope(deps.db, 'invoke'), async (c) => {
      const batch = await owned(c.get('principal').tenantId, c.req.param('id'));
      const { include } = parseWith(retryQuery, c.req.query());
      return c.json(await requeue(batch.id, include ? ['dead', 'failed'] : ['dead']));
    })
    .post('/:id/items/:item/retry', requireScope(deps.db, 'invoke'), async (c) => {
      const batch = await owned(c.get('principal').tenantId, c.req.param('id'));
      const item = await itemById(deps.db, c.req.param('item'));
      if (!item || item.batchId !== batch.id)
        throw notFound(`item ${c.req.param('item')} of batch ${batch.id}`);
      if (item.status !== 'dead' && item.status !== 'failed')
        throw conflict(
          'not-retriable',
          `item ${item.id} is ${item.status}; only dead or failed items are retried`,
        );
      return c.json(await requeue(batch.id, ['dead', 'failed'], item.id));
    });
}
