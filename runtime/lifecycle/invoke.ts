import { eq } from 'drizzle-orm';
import { invocations } from '../../db/schema.ts';
import type { AnchorRequest, StageReply } from '../anchor/types.ts';
import { InvocationBatch, type GroupCommitter, type Write } from '../artifacts/group-commit.ts';
import { newId } from '../ids.ts';
import { Problem } from '../problem.ts';
import { StageError, type StageOutcome } from '../stages/dispatcher.ts';
import type { LiveInstance } from './instance.ts';

export interface InvocationMeta {
  trigger: 'http' | 'queue' | 'cron' | 'batch';
  start: 'cold' | 'warm';
  /** Time spent getting an instance (lease wait, or create and start on a cold start). */
  acquireMs: number;
  /**
   * A write committed in the same transaction as the invocation record (a queued item's result), so
   * that the two are durable together or not at all.
   */
  alsoCommit?: (result: Omit<InvocationResult, 'executions'>) => Write;
}

export interface InvocationResult {
  invocationId: string;
  status: number;
  headers: [string, string][];
  body: Uint8Array;
  /** Set when the anchor did not produce a Response. */
  problem?: Problem;
  executions: { stage: string; eid: number; seq: number; executionId: string }[];
  /** Stage calls the dispatcher refused or failed (the anchor saw them as errors). */
  stageErrors: { stage: string; code: string; status: number; message: string }[];
}

const round = (ms: number) => +ms.toFixed(3);

/**
 * One invocation of a running instance: the anchor handles the request, every stage call it makes goes
 * through the instance's stage dispatcher, and the result is returned only once every artifact of it,
 * and the invocation record, are durable.
 */
export async function invokeInstance(
  committer: GroupCommitter,
  instance: LiveInstance,
  request: AnchorRequest,
  meta: InvocationMeta,
): Promise<InvocationResult> {
  const invocationId = newId('inv');
  const startedAt = Date.now();
  const t0 = performance.now();
  const outcomes: StageOutcome[] = [];
  const stageErrors: InvocationResult['stageErrors'] = [];
  const batch = new InvocationBatch(committer);
  const durables: Promise<void>[] = [];
  instance.lastUsedAt = Date.now();
  try {
    const { outcome, finished } = await instance.anchor!.invoke(request, {
      stage: async (stage, body, options): Promise<StageReply> => {
        try {
          const result = await instance.stages.invoke(invocationId, stage, body, { ...options, batch });
          outcomes.push(result);
          durables.push(result.durable);
          return {
            ok: true,
            stage,
            eid: result.eid,
            seq: result.seq,
            executionId: result.executionId,
            body: result.response,
          };
        } catch (error) {
          if (!(error instanceof StageError)) throw error;
          stageErrors.push({ stage, code: error.code, status: error.status, message: error.message });
          const failed = (error as StageError & { outcome?: StageOutcome }).outcome;
          if (failed) {
            outcomes.push(failed);
            durables.push(failed.durable);
          }
          return {
            ok: false,
            code: error.code,
            status: error.status,
            message: error.message,
            eid: error.eid,
          };
        }
      },
    });
    const anchorMs = performance.now() - t0;
    let result: Omit<InvocationResult, 'invocationId' | 'executions' | 'stageErrors'>;
    let errorText: string | null = null;
    if (outcome.kind === 'response') {
      const { status, headers, body } = outcome.response;
      result = { status, headers, body };
    } else {
      const [status, slug, title] =
        outcome.kind === 'timeout'
          ? ([504, 'anchor-timeout', 'Anchor timed out'] as const)
          : outcome.kind === 'crashed'
            ? ([502, 'anchor-crashed', 'Anchor crashed'] as const)
            : ([502, 'anchor-error', 'Anchor failed'] as const);
      errorText = outcome.message;
      const problem = new Problem(status, slug, title, outcome.message, { invocationId });
      result = { status, headers: [], body: new Uint8Array(0), problem };
    }
    const summary = await Promise.race([finished, Promise.resolve(undefined)]);
    const record = {
      id: invocationId,
      tenantId: instance.tenantId,
      functionId: instance.functionId,
      versionId: instance.version.row.id,
      cid: instance.cid,
      trigger: meta.trigger,
      start: meta.start,
      status: errorText ? ('error' as const) : ('ok' as const),
      httpStatus: result.status,
      error: errorText,
      console: null as string | null,
      timings: { acquire: round(meta.acquireMs), anchor: round(anchorMs) } as Record<string, number>,
      startedAt,
      finishedAt: Date.now(),
    };
    const consoleText = (lines: { level: string; text: string }[], truncated: boolean) =>
      lines.map((l) => `[${l.level}] ${l.text}`).join('\n') + (truncated ? '\n[ebcc] console truncated' : '');
    if (summary) record.console = consoleText(summary.console, summary.consoleTruncated);
    const also = meta.alsoCommit?.({ invocationId, ...result, stageErrors });
    await Promise.all([
      ...durables,
      batch.commit(async (tx) => {
        await tx.insert(invocations).values(record);
        if (also) await also(tx);
      }),
    ]);
    // Work the anchor left running (ctx.waitUntil) may still log; record that when it is done.
    if (!summary) {
      void finished.then(async (late) => {
        await committer.submit((tx) =>
          tx
            .update(invocations)
            .set({
              console: consoleText(late.console, late.consoleTruncated),
              error: late.waitUntilErrors.length
                ? `waitUntil failed: ${late.waitUntilErrors.join('; ')}`
                : record.error,
            })
            .where(eq(invocations.id, invocationId)),
        );
      });
    }
    return {
      invocationId,
      ...result,
      stageErrors,
      executions: outcomes.map((o) => ({
        stage: o.stage,
        eid: o.eid,
        seq: o.seq,
        executionId: o.executionId,
      })),
    };
  } finally {
    instance.lastUsedAt = Date.now();
  }
}
