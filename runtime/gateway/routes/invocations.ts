import { Hono } from 'hono';
import { blobBytes, invocationWithExecutions } from '../../../db/queries/invocations.ts';
import { exportInvocation, ExportError } from '../../evidence/export.ts';
import { notFound, Problem } from '../../problem.ts';
import type { AppEnv, GatewayDeps } from '../context.ts';
import { requireScope } from '../middleware/auth.ts';

const artifact = (
  digest: string | null,
  inline: Buffer | null,
  blob: string | null,
  blobs: Map<string, Buffer>,
) => {
  const bytes = inline ?? (blob ? blobs.get(blob) : undefined) ?? null;
  return {
    digest,
    size: bytes?.length ?? null,
    storage: inline ? 'inline' : blob ? 'blob' : 'none',
    base64: bytes?.toString('base64') ?? null,
  };
};

export function invocationRoutes(deps: GatewayDeps) {
  return new Hono<AppEnv>()
    .get('/:id/evidence', requireScope(deps.db, 'any'), async (c) => {
      await deps.committer.flush();
      let bundle;
      try {
        bundle = await exportInvocation(deps.db, c.req.param('id'), c.get('principal').tenantId);
      } catch (error) {
        if (error instanceof ExportError) throw new Problem(409, 'no-evidence', 'Conflict', error.message);
        throw error;
      }
      if (!bundle) throw notFound(`invocation ${c.req.param('id')}`);
      return c.json(bundle);
    })
    .get('/:id', requireScope(deps.db, 'any'), async (c) => {
      await deps.committer.flush();
      const found = await invocationWithExecutions(deps.db, c.req.param('id'));
      if (!found || found.invocation.tenantId !== c.get('principal').tenantId)
        throw notFound(`invocation ${c.req.param('id')}`);
      const blobs = await blobBytes(
        deps.db,
        found.executions.flatMap((x) =>
          [x.requestBlob, x.responseBlob].filter((d): d is string => Boolean(d)),
        ),
      );
      const { invocation } = found;
      return c.json({
        id: invocation.id,
        function: found.functionName,
        version: found.version,
        cid: invocation.cid,
        trigger: invocation.trigger,
        start: invocation.start,
        status: invocation.status,
        httpStatus: invocation.httpStatus,
        error: invocation.error,
        console: invocation.console,
        timings: invocation.timings,
        startedAt: invocation.startedAt,
        finishedAt: invocation.finishedAt,
        executions: found.executions.map((x) => ({
          id: x.id,
          stage: x.stage,
          backend: x.backend,
          eid: x.eid,
          seq: x.seq,
          measurement: x.measurement,
          exit: { reason: x.exitReason, code: x.exitCode },
          request: artifact(x.requestDigest, x.requestInline, x.requestBlob, blobs),
          response: artifact(x.responseDigest, x.responseInline, x.responseBlob, blobs),
          log: { digest: x.logDigest, text: x.log?.toString('utf8') ?? '' },
          metadata: x.metadata,
          evidence: x.evidence ? x.evidence.toString('base64') : null,
          createdAt: x.createdAt,
        })),
      });
    });
}
